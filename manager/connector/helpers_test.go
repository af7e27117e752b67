package connector_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/smdelegate/smdelegate/internal/config"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

const testRoleARN = "arn:aws:iam::123456789012:role/smd"

// validConnector returns a normalized, valid connector of type t.
func validConnector(t delegatev1.CredentialType) *delegatev1.Connector {
	c := &delegatev1.Connector{
		Identifier:     "aws_prod",
		Name:           "AWS prod",
		Scope:          &delegatev1.Scope{Account: "acct"},
		CredentialType: t,
		Region:         "us-east-1",
	}
	switch t {
	case delegatev1.CredentialType_ACCESS_KEY:
		c.AccessKeyId = "AKIAIOSFODNN7EXAMPLE"
		c.SecretAccessKey = "builtin:aws_prod"
	case delegatev1.CredentialType_ASSUME_ROLE:
		c.RoleArn = testRoleARN
	case delegatev1.CredentialType_OIDC:
		c.RoleArn = testRoleARN
		c.OidcConnectivity = delegatev1.OIDCConnectivity_DELEGATE
	}
	return c
}

// fieldErrors flattens a joined error into its *config.FieldError parts,
// failing the test on any part of another type.
func fieldErrors(tb testing.TB, err error) []*config.FieldError {
	tb.Helper()
	if err == nil {
		return nil
	}
	var parts []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		parts = j.Unwrap()
	} else {
		parts = []error{err}
	}
	out := make([]*config.FieldError, 0, len(parts))
	for _, p := range parts {
		var fe *config.FieldError
		if !errors.As(p, &fe) {
			tb.Fatalf("error %q (%T) is not a *config.FieldError", p, p)
		}
		out = append(out, fe)
	}
	return out
}

// findField returns the first error for field whose rule contains rule.
func findField(errs []*config.FieldError, field, rule string) *config.FieldError {
	for _, fe := range errs {
		if fe.Field == field && strings.Contains(fe.Rule, rule) {
			return fe
		}
	}
	return nil
}
