package tasks

import (
	"context"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"
	"google.golang.org/protobuf/types/known/timestamppb"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// get reads a value (by VersionId or VersionStage, default AWSCURRENT). A
// name#key reference returns only that JSON key (see ExtractJSON).
func (x *execution) get(ctx context.Context, op *delegatev1.GetSecretOp) (*delegatev1.SecretResult, *Error) {
	in, verr := x.getInput(op)
	if verr != nil {
		return nil, verr
	}
	name, ref, hasRef := SplitRef(op.GetName())
	sm, verr := x.api(ctx)
	if verr != nil {
		return nil, verr
	}
	out, err := sm.GetSecretValue(ctx, in)
	if err != nil {
		return nil, x.fail(ctx, name, err)
	}
	if out.SecretString != nil {
		x.secrets = append(x.secrets, *out.SecretString)
	}
	res := &delegatev1.SecretResult{
		Name:          name,
		Arn:           aws.ToString(out.ARN),
		VersionId:     aws.ToString(out.VersionId),
		VersionStages: out.VersionStages,
	}
	switch {
	case hasRef:
		if out.SecretString == nil {
			return nil, invalid("name", "a JSON key was given but the secret's value is binary")
		}
		v, jerr := ExtractJSON([]byte(*out.SecretString), ref)
		if jerr != nil {
			if jerr.Code == delegatev1.Code_NOT_FOUND {
				jerr.Msg = "secret " + quote(name) + ": " + jerr.Msg
			}
			return nil, jerr
		}
		res.Value = &delegatev1.SecretValue{Value: &delegatev1.SecretValue_StringValue{StringValue: v}}
	case out.SecretString != nil:
		res.Value = &delegatev1.SecretValue{Value: &delegatev1.SecretValue_StringValue{StringValue: *out.SecretString}}
	default:
		res.Value = &delegatev1.SecretValue{Value: &delegatev1.SecretValue_BinaryValue{BinaryValue: out.SecretBinary}}
	}
	return res, nil
}

// getInput validates a get (name, JSON reference, version) and builds
// its input.
func (x *execution) getInput(op *delegatev1.GetSecretOp) (*secretsmanager.GetSecretValueInput, *Error) {
	name, ref, hasRef := SplitRef(op.GetName())
	full, verr := fullName(x.prefix, name)
	if verr != nil {
		return nil, verr
	}
	if verr := checkVersion(op.GetVersionId(), op.GetVersionStage()); verr != nil {
		return nil, verr
	}
	if hasRef {
		if verr := CheckJSONRef(ref); verr != nil {
			return nil, verr
		}
	}
	in := &secretsmanager.GetSecretValueInput{SecretId: aws.String(full)}
	if v := op.GetVersionId(); v != "" {
		in.VersionId = aws.String(v)
	}
	if v := op.GetVersionStage(); v != "" {
		in.VersionStage = aws.String(v)
	}
	return in, nil
}

func quote(s string) string { return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"` }

// list pages through the secrets under the connector's prefix (and the
// op's name_prefix below it) with a Filters "name" prefix filter. Names come
// back with the connector's prefix stripped. AWS's name filter is not case
// sensitive, so entries outside the exact prefix are dropped here.
func (x *execution) list(ctx context.Context, op *delegatev1.ListSecretsOp) (*delegatev1.SecretResult, *Error) {
	in, filter, verr := x.listInput(op)
	if verr != nil {
		return nil, verr
	}
	sm, verr := x.api(ctx)
	if verr != nil {
		return nil, verr
	}
	out, err := sm.ListSecrets(ctx, in)
	if err != nil {
		return nil, x.fail(ctx, "", err)
	}
	res := &delegatev1.SecretResult{NextToken: aws.ToString(out.NextToken)}
	for _, s := range out.SecretList {
		full := aws.ToString(s.Name)
		if !strings.HasPrefix(full, filter) {
			continue
		}
		res.Secrets = append(res.Secrets, &delegatev1.SecretMeta{
			Name:            x.prefix.Strip(full),
			Arn:             aws.ToString(s.ARN),
			Description:     aws.ToString(s.Description),
			CreatedDate:     ts(s.CreatedDate),
			LastChangedDate: ts(s.LastChangedDate),
			DeletedDate:     ts(s.DeletedDate),
			Tags:            tagMap(s.Tags),
			KmsKeyId:        aws.ToString(s.KmsKeyId),
			VersionStages:   stageMap(s.SecretVersionsToStages),
		})
	}
	return res, nil
}

// listInput validates a list and builds its input; filter is the full
// name prefix the names listed must start with.
func (x *execution) listInput(op *delegatev1.ListSecretsOp) (*secretsmanager.ListSecretsInput, string, *Error) {
	np := op.GetNamePrefix()
	if np != "" && !validName(np) {
		return nil, "", invalid("name_prefix", ruleName)
	}
	filter := np
	if x.prefix != "" {
		filter = string(x.prefix) + "/" + np
	}
	if len(filter) > MaxNameLen {
		return nil, "", invalid("name_prefix", ruleName)
	}
	in := &secretsmanager.ListSecretsInput{}
	if m := op.GetMaxResults(); m != 0 {
		if m < 1 || m > MaxListResults {
			return nil, "", invalid("max_results", "must be 1-100")
		}
		in.MaxResults = aws.Int32(m)
	}
	if t := op.GetNextToken(); t != "" {
		in.NextToken = aws.String(t)
	}
	if op.GetIncludePlannedDeletion() {
		in.IncludePlannedDeletion = aws.Bool(true)
	}
	if filter != "" {
		in.Filters = []types.Filter{{Key: types.FilterNameStringTypeName, Values: []string{filter}}}
	}
	return in, filter, nil
}

// describe returns a secret's metadata, never its value.
func (x *execution) describe(ctx context.Context, op *delegatev1.DescribeSecretOp) (*delegatev1.SecretResult, *Error) {
	full, verr := fullName(x.prefix, op.GetName())
	if verr != nil {
		return nil, verr
	}
	sm, verr := x.api(ctx)
	if verr != nil {
		return nil, verr
	}
	d, err := sm.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String(full)})
	if err != nil {
		return nil, x.fail(ctx, op.GetName(), err)
	}
	meta := &delegatev1.SecretMeta{
		Name:            x.prefix.Strip(aws.ToString(d.Name)),
		Arn:             aws.ToString(d.ARN),
		Description:     aws.ToString(d.Description),
		CreatedDate:     ts(d.CreatedDate),
		LastChangedDate: ts(d.LastChangedDate),
		DeletedDate:     ts(d.DeletedDate),
		Tags:            tagMap(d.Tags),
		KmsKeyId:        aws.ToString(d.KmsKeyId),
		VersionStages:   stageMap(d.VersionIdsToStages),
	}
	return &delegatev1.SecretResult{Name: meta.Name, Arn: meta.Arn, Meta: meta}, nil
}

// versions lists a secret's versions (ListSecretVersionIds), one page:
// ids, staging labels and dates, never values.
func (x *execution) versions(ctx context.Context, op *delegatev1.ListSecretVersionsOp) (*delegatev1.SecretResult, *Error) {
	in, verr := x.versionsInput(op)
	if verr != nil {
		return nil, verr
	}
	sm, verr := x.api(ctx)
	if verr != nil {
		return nil, verr
	}
	out, err := sm.ListSecretVersionIds(ctx, in)
	if err != nil {
		return nil, x.fail(ctx, op.GetName(), err)
	}
	res := &delegatev1.SecretResult{
		Name:      x.prefix.Strip(aws.ToString(out.Name)),
		Arn:       aws.ToString(out.ARN),
		NextToken: aws.ToString(out.NextToken),
	}
	for _, v := range out.Versions {
		res.Versions = append(res.Versions, &delegatev1.SecretVersion{
			VersionId:        aws.ToString(v.VersionId),
			Stages:           v.VersionStages,
			CreatedDate:      ts(v.CreatedDate),
			LastAccessedDate: ts(v.LastAccessedDate),
		})
	}
	return res, nil
}

// versionsInput validates a versions listing and builds its input.
func (x *execution) versionsInput(op *delegatev1.ListSecretVersionsOp) (*secretsmanager.ListSecretVersionIdsInput, *Error) {
	full, verr := fullName(x.prefix, op.GetName())
	if verr != nil {
		return nil, verr
	}
	in := &secretsmanager.ListSecretVersionIdsInput{SecretId: aws.String(full)}
	if m := op.GetMaxResults(); m != 0 {
		if m < 1 || m > MaxListResults {
			return nil, invalid("max_results", "must be 1-100")
		}
		in.MaxResults = aws.Int32(m)
	}
	if t := op.GetNextToken(); t != "" {
		in.NextToken = aws.String(t)
	}
	if op.GetIncludeDeprecated() {
		in.IncludeDeprecated = aws.Bool(true)
	}
	return in, nil
}

func ts(t *time.Time) *timestamppb.Timestamp {
	if t == nil || t.IsZero() {
		return nil
	}
	return timestamppb.New(*t)
}

func tagMap(tags []types.Tag) map[string]string {
	if len(tags) == 0 {
		return nil
	}
	m := make(map[string]string, len(tags))
	for _, t := range tags {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
}

func stageMap(v map[string][]string) map[string]*delegatev1.VersionStages {
	if len(v) == 0 {
		return nil
	}
	m := make(map[string]*delegatev1.VersionStages, len(v))
	for id, stages := range v {
		m[id] = &delegatev1.VersionStages{Stages: stages}
	}
	return m
}
