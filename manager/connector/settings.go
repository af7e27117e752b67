package connector

import (
	"fmt"

	"github.com/smdelegate/smdelegate/internal/config"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
	"github.com/smdelegate/smdelegate/tasks"
)

// BuiltinError is returned by Settings when a builtin credential cannot be
// resolved. It names the connector field and the credential, never a value,
// and unwraps to the resolver's error (so errors.Is(err, store.ErrNotFound)
// works when the resolver returns it).
type BuiltinError struct {
	// Field is access_key_id or secret_access_key.
	Field string
	// Name is the builtin credential's name.
	Name string
	// Err is the resolver's error, or nil when it returned an empty value.
	Err error
}

func (e *BuiltinError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("%s: builtin credential %q is empty", e.Field, e.Name)
	}
	return fmt.Sprintf("%s: builtin credential %q: %v", e.Field, e.Name, e.Err)
}

// Unwrap returns the resolver's error.
func (e *BuiltinError) Unwrap() error { return e.Err }

// SettingsID is the ConnectorSettings.id Settings gives c: its scope key and
// identifier, "acct/aws_prod" or "acct/org/proj/aws_prod". The number of
// parts tells the scope, so the id is unique across scopes; delegates log
// it and key their client pool on it.
func SettingsID(c *delegatev1.Connector) string {
	return ScopeKey(c.GetScope()) + "/" + c.GetIdentifier()
}

// Settings builds what a delegate needs of connector c to run one task. c
// should be normalized and valid; Settings re-checks only what it must to
// build references, and never sends a field the credential type does not
// use: keys only for access_key, the token only for oidc.
//
// access_key_id and secret_access_key become SecretRefs: a plaintext access
// key id or a builtin credential (decrypted by resolveBuiltin, now, for
// this task only; it is given the field and the credential's name) as a
// value; env:VAR and file:/path as references the
// delegate resolves on its own host. A plaintext secret_access_key is
// refused. webIdentityToken is the manager-signed ID token, required for
// oidc connectors.
//
// Errors are *config.FieldError for a bad or missing field and
// *BuiltinError when resolveBuiltin fails; none carries a value.
func Settings(c *delegatev1.Connector, resolveBuiltin func(field, name string) (string, error), webIdentityToken string) (*delegatev1.ConnectorSettings, error) {
	if c == nil {
		return nil, config.Errf("connector", "is required")
	}
	s := &delegatev1.ConnectorSettings{
		Id:                         SettingsID(c),
		Region:                     c.GetRegion(),
		SecretNamePrefix:           string(tasks.NewPrefix(c.GetSecretNamePrefix())),
		UsePutSecretValue:          c.GetUsePutSecretValue(),
		ForceDeleteWithoutRecovery: c.GetForceDeleteWithoutRecovery(),
		RecoveryWindowDays:         c.GetRecoveryWindowDays(),
		CredentialType:             c.GetCredentialType(),
		RoleArn:                    c.GetRoleArn(),
		ExternalId:                 c.GetExternalId(),
		AssumeRoleDurationSeconds:  c.GetAssumeRoleDurationSeconds(),
		EndpointUrl:                c.GetEndpointUrl(),
		StsEndpointUrl:             c.GetStsEndpointUrl(),
		KmsKeyId:                   c.GetKmsKeyId(),
		ManagedByTagKey:            c.GetManagedByTagKey(),
	}
	var err error
	switch c.GetCredentialType() {
	case delegatev1.CredentialType_ACCESS_KEY:
		if s.AccessKeyId, err = secretRef("access_key_id", c.GetAccessKeyId(), true, resolveBuiltin); err != nil {
			return nil, err
		}
		if s.SecretAccessKey, err = secretRef("secret_access_key", c.GetSecretAccessKey(), false, resolveBuiltin); err != nil {
			return nil, err
		}
	case delegatev1.CredentialType_INSTANCE_ROLE, delegatev1.CredentialType_ASSUME_ROLE:
	case delegatev1.CredentialType_OIDC:
		if webIdentityToken == "" {
			return nil, config.Errf("web_identity_token", "is required for oidc credentials")
		}
		s.WebIdentityToken = webIdentityToken
	case delegatev1.CredentialType_CREDENTIAL_TYPE_UNSPECIFIED:
		return nil, config.Errf("credential_type", "is required: access_key, instance_role, assume_role or oidc")
	default:
		return nil, config.Errf("credential_type", ruleCredType)
	}
	return s, nil
}

// secretRef turns a credential field into a SecretRef, resolving builtin
// references. allowPlain says whether a plaintext value is accepted.
func secretRef(field, raw string, allowPlain bool, resolveBuiltin func(field, name string) (string, error)) (*delegatev1.SecretRef, error) {
	if raw == "" {
		return nil, config.Errf(field, "is required for access_key credentials")
	}
	r, err := ParseRef(raw)
	if err != nil {
		return nil, config.Errf(field, "%s", err.Error())
	}
	switch r.Kind {
	case KindPlain:
		if !allowPlain {
			return nil, config.Errf(field, rulePlainSecret)
		}
		return &delegatev1.SecretRef{Ref: &delegatev1.SecretRef_Value{Value: r.Value}}, nil
	case KindBuiltin:
		if resolveBuiltin == nil {
			return nil, &BuiltinError{Field: field, Name: r.Value, Err: fmt.Errorf("no builtin credential resolver")}
		}
		v, err := resolveBuiltin(field, r.Value)
		if err != nil {
			return nil, &BuiltinError{Field: field, Name: r.Value, Err: err}
		}
		if v == "" {
			return nil, &BuiltinError{Field: field, Name: r.Value}
		}
		return &delegatev1.SecretRef{Ref: &delegatev1.SecretRef_Value{Value: v}}, nil
	case KindEnv:
		return &delegatev1.SecretRef{Ref: &delegatev1.SecretRef_Env{Env: r.Value}}, nil
	default: // KindFile
		return &delegatev1.SecretRef{Ref: &delegatev1.SecretRef_File{File: r.Value}}, nil
	}
}
