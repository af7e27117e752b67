package tasks

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// IAM actions a connection test verifies.
const (
	iamListSecrets    = "secretsmanager:ListSecrets"
	iamGetSecretValue = "secretsmanager:GetSecretValue"
)

// probePrefix starts the random name a connection test reads.
const probePrefix = "smd-connection-test-"

// testConnection checks that the connector's identity can list secrets
// (ListSecrets, one result, under the prefix) and read them (GetSecretValue
// of a random name under the prefix: ResourceNotFound proves the permission,
// as AWS checks permissions before existence). Each check is reported.
//
// The outcome is OK when both pass; ACCESS_DENIED naming the failed IAM
// actions when a permission is missing; otherwise the first failure that
// is not about a permission (CREDENTIALS, UNAVAILABLE, ...). The checks are
// in the result in every case.
func (x *execution) testConnection(ctx context.Context) (*delegatev1.SecretResult, *Error) {
	sm, verr := x.api(ctx)
	if verr != nil {
		return nil, verr
	}
	res := &delegatev1.SecretResult{}
	var denied []string
	var other *Error
	record := func(action string, err error, okMsg string) {
		chk := &delegatev1.PermissionCheck{Action: action, Ok: err == nil, Message: okMsg}
		if err != nil {
			e := x.fail(ctx, "", err)
			chk.Message = e.Msg
			switch {
			case e.Code == delegatev1.Code_ACCESS_DENIED:
				denied = append(denied, action)
			case other == nil:
				other = e
			}
		}
		res.Checks = append(res.Checks, chk)
	}

	in := &secretsmanager.ListSecretsInput{MaxResults: aws.Int32(1)}
	if x.prefix != "" {
		in.Filters = []types.Filter{{Key: types.FilterNameStringTypeName, Values: []string{string(x.prefix) + "/"}}}
	}
	_, err := sm.ListSecrets(ctx, in)
	record(iamListSecrets, err, "secrets can be listed")

	probe := x.prefix.Apply(probePrefix + randomHex(8))
	_, err = sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(probe)})
	var nf *types.ResourceNotFoundException
	if errors.As(err, &nf) {
		err = nil
	}
	record(iamGetSecretValue, err, "secret values can be read")

	switch {
	case len(denied) > 0:
		return res, newError(delegatev1.Code_ACCESS_DENIED,
			"the connector's identity lacks %s", strings.Join(denied, ", "))
	case other != nil:
		return res, other
	}
	return res, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
