package connector_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/smdelegate/smdelegate/manager/connector"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// fakeBuiltins resolves builtin credentials from a map, recording each
// call as field:name.
type fakeBuiltins struct {
	values map[string]string
	err    error
	asked  []string
}

func (f *fakeBuiltins) resolve(field, name string) (string, error) {
	f.asked = append(f.asked, field+":"+name)
	if f.err != nil {
		return "", f.err
	}
	v, ok := f.values[name]
	if !ok {
		return "", errNotFound
	}
	return v, nil
}

func valueRef(v string) *delegatev1.SecretRef {
	return &delegatev1.SecretRef{Ref: &delegatev1.SecretRef_Value{Value: v}}
}

func TestSettings(t *testing.T) {
	t.Parallel()
	full := func(c *delegatev1.Connector) {
		c.Scope = &delegatev1.Scope{Account: "a", Org: "o", Project: "p"}
		c.Region = "eu-west-1"
		c.SecretNamePrefix = "devops"
		c.UsePutSecretValue = true
		c.RecoveryWindowDays = 7
		c.EndpointUrl = "http://127.0.0.1:4566"
		c.StsEndpointUrl = "http://127.0.0.1:4567"
		c.KmsKeyId = "alias/smd"
		c.ManagedByTagKey = "owner"
	}
	base := func(typ delegatev1.CredentialType) *delegatev1.ConnectorSettings {
		return &delegatev1.ConnectorSettings{
			Id: "a/o/p/aws_prod", Region: "eu-west-1", SecretNamePrefix: "devops",
			UsePutSecretValue: true, RecoveryWindowDays: 7, CredentialType: typ,
			EndpointUrl: "http://127.0.0.1:4566", StsEndpointUrl: "http://127.0.0.1:4567", KmsKeyId: "alias/smd",
			ManagedByTagKey: "owner",
		}
	}
	tests := []struct {
		name      string
		typ       delegatev1.CredentialType
		mut       func(c *delegatev1.Connector)
		token     string
		want      func() *delegatev1.ConnectorSettings
		wantAsked []string
	}{
		{"access_key plain id and builtin secret", accessKey, nil, "the-token", func() *delegatev1.ConnectorSettings {
			s := base(accessKey)
			s.AccessKeyId = valueRef("AKIAIOSFODNN7EXAMPLE")
			s.SecretAccessKey = valueRef("SECRET-aws_prod")
			return s
		}, []string{"secret_access_key:aws_prod"}},
		{"access_key builtin id", accessKey, func(c *delegatev1.Connector) { c.AccessKeyId = "builtin:aws_prod_id" }, "", func() *delegatev1.ConnectorSettings {
			s := base(accessKey)
			s.AccessKeyId = valueRef("SECRET-aws_prod_id")
			s.SecretAccessKey = valueRef("SECRET-aws_prod")
			return s
		}, []string{"access_key_id:aws_prod_id", "secret_access_key:aws_prod"}},
		{"access_key env refs", accessKey, func(c *delegatev1.Connector) {
			c.AccessKeyId = "env:AWS_ACCESS_KEY_ID"
			c.SecretAccessKey = "env:AWS_SECRET_ACCESS_KEY"
		}, "", func() *delegatev1.ConnectorSettings {
			s := base(accessKey)
			s.AccessKeyId = &delegatev1.SecretRef{Ref: &delegatev1.SecretRef_Env{Env: "AWS_ACCESS_KEY_ID"}}
			s.SecretAccessKey = &delegatev1.SecretRef{Ref: &delegatev1.SecretRef_Env{Env: "AWS_SECRET_ACCESS_KEY"}}
			return s
		}, nil},
		{"access_key file refs", accessKey, func(c *delegatev1.Connector) {
			c.AccessKeyId = "file:/etc/smd/id"
			c.SecretAccessKey = "file:/etc/smd/secret"
		}, "", func() *delegatev1.ConnectorSettings {
			s := base(accessKey)
			s.AccessKeyId = &delegatev1.SecretRef{Ref: &delegatev1.SecretRef_File{File: "/etc/smd/id"}}
			s.SecretAccessKey = &delegatev1.SecretRef{Ref: &delegatev1.SecretRef_File{File: "/etc/smd/secret"}}
			return s
		}, nil},
		{"instance_role", instance, nil, "ignored-token", func() *delegatev1.ConnectorSettings { return base(instance) }, nil},
		{"assume_role", assumeRole, func(c *delegatev1.Connector) {
			c.ExternalId = "ext-1"
			c.AssumeRoleDurationSeconds = 1800
			c.ForceDeleteWithoutRecovery, c.RecoveryWindowDays = true, 0
		}, "ignored-token", func() *delegatev1.ConnectorSettings {
			s := base(assumeRole)
			s.RoleArn, s.ExternalId, s.AssumeRoleDurationSeconds = testRoleARN, "ext-1", 1800
			s.ForceDeleteWithoutRecovery, s.RecoveryWindowDays = true, 0
			return s
		}, nil},
		{"oidc", oidc, func(c *delegatev1.Connector) { c.AssumeRoleDurationSeconds = 900 }, "id-token", func() *delegatev1.ConnectorSettings {
			s := base(oidc)
			s.RoleArn, s.AssumeRoleDurationSeconds, s.WebIdentityToken = testRoleARN, 900, "id-token"
			return s
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := validConnector(tt.typ)
			full(c)
			if tt.mut != nil {
				tt.mut(c)
			}
			if err := connector.Validate(c); err != nil {
				t.Fatalf("test connector is invalid: %v", err)
			}
			b := &fakeBuiltins{values: map[string]string{"aws_prod": "SECRET-aws_prod", "aws_prod_id": "SECRET-aws_prod_id"}}
			got, err := connector.Settings(c, b.resolve, tt.token)
			if err != nil {
				t.Fatalf("Settings() = %v", err)
			}
			if diff := cmp.Diff(tt.want(), got, protocmp.Transform()); diff != "" {
				t.Errorf("Settings() mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantAsked, b.asked); diff != "" {
				t.Errorf("resolveBuiltin calls (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSettingsPrefixAndIDs(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		scope  *delegatev1.Scope
		prefix string
		wantID string
		wantP  string
	}{
		{&delegatev1.Scope{Account: "a"}, "/devops/", "a/aws_prod", "devops"},
		{&delegatev1.Scope{Account: "a", Org: "o"}, "", "a/o/aws_prod", ""},
	} {
		c := validConnector(instance)
		c.Scope, c.SecretNamePrefix = tt.scope, tt.prefix
		got, err := connector.Settings(c, nil, "")
		if err != nil || got.GetId() != tt.wantID || got.GetSecretNamePrefix() != tt.wantP {
			t.Errorf("Settings() = %v, %v, want id %q prefix %q", got, err, tt.wantID, tt.wantP)
		}
	}
}

func TestSettingsErrors(t *testing.T) {
	t.Parallel()
	boom := errors.New("seal: message authentication failed")
	tests := []struct {
		name    string
		typ     delegatev1.CredentialType
		mut     func(c *delegatev1.Connector)
		builtin *fakeBuiltins // nil: no resolver
		token   string
		want    string
		wantIs  error
	}{
		{"builtin not found", accessKey, nil, &fakeBuiltins{}, "",
			`secret_access_key: builtin credential "aws_prod": store: not found`, errNotFound},
		{"builtin id failure", accessKey, func(c *delegatev1.Connector) { c.AccessKeyId = "builtin:kid" }, &fakeBuiltins{err: boom}, "",
			`access_key_id: builtin credential "kid": seal: message authentication failed`, boom},
		{"builtin empty", accessKey, nil, &fakeBuiltins{values: map[string]string{"aws_prod": ""}}, "",
			`secret_access_key: builtin credential "aws_prod" is empty`, nil},
		{"no resolver", accessKey, nil, nil, "",
			`secret_access_key: builtin credential "aws_prod": no builtin credential resolver`, nil},
		{"plaintext secret", accessKey, func(c *delegatev1.Connector) { c.SecretAccessKey = "PLAINTEXTKEY" }, &fakeBuiltins{}, "",
			"secret_access_key: a plaintext value is not allowed", nil},
		{"missing key id", accessKey, func(c *delegatev1.Connector) { c.AccessKeyId = "" }, &fakeBuiltins{}, "",
			"access_key_id: is required", nil},
		{"bad ref", accessKey, func(c *delegatev1.Connector) { c.AccessKeyId = "env:1" }, &fakeBuiltins{}, "",
			"access_key_id: env:VAR needs a VAR", nil},
		{"oidc without token", oidc, nil, nil, "",
			"web_identity_token: is required for oidc credentials", nil},
		{"no type", instance, func(c *delegatev1.Connector) { c.CredentialType = 0 }, nil, "",
			"credential_type: is required", nil},
		{"unknown type", instance, func(c *delegatev1.Connector) { c.CredentialType = 42 }, nil, "",
			"credential_type: must be access_key", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := validConnector(tt.typ)
			if tt.mut != nil {
				tt.mut(c)
			}
			var resolve func(field, name string) (string, error)
			if tt.builtin != nil {
				resolve = tt.builtin.resolve
			}
			got, err := connector.Settings(c, resolve, tt.token)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Settings() = %v, %v, want error containing %q", got, err, tt.want)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("Settings() = %v, want it to wrap %v", err, tt.wantIs)
			}
		})
	}
	if _, err := connector.Settings(nil, nil, ""); err == nil {
		t.Error("Settings(nil) = nil error, want one")
	}
}

func TestSettingsBuiltinErrorType(t *testing.T) {
	t.Parallel()
	_, err := connector.Settings(validConnector(accessKey), (&fakeBuiltins{}).resolve, "")
	var be *connector.BuiltinError
	if !errors.As(err, &be) || be.Field != "secret_access_key" || be.Name != "aws_prod" {
		t.Errorf("Settings() = %#v, want a *BuiltinError for secret_access_key/aws_prod", err)
	}
}
