package tasks

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// Names of the AWS APIs that make changes, as SecretResult.action reports.
const (
	actionCreate  = "CreateSecret"
	actionUpdate  = "UpdateSecret"
	actionPut     = "PutSecretValue"
	actionDelete  = "DeleteSecret"
	actionRestore = "RestoreSecret"
)

// createInput validates a create (or the create half of an upsert) and
// builds its input. The token makes a re-run of the task idempotent. The
// secret always gets the managed-by tag; a tag of that key with another
// value is refused. With generated the value must be nil, and the caller
// sets it once it has been generated.
func (x *execution) createInput(name string, value *delegatev1.SecretValue, generated bool, desc string, tags map[string]string, kms string) (*secretsmanager.CreateSecretInput, *Error) {
	full, err := fullName(x.prefix, name)
	if err != nil {
		return nil, err
	}
	var str *string
	var bin []byte
	if generated {
		if value.GetValue() != nil {
			return nil, invalid("value", "must be empty when the value is generated")
		}
	} else if str, bin, err = secretValue(value, true); err != nil {
		return nil, err
	}
	if err := checkDescription(desc); err != nil {
		return nil, err
	}
	if kms == "" {
		kms = x.conn.GetKmsKeyId()
	}
	if err := checkKMSKeyID(kms); err != nil {
		return nil, err
	}
	all := make(map[string]string, len(tags)+1)
	for k, v := range tags {
		all[k] = v
	}
	key := x.managedKey()
	if v, ok := all[key]; ok && v != ManagedByValue {
		return nil, invalid(fmt.Sprintf("tags[%q]", key), fmt.Sprintf("is set by smdelegate to %q on every secret it creates", ManagedByValue))
	}
	all[key] = ManagedByValue
	if err := checkTags(all); err != nil {
		return nil, err
	}
	tok, err := x.token()
	if err != nil {
		return nil, err
	}
	in := &secretsmanager.CreateSecretInput{
		Name:               aws.String(full),
		ClientRequestToken: aws.String(tok),
		SecretString:       str,
		SecretBinary:       bin,
		Tags:               sortedTags(all),
	}
	if desc != "" {
		in.Description = aws.String(desc)
	}
	if kms != "" {
		in.KmsKeyId = aws.String(kms)
	}
	return in, nil
}

func sortedTags(m map[string]string) []types.Tag {
	if len(m) == 0 {
		return nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]types.Tag, 0, len(keys))
	for _, k := range keys {
		out = append(out, types.Tag{Key: aws.String(k), Value: aws.String(m[k])})
	}
	return out
}

// create runs CreateSecret, first GetRandomPassword when the op asks for a
// generated value. A ResourceExists whose secret already holds the version
// this task's token names is this task's own earlier run (a lease lost
// after AWS created the secret) and is success; a generated value is then
// the earlier run's, read back with GetSecretValue when it is to be
// returned.
func (x *execution) create(ctx context.Context, op *delegatev1.CreateSecretOp) (*delegatev1.SecretResult, *Error) {
	gen := op.GetGenerate()
	in, pwIn, verr := x.createOpInput(op)
	if verr != nil {
		return nil, verr
	}
	sm, verr := x.api(ctx)
	if verr != nil {
		return nil, verr
	}
	if gen != nil {
		pw, err := sm.GetRandomPassword(ctx, pwIn)
		if err != nil {
			return nil, x.fail(ctx, op.GetName(), err)
		}
		in.SecretString = pw.RandomPassword
		x.secrets = append(x.secrets, aws.ToString(pw.RandomPassword))
	}
	out, err := sm.CreateSecret(ctx, in)
	if err != nil {
		var exists *types.ResourceExistsException
		if errors.As(err, &exists) {
			if res, ok := x.ownVersion(ctx, *in.Name, *in.ClientRequestToken); ok {
				x.log.Debug().Msg("create found its own version from an earlier run")
				res.Action, res.Created = actionCreate, true
				if op.GetReturnValue() {
					// This run's password is not the one AWS kept.
					v, verr := x.readVersion(ctx, op.GetName(), *in.Name, *in.ClientRequestToken)
					if verr != nil {
						return nil, verr
					}
					res.Value = v
				}
				return res, nil
			}
		}
		return nil, x.fail(ctx, op.GetName(), err)
	}
	res := &delegatev1.SecretResult{
		Name:      x.prefix.Strip(aws.ToString(out.Name)),
		Arn:       aws.ToString(out.ARN),
		VersionId: aws.ToString(out.VersionId),
		Created:   true,
		Action:    actionCreate,
	}
	if op.GetReturnValue() {
		res.Value = &delegatev1.SecretValue{Value: &delegatev1.SecretValue_StringValue{StringValue: aws.ToString(in.SecretString)}}
	}
	return res, nil
}

// createOpInput validates a create and builds its inputs: CreateSecret's,
// and GetRandomPassword's when the value is generated (else nil).
func (x *execution) createOpInput(op *delegatev1.CreateSecretOp) (*secretsmanager.CreateSecretInput, *secretsmanager.GetRandomPasswordInput, *Error) {
	gen := op.GetGenerate()
	if op.GetReturnValue() && gen == nil {
		return nil, nil, invalid("return_value", "only with generate: a value that was given is not returned")
	}
	in, verr := x.createInput(op.GetName(), op.GetValue(), gen != nil, op.GetDescription(), op.GetTags(), op.GetKmsKeyId())
	if verr != nil {
		return nil, nil, verr
	}
	if gen == nil {
		return in, nil, nil
	}
	pwIn, verr := passwordInput(gen)
	if verr != nil {
		return nil, nil, verr
	}
	return in, pwIn, nil
}

// passwordInput validates a GeneratePassword and builds GetRandomPassword's
// input; zero values are left to AWS's defaults.
func passwordInput(g *delegatev1.GeneratePassword) (*secretsmanager.GetRandomPasswordInput, *Error) {
	in := &secretsmanager.GetRandomPasswordInput{}
	if n := g.GetLength(); n != 0 {
		if n < 1 || n > MaxPasswordLength {
			return nil, invalid("generate.length", fmt.Sprintf("must be 1-%d", MaxPasswordLength))
		}
		in.PasswordLength = aws.Int64(int64(n))
	}
	if ex := g.GetExcludeCharacters(); ex != "" {
		if len(ex) > MaxPasswordLength {
			return nil, invalid("generate.exclude_characters", fmt.Sprintf("must be at most %d characters", MaxPasswordLength))
		}
		in.ExcludeCharacters = aws.String(ex)
	}
	set := func(b bool) *bool {
		if b {
			return aws.Bool(true)
		}
		return nil
	}
	in.ExcludeNumbers = set(g.GetExcludeNumbers())
	in.ExcludePunctuation = set(g.GetExcludePunctuation())
	in.ExcludeUppercase = set(g.GetExcludeUppercase())
	in.ExcludeLowercase = set(g.GetExcludeLowercase())
	in.IncludeSpace = set(g.GetIncludeSpace())
	if g.RequireEachIncludedType != nil {
		in.RequireEachIncludedType = aws.Bool(g.GetRequireEachIncludedType())
	}
	return in, nil
}

// readVersion reads the value of version id of secret full.
func (x *execution) readVersion(ctx context.Context, name, full, id string) (*delegatev1.SecretValue, *Error) {
	out, err := x.sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(full), VersionId: aws.String(id)})
	if err != nil {
		return nil, x.fail(ctx, name, err)
	}
	if out.SecretString != nil {
		x.secrets = append(x.secrets, *out.SecretString)
		return &delegatev1.SecretValue{Value: &delegatev1.SecretValue_StringValue{StringValue: *out.SecretString}}, nil
	}
	return &delegatev1.SecretValue{Value: &delegatev1.SecretValue_BinaryValue{BinaryValue: out.SecretBinary}}, nil
}

// ownVersion reports whether secret full has a version with id token.
func (x *execution) ownVersion(ctx context.Context, full, token string) (*delegatev1.SecretResult, bool) {
	d, err := x.sm.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String(full)})
	if err != nil {
		return nil, false
	}
	stages, ok := d.VersionIdsToStages[token]
	if !ok {
		return nil, false
	}
	return &delegatev1.SecretResult{
		Name:          x.prefix.Strip(aws.ToString(d.Name)),
		Arn:           aws.ToString(d.ARN),
		VersionId:     token,
		VersionStages: stages,
	}, true
}

// upsert creates the secret, or, when it exists, writes the value with
// UpdateSecret (or PutSecretValue when the connector says so) under the same
// token. A re-run whose first run created the secret therefore takes the
// update path with the same token and value, which AWS treats as a repeat:
// no new version, created reported false. Tags apply on creation only; the
// update path requires the managed-by tag (see guard).
func (x *execution) upsert(ctx context.Context, op *delegatev1.UpsertSecretOp) (*delegatev1.SecretResult, *Error) {
	in, verr := x.createInput(op.GetName(), op.GetValue(), false, op.GetDescription(), op.GetTags(), op.GetKmsKeyId())
	if verr != nil {
		return nil, verr
	}
	sm, verr := x.api(ctx)
	if verr != nil {
		return nil, verr
	}
	out, err := sm.CreateSecret(ctx, in)
	if err == nil {
		return &delegatev1.SecretResult{
			Name:      x.prefix.Strip(aws.ToString(out.Name)),
			Arn:       aws.ToString(out.ARN),
			VersionId: aws.ToString(out.VersionId),
			Created:   true,
			Action:    actionCreate,
		}, nil
	}
	var exists *types.ResourceExistsException
	if !errors.As(err, &exists) {
		return nil, x.fail(ctx, op.GetName(), err)
	}
	adopted, _, verr := x.guard(ctx, op.GetName(), *in.Name, op.GetUnmanaged())
	if verr != nil {
		return nil, verr
	}
	res, verr := x.write(ctx, op.GetName(), *in.Name, *in.ClientRequestToken, in.SecretString, in.SecretBinary, op.GetDescription(), op.GetKmsKeyId())
	if res != nil {
		res.Adopted = adopted
	}
	return res, verr
}

// update writes a new value (UpdateSecret, or PutSecretValue when the
// connector has use_put_secret_value) and/or changes the description or
// KMS key (always UpdateSecret: PutSecretValue cannot).
func (x *execution) update(ctx context.Context, op *delegatev1.UpdateSecretOp) (*delegatev1.SecretResult, *Error) {
	full, str, bin, tok, verr := x.updateInput(op)
	if verr != nil {
		return nil, verr
	}
	if _, verr := x.api(ctx); verr != nil {
		return nil, verr
	}
	adopted, _, verr := x.guard(ctx, op.GetName(), full, op.GetUnmanaged())
	if verr != nil {
		return nil, verr
	}
	res, verr := x.write(ctx, op.GetName(), full, tok, str, bin, op.GetDescription(), op.GetKmsKeyId())
	if res != nil {
		res.Adopted = adopted
	}
	return res, verr
}

// updateInput validates an update: its full name, its value (either form,
// or none), and the token when it writes a value.
func (x *execution) updateInput(op *delegatev1.UpdateSecretOp) (full string, str *string, bin []byte, tok string, err *Error) {
	if full, err = fullName(x.prefix, op.GetName()); err != nil {
		return "", nil, nil, "", err
	}
	if str, bin, err = secretValue(op.GetValue(), false); err != nil {
		return "", nil, nil, "", err
	}
	if err := checkDescription(op.GetDescription()); err != nil {
		return "", nil, nil, "", err
	}
	if err := checkKMSKeyID(op.GetKmsKeyId()); err != nil {
		return "", nil, nil, "", err
	}
	if err := checkUnmanaged(op.GetUnmanaged()); err != nil {
		return "", nil, nil, "", err
	}
	hasValue := str != nil || bin != nil
	if !hasValue && op.GetDescription() == "" && op.GetKmsKeyId() == "" {
		return "", nil, nil, "", invalid("value", "an update needs a value, a description or a kms_key_id")
	}
	if hasValue {
		if tok, err = x.token(); err != nil {
			return "", nil, nil, "", err
		}
	}
	return full, str, bin, tok, nil
}

// write is the update half of upsert and update. With a value it sends the
// token; with use_put_secret_value the value goes through PutSecretValue
// and a description or KMS change through a separate UpdateSecret, and
// action is "PutSecretValue" (or "PutSecretValue,UpdateSecret").
func (x *execution) write(ctx context.Context, name, full, tok string, str *string, bin []byte, desc, kms string) (*delegatev1.SecretResult, *Error) {
	hasValue := str != nil || bin != nil
	res := &delegatev1.SecretResult{Name: x.prefix.Strip(full)}
	meta := desc != "" || kms != ""
	if hasValue && x.conn.GetUsePutSecretValue() {
		out, err := x.sm.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{
			SecretId:           aws.String(full),
			ClientRequestToken: aws.String(tok),
			SecretString:       str,
			SecretBinary:       bin,
		})
		if err != nil {
			return nil, x.fail(ctx, name, err)
		}
		res.Arn, res.VersionId, res.VersionStages = aws.ToString(out.ARN), aws.ToString(out.VersionId), out.VersionStages
		res.Action = actionPut
		if !meta {
			return res, nil
		}
		hasValue = false
		res.Action = actionPut + "," + actionUpdate
	}
	in := &secretsmanager.UpdateSecretInput{SecretId: aws.String(full)}
	if hasValue {
		in.ClientRequestToken = aws.String(tok)
		in.SecretString, in.SecretBinary = str, bin
	}
	if desc != "" {
		in.Description = aws.String(desc)
	}
	if kms != "" {
		in.KmsKeyId = aws.String(kms)
	}
	out, err := x.sm.UpdateSecret(ctx, in)
	if err != nil {
		return nil, x.fail(ctx, name, err)
	}
	res.Arn = aws.ToString(out.ARN)
	if hasValue {
		res.VersionId = aws.ToString(out.VersionId)
	}
	if res.Action == "" {
		res.Action = actionUpdate
	}
	return res, nil
}
