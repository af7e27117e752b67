package connector_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/smdelegate/smdelegate/manager/connector"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

const (
	accessKey  = delegatev1.CredentialType_ACCESS_KEY
	instance   = delegatev1.CredentialType_INSTANCE_ROLE
	assumeRole = delegatev1.CredentialType_ASSUME_ROLE
	oidc       = delegatev1.CredentialType_OIDC

	ruleIdent = "must start with a letter or _ and contain only letters, digits and _ (at most 128 characters)"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	type mutate = func(c *delegatev1.Connector)
	manyTags := func(n int) map[string]string {
		m := map[string]string{}
		for i := range n {
			m[fmt.Sprintf("k%d", i)] = "v"
		}
		return m
	}
	manySelectors := func(n int) []string {
		var s []string
		for i := range n {
			s = append(s, fmt.Sprintf("s%d", i))
		}
		return s
	}
	longKey := strings.Repeat("k", 129)

	tests := []struct {
		name  string
		typ   delegatev1.CredentialType
		mut   mutate
		field string // "" means valid
		rule  string
	}{
		// Valid connectors of every type.
		{"valid access_key", accessKey, nil, "", ""},
		{"valid instance_role", instance, nil, "", ""},
		{"valid assume_role", assumeRole, nil, "", ""},
		{"valid oidc", oidc, nil, "", ""},

		// identifier
		{"identifier underscore", instance, func(c *delegatev1.Connector) { c.Identifier = "_x1" }, "", ""},
		{"identifier 128", instance, func(c *delegatev1.Connector) { c.Identifier = "a" + strings.Repeat("b", 127) }, "", ""},
		{"identifier 129", instance, func(c *delegatev1.Connector) { c.Identifier = "a" + strings.Repeat("b", 128) }, "identifier", ruleIdent},
		{"identifier digit first", instance, func(c *delegatev1.Connector) { c.Identifier = "1aws" }, "identifier", ruleIdent},
		{"identifier dash", instance, func(c *delegatev1.Connector) { c.Identifier = "aws-prod" }, "identifier", ruleIdent},
		{"identifier space", instance, func(c *delegatev1.Connector) { c.Identifier = "aws prod" }, "identifier", ruleIdent},
		{"identifier non-ascii", instance, func(c *delegatev1.Connector) { c.Identifier = "awsé" }, "identifier", ruleIdent},
		{"identifier empty", instance, func(c *delegatev1.Connector) { c.Identifier = "" }, "identifier", "is required"},

		// name
		{"name empty", instance, func(c *delegatev1.Connector) { c.Name = "" }, "name", "is required"},
		{"name blank", instance, func(c *delegatev1.Connector) { c.Name = "   " }, "name", "is required"},
		{"name 128", instance, func(c *delegatev1.Connector) { c.Name = strings.Repeat("é", 128) }, "", ""},
		{"name 129", instance, func(c *delegatev1.Connector) { c.Name = strings.Repeat("n", 129) }, "name", "must be at most 128 characters"},

		// description
		{"description 1024", instance, func(c *delegatev1.Connector) { c.Description = strings.Repeat("é", 1024) }, "", ""},
		{"description 1025", instance, func(c *delegatev1.Connector) { c.Description = strings.Repeat("d", 1025) }, "description", "must be at most 1024 characters"},

		// tags
		{"tags 50", instance, func(c *delegatev1.Connector) { c.Tags = manyTags(50) }, "", ""},
		{"tags 51", instance, func(c *delegatev1.Connector) { c.Tags = manyTags(51) }, "tags", "must have at most 50 tags"},
		{"tag key empty", instance, func(c *delegatev1.Connector) { c.Tags = map[string]string{"": "v"} }, `tags[""]`, "key must not be empty"},
		{"tag key 128", instance, func(c *delegatev1.Connector) { c.Tags = map[string]string{strings.Repeat("k", 128): "v"} }, "", ""},
		{"tag key 129", instance, func(c *delegatev1.Connector) { c.Tags = map[string]string{longKey: "v"} },
			`tags["` + longKey[:128] + `..."]`, "key must be at most 128 characters"},
		{"tag value empty", instance, func(c *delegatev1.Connector) { c.Tags = map[string]string{"team": ""} }, "", ""},
		{"tag value 256", instance, func(c *delegatev1.Connector) { c.Tags = map[string]string{"team": strings.Repeat("v", 256)} }, "", ""},
		{"tag value 257", instance, func(c *delegatev1.Connector) { c.Tags = map[string]string{"team": strings.Repeat("v", 257)} },
			`tags["team"]`, "value must be at most 256 characters"},

		// scope
		{"scope nil", instance, func(c *delegatev1.Connector) { c.Scope = nil }, "scope.account", "is required"},
		{"scope account empty", instance, func(c *delegatev1.Connector) { c.Scope = &delegatev1.Scope{Org: "o"} }, "scope.account", "is required"},
		{"scope account invalid", instance, func(c *delegatev1.Connector) { c.Scope.Account = "my-acct" }, "scope.account", ruleIdent},
		{"scope org", instance, func(c *delegatev1.Connector) { c.Scope.Org = "org1" }, "", ""},
		{"scope project", instance, func(c *delegatev1.Connector) { c.Scope.Org, c.Scope.Project = "org1", "proj1" }, "", ""},
		{"scope project without org", instance, func(c *delegatev1.Connector) { c.Scope.Project = "proj1" }, "scope.org", "is required when scope.project is set"},
		{"scope org invalid", instance, func(c *delegatev1.Connector) { c.Scope.Org = "org/1" }, "scope.org", ruleIdent},
		{"scope project invalid", instance, func(c *delegatev1.Connector) { c.Scope.Org, c.Scope.Project = "o", "9p" }, "scope.project", ruleIdent},

		// credential_type
		{"credential_type unspecified", instance, func(c *delegatev1.Connector) { c.CredentialType = 0 }, "credential_type", "is required: access_key, instance_role, assume_role or oidc"},
		{"credential_type unknown", instance, func(c *delegatev1.Connector) { c.CredentialType = 99 }, "credential_type", "must be access_key, instance_role, assume_role or oidc"},

		// access_key_id
		{"access_key_id missing", accessKey, func(c *delegatev1.Connector) { c.AccessKeyId = "" }, "access_key_id", "is required for access_key credentials"},
		{"access_key_id builtin", accessKey, func(c *delegatev1.Connector) { c.AccessKeyId = "builtin:aws_prod_id" }, "", ""},
		{"access_key_id env", accessKey, func(c *delegatev1.Connector) { c.AccessKeyId = "env:AWS_ACCESS_KEY_ID" }, "", ""},
		{"access_key_id file", accessKey, func(c *delegatev1.Connector) { c.AccessKeyId = "file:/etc/smd/key_id" }, "", ""},
		{"access_key_id plaintext bad chars", accessKey, func(c *delegatev1.Connector) { c.AccessKeyId = "AKIA IOSF" }, "access_key_id", "a plaintext access key id must be at most 128 letters and digits"},
		{"access_key_id plaintext too long", accessKey, func(c *delegatev1.Connector) { c.AccessKeyId = strings.Repeat("A", 129) }, "access_key_id", "at most 128 letters and digits"},
		{"access_key_id unknown kind", accessKey, func(c *delegatev1.Connector) { c.AccessKeyId = "vault:x" }, "access_key_id", "is not a known kind of reference; use builtin:NAME, env:VAR or file:/absolute/path"},
		{"access_key_id bad env", accessKey, func(c *delegatev1.Connector) { c.AccessKeyId = "env:1X" }, "access_key_id", "env:VAR needs a VAR"},
		{"access_key_id on instance_role", instance, func(c *delegatev1.Connector) { c.AccessKeyId = "AKIAIOSFODNN7EXAMPLE" }, "access_key_id", "only used with access_key credentials"},

		// secret_access_key
		{"secret_access_key missing", accessKey, func(c *delegatev1.Connector) { c.SecretAccessKey = "" }, "secret_access_key", "is required for access_key credentials"},
		{"secret_access_key env", accessKey, func(c *delegatev1.Connector) { c.SecretAccessKey = "env:AWS_SECRET_ACCESS_KEY" }, "", ""},
		{"secret_access_key file", accessKey, func(c *delegatev1.Connector) { c.SecretAccessKey = "file:/run/secrets/aws" }, "", ""},
		{"secret_access_key builtin dotted", accessKey, func(c *delegatev1.Connector) { c.SecretAccessKey = "builtin:aws-prod.key" }, "", ""},
		{"secret_access_key plaintext", accessKey, func(c *delegatev1.Connector) { c.SecretAccessKey = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY" },
			"secret_access_key", "a plaintext value is not allowed; store it with smd credential put and use builtin:NAME"},
		{"secret_access_key builtin bad name", accessKey, func(c *delegatev1.Connector) { c.SecretAccessKey = "builtin:9x" }, "secret_access_key", "builtin:NAME needs a NAME"},
		{"secret_access_key builtin empty name", accessKey, func(c *delegatev1.Connector) { c.SecretAccessKey = "builtin:" }, "secret_access_key", "builtin:NAME needs a NAME"},
		{"secret_access_key relative file", accessKey, func(c *delegatev1.Connector) { c.SecretAccessKey = "file:secrets/aws" }, "secret_access_key", "file:PATH needs an absolute path"},
		{"secret_access_key on assume_role", assumeRole, func(c *delegatev1.Connector) { c.SecretAccessKey = "env:K" }, "secret_access_key", "only used with access_key credentials"},

		// role_arn
		{"role_arn missing assume_role", assumeRole, func(c *delegatev1.Connector) { c.RoleArn = "" }, "role_arn", "is required for assume_role and oidc credentials"},
		{"role_arn missing oidc", oidc, func(c *delegatev1.Connector) { c.RoleArn = "" }, "role_arn", "is required for assume_role and oidc credentials"},
		{"role_arn gov partition path", assumeRole, func(c *delegatev1.Connector) { c.RoleArn = "arn:aws-us-gov:iam::123456789012:role/team/smd+x=y,z.@-_" }, "", ""},
		{"role_arn not a role", assumeRole, func(c *delegatev1.Connector) { c.RoleArn = "arn:aws:iam::123456789012:user/smd" }, "role_arn", "must be an IAM role ARN"},
		{"role_arn short account", assumeRole, func(c *delegatev1.Connector) { c.RoleArn = "arn:aws:iam::12345:role/smd" }, "role_arn", "must be an IAM role ARN"},
		{"role_arn other service", oidc, func(c *delegatev1.Connector) { c.RoleArn = "arn:aws:s3::123456789012:role/smd" }, "role_arn", "must be an IAM role ARN"},
		{"role_arn on access_key", accessKey, func(c *delegatev1.Connector) { c.RoleArn = testRoleARN }, "role_arn", "only used with assume_role or oidc credentials"},
		{"role_arn on instance_role", instance, func(c *delegatev1.Connector) { c.RoleArn = testRoleARN }, "role_arn", "only used with assume_role or oidc credentials"},

		// external_id
		{"external_id 2", assumeRole, func(c *delegatev1.Connector) { c.ExternalId = "ab" }, "", ""},
		{"external_id 1224", assumeRole, func(c *delegatev1.Connector) { c.ExternalId = strings.Repeat("x", 1224) }, "", ""},
		{"external_id punctuation", assumeRole, func(c *delegatev1.Connector) { c.ExternalId = "a_b+=,.@:/-9" }, "", ""},
		{"external_id 1", assumeRole, func(c *delegatev1.Connector) { c.ExternalId = "a" }, "external_id", "must be 2-1224 characters"},
		{"external_id 1225", assumeRole, func(c *delegatev1.Connector) { c.ExternalId = strings.Repeat("x", 1225) }, "external_id", "must be 2-1224 characters"},
		{"external_id space", assumeRole, func(c *delegatev1.Connector) { c.ExternalId = "a b" }, "external_id", "must be 2-1224 characters of letters, digits and _+=,.@:/-"},
		{"external_id on oidc", oidc, func(c *delegatev1.Connector) { c.ExternalId = "abc" }, "external_id", "only used with assume_role credentials"},
		{"external_id on instance_role", instance, func(c *delegatev1.Connector) { c.ExternalId = "abc" }, "external_id", "only used with assume_role credentials"},

		// assume_role_duration_seconds
		{"duration 900", assumeRole, func(c *delegatev1.Connector) { c.AssumeRoleDurationSeconds = 900 }, "", ""},
		{"duration 43200", assumeRole, func(c *delegatev1.Connector) { c.AssumeRoleDurationSeconds = 43200 }, "", ""},
		{"duration oidc", oidc, func(c *delegatev1.Connector) { c.AssumeRoleDurationSeconds = 3600 }, "", ""},
		{"duration 899", assumeRole, func(c *delegatev1.Connector) { c.AssumeRoleDurationSeconds = 899 }, "assume_role_duration_seconds", "must be between 900 and 43200 seconds"},
		{"duration 43201", oidc, func(c *delegatev1.Connector) { c.AssumeRoleDurationSeconds = 43201 }, "assume_role_duration_seconds", "must be between 900 and 43200 seconds"},
		{"duration negative", assumeRole, func(c *delegatev1.Connector) { c.AssumeRoleDurationSeconds = -1 }, "assume_role_duration_seconds", "must be between 900 and 43200 seconds"},
		{"duration on access_key", accessKey, func(c *delegatev1.Connector) { c.AssumeRoleDurationSeconds = 900 }, "assume_role_duration_seconds", "only used with assume_role or oidc credentials"},

		// oidc_connectivity
		{"oidc platform", oidc, func(c *delegatev1.Connector) { c.OidcConnectivity = delegatev1.OIDCConnectivity_PLATFORM }, "", ""},
		{"oidc unspecified", oidc, func(c *delegatev1.Connector) { c.OidcConnectivity = 0 }, "", ""},
		{"oidc unknown", oidc, func(c *delegatev1.Connector) { c.OidcConnectivity = 7 }, "oidc_connectivity", "must be delegate or platform"},
		{"oidc_connectivity on access_key", accessKey, func(c *delegatev1.Connector) { c.OidcConnectivity = delegatev1.OIDCConnectivity_DELEGATE }, "oidc_connectivity", "only used with oidc credentials"},
		{"oidc_connectivity on assume_role", assumeRole, func(c *delegatev1.Connector) { c.OidcConnectivity = delegatev1.OIDCConnectivity_PLATFORM }, "oidc_connectivity", "only used with oidc credentials"},
		{"platform with selectors", oidc, func(c *delegatev1.Connector) {
			c.OidcConnectivity = delegatev1.OIDCConnectivity_PLATFORM
			c.DelegateSelectors = []string{"linux"}
		}, "delegate_selectors", "are not used when oidc_connectivity is platform"},
		{"delegate mode with selectors", oidc, func(c *delegatev1.Connector) { c.DelegateSelectors = []string{"linux"} }, "", ""},

		// region
		{"region empty", instance, func(c *delegatev1.Connector) { c.Region = "" }, "", ""},
		{"region gov", instance, func(c *delegatev1.Connector) { c.Region = "us-gov-west-1" }, "", ""},
		{"region upper", instance, func(c *delegatev1.Connector) { c.Region = "US-EAST-1" }, "region", "must be an AWS region such as us-east-1"},
		{"region no dashes", instance, func(c *delegatev1.Connector) { c.Region = "useast1" }, "region", "must be an AWS region"},
		{"region no number", instance, func(c *delegatev1.Connector) { c.Region = "us-east" }, "region", "must be an AWS region"},

		// secret_name_prefix
		{"prefix empty", instance, func(c *delegatev1.Connector) { c.SecretNamePrefix = "" }, "", ""},
		{"prefix nested", instance, func(c *delegatev1.Connector) { c.SecretNamePrefix = "devops/team_a+b=c.d@e-f" }, "", ""},
		{"prefix 256", instance, func(c *delegatev1.Connector) { c.SecretNamePrefix = strings.Repeat("p", 256) }, "", ""},
		{"prefix 257", instance, func(c *delegatev1.Connector) { c.SecretNamePrefix = strings.Repeat("p", 257) }, "secret_name_prefix", "must be at most 256 characters of letters, digits and /_+=.@-"},
		{"prefix space", instance, func(c *delegatev1.Connector) { c.SecretNamePrefix = "dev ops" }, "secret_name_prefix", "must be at most 256 characters of letters, digits and /_+=.@-"},

		// recovery_window_days and force_delete_without_recovery
		{"recovery 0", instance, func(c *delegatev1.Connector) { c.RecoveryWindowDays = 0 }, "", ""},
		{"recovery 7", instance, func(c *delegatev1.Connector) { c.RecoveryWindowDays = 7 }, "", ""},
		{"recovery 30", instance, func(c *delegatev1.Connector) { c.RecoveryWindowDays = 30 }, "", ""},
		{"recovery 6", instance, func(c *delegatev1.Connector) { c.RecoveryWindowDays = 6 }, "recovery_window_days", "must be between 7 and 30"},
		{"recovery 31", instance, func(c *delegatev1.Connector) { c.RecoveryWindowDays = 31 }, "recovery_window_days", "must be between 7 and 30"},
		{"recovery negative", instance, func(c *delegatev1.Connector) { c.RecoveryWindowDays = -7 }, "recovery_window_days", "must be between 7 and 30"},
		{"force alone", instance, func(c *delegatev1.Connector) { c.ForceDeleteWithoutRecovery = true }, "", ""},
		{"force with window", instance, func(c *delegatev1.Connector) {
			c.ForceDeleteWithoutRecovery = true
			c.RecoveryWindowDays = 7
		}, "force_delete_without_recovery", "cannot be combined with recovery_window_days"},

		// delegate_selectors
		{"selectors", instance, func(c *delegatev1.Connector) { c.DelegateSelectors = []string{"gpu", "linux"} }, "", ""},
		{"selectors 50", instance, func(c *delegatev1.Connector) { c.DelegateSelectors = manySelectors(50) }, "", ""},
		{"selectors 51", instance, func(c *delegatev1.Connector) { c.DelegateSelectors = manySelectors(51) }, "delegate_selectors", "must have at most 50 selectors"},
		{"selector empty", instance, func(c *delegatev1.Connector) { c.DelegateSelectors = []string{"a", "b", " "} }, "delegate_selectors[2]", "must not be empty"},
		{"selector 128", instance, func(c *delegatev1.Connector) { c.DelegateSelectors = []string{strings.Repeat("s", 128)} }, "", ""},
		{"selector 129", instance, func(c *delegatev1.Connector) { c.DelegateSelectors = []string{strings.Repeat("s", 129)} }, "delegate_selectors[0]", "must be at most 128 characters"},
		{"selector reserved", instance, func(c *delegatev1.Connector) { c.DelegateSelectors = []string{"linux", "smd:platform"} }, "delegate_selectors[1]", "must not start with smd: (reserved"},
		{"selector reserved upper", instance, func(c *delegatev1.Connector) { c.DelegateSelectors = []string{"SMD:x"} }, "delegate_selectors[0]", "must not start with smd:"},

		// endpoint_url and sts_endpoint_url
		{"endpoint https", instance, func(c *delegatev1.Connector) {
			c.EndpointUrl = "https://vpce-1.secretsmanager.us-east-1.vpce.amazonaws.com"
		}, "", ""},
		{"endpoint http port", instance, func(c *delegatev1.Connector) { c.EndpointUrl = "http://127.0.0.1:4566" }, "", ""},
		{"endpoint ftp", instance, func(c *delegatev1.Connector) { c.EndpointUrl = "ftp://example.com" }, "endpoint_url", "must be an absolute http or https URL"},
		{"endpoint no scheme", instance, func(c *delegatev1.Connector) { c.EndpointUrl = "localhost:4566" }, "endpoint_url", "must be an absolute http or https URL"},
		{"endpoint relative", instance, func(c *delegatev1.Connector) { c.EndpointUrl = "/sm" }, "endpoint_url", "must be an absolute http or https URL"},
		{"endpoint no host", instance, func(c *delegatev1.Connector) { c.EndpointUrl = "https://" }, "endpoint_url", "must be an absolute http or https URL"},
		{"endpoint userinfo", instance, func(c *delegatev1.Connector) { c.EndpointUrl = "https://u:p@example.com" }, "endpoint_url", "must not carry credentials"},
		{"sts endpoint https", assumeRole, func(c *delegatev1.Connector) { c.StsEndpointUrl = "https://sts.us-east-1.amazonaws.com" }, "", ""},
		{"sts endpoint bad", assumeRole, func(c *delegatev1.Connector) { c.StsEndpointUrl = "sts.amazonaws.com" }, "sts_endpoint_url", "must be an absolute http or https URL"},

		// kms_key_id
		{"kms 2048", instance, func(c *delegatev1.Connector) { c.KmsKeyId = strings.Repeat("k", 2048) }, "", ""},
		{"kms 2049", instance, func(c *delegatev1.Connector) { c.KmsKeyId = strings.Repeat("k", 2049) }, "kms_key_id", "must be at most 2048 characters"},

		// managed_by_tag_key
		{"managed by default", instance, func(c *delegatev1.Connector) { c.ManagedByTagKey = "" }, "", ""},
		{"managed by custom", instance, func(c *delegatev1.Connector) { c.ManagedByTagKey = "team-a/owner:tool @x=1+2" }, "", ""},
		{"managed by unicode", instance, func(c *delegatev1.Connector) { c.ManagedByTagKey = "verwaltet-von" }, "", ""},
		{"managed by 127", instance, func(c *delegatev1.Connector) { c.ManagedByTagKey = strings.Repeat("k", 127) }, "", ""},
		{"managed by 128", instance, func(c *delegatev1.Connector) { c.ManagedByTagKey = strings.Repeat("k", 128) }, "managed_by_tag_key", "must be 1-127 letters"},
		{"managed by aws", instance, func(c *delegatev1.Connector) { c.ManagedByTagKey = "AWS:owner" }, "managed_by_tag_key", "not starting with aws:"},
		{"managed by comma", instance, func(c *delegatev1.Connector) { c.ManagedByTagKey = "a,b" }, "managed_by_tag_key", "must be 1-127 letters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := validConnector(tt.typ)
			if tt.mut != nil {
				tt.mut(c)
			}
			err := connector.Validate(c)
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			errs := fieldErrors(t, err)
			if findField(errs, tt.field, tt.rule) == nil {
				t.Fatalf("Validate() = %v, want a %q error containing %q", err, tt.field, tt.rule)
			}
			if len(errs) != 1 {
				t.Errorf("Validate() reported %d problems, want 1: %v", len(errs), err)
			}
			if want := tt.field + ": "; !strings.Contains(err.Error(), want) {
				t.Errorf("Validate() = %q, want it to contain %q", err, want)
			}
		})
	}
}

// The brief's sample messages, verbatim.
func TestValidateMessages(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		typ  delegatev1.CredentialType
		mut  func(c *delegatev1.Connector)
		want string
	}{
		{"identifier", instance, func(c *delegatev1.Connector) { c.Identifier = "9" },
			"identifier: must start with a letter or _ and contain only letters, digits and _ (at most 128 characters)"},
		{"recovery", instance, func(c *delegatev1.Connector) { c.RecoveryWindowDays = 3 },
			"recovery_window_days: must be between 7 and 30"},
		{"force", instance, func(c *delegatev1.Connector) { c.RecoveryWindowDays, c.ForceDeleteWithoutRecovery = 10, true },
			"force_delete_without_recovery: cannot be combined with recovery_window_days"},
		{"role_arn", instance, func(c *delegatev1.Connector) { c.RoleArn = testRoleARN },
			"role_arn: only used with assume_role or oidc credentials"},
		{"selector", instance, func(c *delegatev1.Connector) { c.DelegateSelectors = []string{"a", "b", ""} },
			"delegate_selectors[2]: must not be empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := validConnector(tt.typ)
			tt.mut(c)
			if err := connector.Validate(c); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	c := &delegatev1.Connector{
		Identifier:                 "1bad",
		Name:                       "",
		Description:                strings.Repeat("d", 1025),
		Tags:                       map[string]string{"": "v"},
		Scope:                      &delegatev1.Scope{Account: "acct", Project: "p"},
		CredentialType:             accessKey,
		AccessKeyId:                "",
		SecretAccessKey:            "plaintext-secret",
		RoleArn:                    testRoleARN,
		ExternalId:                 "x",
		AssumeRoleDurationSeconds:  100,
		Region:                     "Mars",
		SecretNamePrefix:           "a b",
		ForceDeleteWithoutRecovery: true,
		RecoveryWindowDays:         40,
		DelegateSelectors:          []string{"ok", "", "smd:platform"},
		OidcConnectivity:           delegatev1.OIDCConnectivity_PLATFORM,
		EndpointUrl:                "nope",
		StsEndpointUrl:             "ftp://x",
		KmsKeyId:                   strings.Repeat("k", 2049),
		ManagedByTagKey:            "aws:x",
	}
	want := []string{
		"identifier", "name", "description", `tags[""]`, "scope.org",
		"access_key_id", "secret_access_key", "role_arn", "assume_role_duration_seconds",
		"external_id", "oidc_connectivity", "region", "secret_name_prefix",
		"recovery_window_days", "force_delete_without_recovery",
		"delegate_selectors[1]", "delegate_selectors[2]",
		"endpoint_url", "sts_endpoint_url", "kms_key_id", "managed_by_tag_key",
	}
	err := connector.Validate(c)
	errs := fieldErrors(t, err)
	var got []string
	for _, fe := range errs {
		got = append(got, fe.Field)
	}
	if len(got) != len(want) {
		t.Errorf("Validate() reported fields %q, want %q", got, want)
	}
	for _, f := range want {
		if findField(errs, f, "") == nil {
			t.Errorf("Validate() = %v, missing a problem for %s", err, f)
		}
	}
	if strings.Contains(err.Error(), "plaintext-secret") {
		t.Errorf("Validate() = %q, echoes the secret access key", err)
	}
}

func TestValidateNil(t *testing.T) {
	t.Parallel()
	if err := connector.Validate(nil); err == nil || err.Error() != "connector: is required" {
		t.Errorf("Validate(nil) = %v, want connector: is required", err)
	}
}

func TestValidateUnknownTypeSkipsTypeChecks(t *testing.T) {
	t.Parallel()
	c := validConnector(accessKey)
	c.CredentialType = 0
	errs := fieldErrors(t, connector.Validate(c))
	if len(errs) != 1 || errs[0].Field != "credential_type" {
		t.Errorf("Validate() = %v, want only credential_type", errs)
	}
}

func TestValidIdentifier(t *testing.T) {
	t.Parallel()
	for s, want := range map[string]bool{"a": true, "_": true, "A_1": true, "": false, "1a": false, "a-b": false, strings.Repeat("a", 129): false} {
		if got := connector.ValidIdentifier(s); got != want {
			t.Errorf("ValidIdentifier(%q) = %v, want %v", s, got, want)
		}
	}
}
