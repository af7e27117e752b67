package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Connector files the validation cases start from; {{ID}} is the case's
// identifier.
const (
	instanceRoleConnector = "identifier: {{ID}}\nname: Validation rule\ncredential_type: instance_role\n"
	accessKeyConnector    = "identifier: {{ID}}\nname: Validation rule\ncredential_type: access_key\n" +
		"access_key_id: AKIAEXAMPLE000000001\nsecret_access_key: builtin:dev_aws_secret_key\n"
	assumeRoleConnector = "identifier: {{ID}}\nname: Validation rule\ncredential_type: assume_role\n" +
		"role_arn: arn:aws:iam::123456789012:role/smd\n"
	oidcConnector = "identifier: {{ID}}\nname: Validation rule\ncredential_type: oidc\n" +
		"role_arn: arn:aws:iam::123456789012:role/smd\n"
)

// yamlList is a flow sequence of n distinct items prefix0, prefix1, ...
func yamlList(prefix string, n int) string {
	items := make([]string, n)
	for i := range items {
		items[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return "[" + strings.Join(items, ", ") + "]"
}

// yamlMap is a flow mapping of n distinct keys prefix0: v, ...
func yamlMap(prefix string, n int) string {
	items := make([]string, n)
	for i := range items {
		items[i] = fmt.Sprintf("%s%d: v", prefix, i)
	}
	return "{" + strings.Join(items, ", ") + "}"
}

// TestConnectorValidationRules submits, through smd connector create -f, a
// connector file that breaks one rule of manager/connector's Validate (or
// of the manager's checks around it: one default per scope, builtin
// credentials that exist), and checks that the CLI exits 2 with the field
// and the rule on stderr, prints nothing on stdout, never repeats a secret
// it was given, and that nothing was stored.
func TestConnectorValidationRules(t *testing.T) {
	t.Parallel()
	needDev(t)
	before := mustRun(t, "", "connector", "list", "-o", "json")

	const (
		plainSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYPLAINTEXTKEY"
		urlPassword = "hunter2urlpassword"
	)
	tests := []struct {
		name string
		file string   // the connector file; {{ID}} becomes the case's identifier
		want []string // stderr must contain each: the field, then (part of) the rule
		// secret, when set, must not appear on stderr nor in the dev log.
		secret string
		// invalidID: the identifier (or scope) is itself invalid, so there
		// is nothing to look up with connector get.
		invalidID bool
	}{
		// identifier
		{name: "identifier charset", file: strings.Replace(instanceRoleConnector, "{{ID}}", "bad-id", 1), invalidID: true,
			want: []string{"identifier: must start with a letter or _ and contain only letters, digits and _"}},
		{name: "identifier length", file: strings.Replace(instanceRoleConnector, "{{ID}}", strings.Repeat("a", 129), 1), invalidID: true,
			want: []string{"identifier: ", "(at most 128 characters)"}},
		{name: "identifier start", file: strings.Replace(instanceRoleConnector, "{{ID}}", "9lives", 1), invalidID: true,
			want: []string{"identifier: must start with a letter or _"}},
		{name: "identifier required", file: "name: Validation rule\ncredential_type: instance_role\n", invalidID: true,
			want: []string{"identifier: is required"}},
		// name, description, tags
		{name: "name required", file: "identifier: {{ID}}\ncredential_type: instance_role\n",
			want: []string{"name: is required"}},
		{name: "name blank", file: "identifier: {{ID}}\nname: '   '\ncredential_type: instance_role\n",
			want: []string{"name: is required"}},
		{name: "name length", file: "identifier: {{ID}}\nname: " + strings.Repeat("n", 129) + "\ncredential_type: instance_role\n",
			want: []string{"name: must be at most 128 characters"}},
		{name: "description length", file: instanceRoleConnector + "description: " + strings.Repeat("d", 1025) + "\n",
			want: []string{"description: must be at most 1024 characters"}},
		{name: "tags count", file: instanceRoleConnector + "tags: " + yamlMap("k", 51) + "\n",
			want: []string{"tags: must have at most 50 tags"}},
		{name: "tag key length", file: instanceRoleConnector + "tags: {" + strings.Repeat("k", 129) + ": v}\n",
			want: []string{`tags["` + strings.Repeat("k", 128) + `..."]: key must be at most 128 characters`}},
		{name: "tag key empty", file: instanceRoleConnector + "tags: {'': v}\n",
			want: []string{`tags[""]: key must not be empty`}},
		{name: "tag value length", file: instanceRoleConnector + "tags: {team: " + strings.Repeat("v", 257) + "}\n",
			want: []string{`tags["team"]: value must be at most 256 characters`}},
		// scope
		{name: "scope account required", file: instanceRoleConnector + "scope: {org: o}\n", invalidID: true,
			want: []string{"scope.account: is required"}},
		{name: "scope org required with project", file: instanceRoleConnector + "scope: {account: default, project: p}\n", invalidID: true,
			want: []string{"scope.org: is required when scope.project is set"}},
		{name: "scope account charset", file: instanceRoleConnector + "scope: {account: bad-acct}\n", invalidID: true,
			want: []string{"scope.account: must start with a letter or _ and contain only letters, digits and _"}},
		{name: "scope account start", file: instanceRoleConnector + "scope: {account: 9acct}\n", invalidID: true,
			want: []string{"scope.account: must start with a letter or _"}},
		{name: "scope account charset as a path", file: instanceRoleConnector + "scope: bad-acct/org\n", invalidID: true,
			want: []string{"scope: scope.account: must start with a letter or _"}},
		{name: "scope part charset", file: instanceRoleConnector + "scope: {account: default, org: bad-org}\n", invalidID: true,
			want: []string{"scope.org: must start with a letter or _ and contain only letters, digits and _"}},
		{name: "scope part charset as a path", file: instanceRoleConnector + "scope: default/org/bad-project\n", invalidID: true,
			want: []string{"scope.project: must start with a letter or _"}},
		{name: "scope too deep", file: instanceRoleConnector + "scope: a/b/c/d\n", invalidID: true,
			want: []string{"scope: must be account, account/org or account/org/project"}},
		// credential_type
		{name: "credential_type required", file: "identifier: {{ID}}\nname: Validation rule\n",
			want: []string{"credential_type: is required: access_key, instance_role, assume_role or oidc"}},
		{name: "credential_type unknown", file: "identifier: {{ID}}\nname: Validation rule\ncredential_type: password\n",
			want: []string{"credential_type: must be access_key, instance_role, assume_role or oidc"}},
		// access_key
		{name: "access_key without access_key_id", file: "identifier: {{ID}}\nname: Validation rule\ncredential_type: access_key\nsecret_access_key: builtin:dev_aws_secret_key\n",
			want: []string{"access_key_id: is required for access_key credentials"}},
		{name: "access_key without secret_access_key", file: "identifier: {{ID}}\nname: Validation rule\ncredential_type: access_key\naccess_key_id: AKIAEXAMPLE000000001\n",
			want: []string{"secret_access_key: is required for access_key credentials"}},
		{name: "secret_access_key plaintext", file: strings.Replace(accessKeyConnector, "builtin:dev_aws_secret_key", plainSecret, 1), secret: plainSecret,
			want: []string{"secret_access_key: a plaintext value is not allowed; store it with smd credential put and use builtin:NAME"}},
		{name: "secret_access_key unknown reference kind", file: strings.Replace(accessKeyConnector, "builtin:dev_aws_secret_key", "vault:"+plainSecret, 1), secret: plainSecret,
			want: []string{"secret_access_key: is not a known kind of reference"}},
		{name: "access_key_id plaintext charset", file: strings.Replace(accessKeyConnector, "AKIAEXAMPLE000000001", "AKIA-EXAMPLE", 1),
			want: []string{"access_key_id: a plaintext access key id must be at most 128 letters and digits"}},
		{name: "access_key_id env reference", file: strings.Replace(accessKeyConnector, "AKIAEXAMPLE000000001", "env:1BAD", 1),
			want: []string{"access_key_id: env:VAR needs a VAR"}},
		{name: "secret_access_key builtin name", file: strings.Replace(accessKeyConnector, "builtin:dev_aws_secret_key", "builtin:-bad", 1),
			want: []string{"secret_access_key: builtin:NAME needs a NAME that starts with a letter or _ and contains only letters, digits, _, - and ."}},
		{name: "access_key_id builtin name", file: strings.Replace(accessKeyConnector, "AKIAEXAMPLE000000001", "builtin:bad name", 1),
			want: []string{"access_key_id: builtin:NAME needs a NAME that starts with a letter or _"}},
		{name: "secret_access_key file path relative", file: strings.Replace(accessKeyConnector, "builtin:dev_aws_secret_key", "file:relative/path", 1),
			want: []string{"secret_access_key: file:PATH needs an absolute path starting with /"}},
		{name: "builtin credential missing", file: strings.Replace(accessKeyConnector, "builtin:dev_aws_secret_key", "builtin:vr_no_such_credential", 1),
			want: []string{`secret_access_key: builtin credential "vr_no_such_credential" does not exist in scope default or above`}},
		// fields of other credential types
		{name: "role_arn on access_key", file: accessKeyConnector + "role_arn: arn:aws:iam::123456789012:role/smd\n",
			want: []string{"role_arn: only used with assume_role or oidc credentials"}},
		{name: "access_key_id on instance_role", file: instanceRoleConnector + "access_key_id: AKIAEXAMPLE000000001\n",
			want: []string{"access_key_id: only used with access_key credentials"}},
		{name: "secret_access_key on instance_role", file: instanceRoleConnector + "secret_access_key: builtin:dev_aws_secret_key\n",
			want: []string{"secret_access_key: only used with access_key credentials"}},
		{name: "external_id on oidc", file: oidcConnector + "external_id: ext-1234\n",
			want: []string{"external_id: only used with assume_role credentials"}},
		{name: "oidc_connectivity on assume_role", file: assumeRoleConnector + "oidc_connectivity: delegate\n",
			want: []string{"oidc_connectivity: only used with oidc credentials"}},
		{name: "oidc_connectivity unknown", file: oidcConnector + "oidc_connectivity: sideways\n",
			want: []string{"oidc_connectivity: must be delegate or platform"}},
		{name: "assume_role_duration_seconds on instance_role", file: instanceRoleConnector + "assume_role_duration_seconds: 3600\n",
			want: []string{"assume_role_duration_seconds: only used with assume_role or oidc credentials"}},
		// role fields
		{name: "role_arn required", file: "identifier: {{ID}}\nname: Validation rule\ncredential_type: assume_role\n",
			want: []string{"role_arn: is required for assume_role and oidc credentials"}},
		{name: "role_arn format", file: strings.Replace(assumeRoleConnector, "arn:aws:iam::123456789012:role/smd", "arn:aws:iam::1234:user/smd", 1),
			want: []string{"role_arn: must be an IAM role ARN such as arn:aws:iam::123456789012:role/NAME"}},
		{name: "external_id too short", file: assumeRoleConnector + "external_id: x\n",
			want: []string{"external_id: must be 2-1224 characters of letters, digits and _+=,.@:/-"}},
		{name: "external_id charset", file: assumeRoleConnector + "external_id: 'has space'\n",
			want: []string{"external_id: must be 2-1224 characters"}},
		{name: "external_id too long", file: assumeRoleConnector + "external_id: " + strings.Repeat("e", 1225) + "\n",
			want: []string{"external_id: must be 2-1224 characters"}},
		{name: "duration too short", file: assumeRoleConnector + "assume_role_duration_seconds: 899\n",
			want: []string{"assume_role_duration_seconds: must be between 900 and 43200 seconds"}},
		{name: "duration too long", file: assumeRoleConnector + "assume_role_duration_seconds: 43201\n",
			want: []string{"assume_role_duration_seconds: must be between 900 and 43200 seconds"}},
		// region, prefix, recovery
		{name: "region format", file: instanceRoleConnector + "region: US-East-1\n",
			want: []string{"region: must be an AWS region such as us-east-1"}},
		{name: "prefix charset", file: instanceRoleConnector + "secret_name_prefix: 'dev team!'\n",
			want: []string{"secret_name_prefix: must be at most 256 characters of letters, digits and /_+=.@-"}},
		{name: "prefix length", file: instanceRoleConnector + "secret_name_prefix: " + strings.Repeat("p", 257) + "\n",
			want: []string{"secret_name_prefix: must be at most 256 characters"}},
		{name: "recovery window too short", file: instanceRoleConnector + "recovery_window_days: 6\n",
			want: []string{"recovery_window_days: must be between 7 and 30"}},
		{name: "recovery window too long", file: instanceRoleConnector + "recovery_window_days: 31\n",
			want: []string{"recovery_window_days: must be between 7 and 30"}},
		{name: "recovery window with force delete", file: instanceRoleConnector + "recovery_window_days: 7\nforce_delete_without_recovery: true\n",
			want: []string{"force_delete_without_recovery: cannot be combined with recovery_window_days"}},
		// delegate_selectors
		{name: "selector empty", file: instanceRoleConnector + "delegate_selectors: [linux, '']\n",
			want: []string{"delegate_selectors[1]: must not be empty"}},
		{name: "selector reserved prefix", file: instanceRoleConnector + "delegate_selectors: [linux, 'smd:platform']\n",
			want: []string{"delegate_selectors[1]: must not start with smd: (reserved for smdelegate's own tags)"}},
		{name: "selector reserved prefix upper case", file: instanceRoleConnector + "delegate_selectors: ['SMD:x']\n",
			want: []string{"delegate_selectors[0]: must not start with smd:"}},
		{name: "selectors too many", file: instanceRoleConnector + "delegate_selectors: " + yamlList("s", 51) + "\n",
			want: []string{"delegate_selectors: must have at most 50 selectors"}},
		{name: "selector too long", file: instanceRoleConnector + "delegate_selectors: [" + strings.Repeat("s", 129) + "]\n",
			want: []string{"delegate_selectors[0]: must be at most 128 characters"}},
		{name: "selectors with oidc platform", file: oidcConnector + "oidc_connectivity: platform\ndelegate_selectors: [linux]\n",
			want: []string{"delegate_selectors: are not used when oidc_connectivity is platform"}},
		// endpoints, kms
		{name: "endpoint_url not a URL", file: instanceRoleConnector + "endpoint_url: not a url\n",
			want: []string{"endpoint_url: must be an absolute http or https URL"}},
		{name: "endpoint_url scheme", file: instanceRoleConnector + "endpoint_url: ftp://vpce.example.com\n",
			want: []string{"endpoint_url: must be an absolute http or https URL"}},
		{name: "endpoint_url with credentials", file: instanceRoleConnector + "endpoint_url: https://user:" + urlPassword + "@vpce.example.com\n", secret: urlPassword,
			want: []string{"endpoint_url: must not carry credentials"}},
		{name: "sts_endpoint_url not a URL", file: instanceRoleConnector + "sts_endpoint_url: /relative\n",
			want: []string{"sts_endpoint_url: must be an absolute http or https URL"}},
		{name: "kms_key_id length", file: instanceRoleConnector + "kms_key_id: " + strings.Repeat("k", 2049) + "\n",
			want: []string{"kms_key_id: must be at most 2048 characters"}},
		// the manager's checks beyond Validate
		{name: "default already taken", file: instanceRoleConnector + "default: true\n",
			want: []string{`default: at most one default connector per scope: connector "dev_aws" is already the default of default`}},
		// the file itself
		{name: "unknown field", file: instanceRoleConnector + "rolearn: arn:aws:iam::123456789012:role/smd\n",
			want: []string{`unknown field "rolearn"`}},
		{name: "empty file", file: "",
			want: []string{"the file is empty: it holds no connector"}},
		{name: "only comments", file: "# identifier: {{ID}}\n\n# name: Validation rule\n",
			want: []string{"the file is empty: it holds no connector"}},
		{name: "null document", file: "---\n~\n",
			want: []string{"the file is empty: it holds no connector"}},
		{name: "several problems at once", file: instanceRoleConnector + "region: moon\nrecovery_window_days: 3\n",
			want: []string{"region: must be an AWS region", "recovery_window_days: must be between 7 and 30"}},
	}
	dir := t.TempDir()
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			id := fmt.Sprintf("vr_%02d", i)
			file := filepath.Join(dir, id+".yaml")
			if err := os.WriteFile(file, []byte(strings.ReplaceAll(tt.file, "{{ID}}", id)), 0o600); err != nil {
				t.Fatal(err)
			}
			r := run(t, "", "connector", "create", "-f", file)
			if r.code != exitInvalid {
				t.Errorf("smd connector create: exit %d, want %d\n%v", r.code, exitInvalid, r)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("smd connector create: stderr = %q, want it to contain %q", r.stderr, w)
				}
			}
			if r.stdout != "" {
				t.Errorf("smd connector create: stdout = %q, want it empty", r.stdout)
			}
			if tt.secret != "" {
				if strings.Contains(r.stderr, tt.secret) {
					t.Errorf("smd connector create: stderr repeats the secret: %q", r.stderr)
				}
				if strings.Contains(readDevLog(t), tt.secret) {
					t.Errorf("the smd dev log holds the secret of the refused connector")
				}
			}
			if !tt.invalidID {
				if g := run(t, "", "connector", "get", id); g.code != exitNotFound {
					t.Errorf("smd connector get %s: exit %d, want %d (nothing stored)\n%v", id, g.code, exitNotFound, g)
					run(t, "", "connector", "delete", id)
				}
			}
			if after := mustRun(t, "", "connector", "list", "-o", "json"); after != before {
				t.Errorf("smd connector list changed:\nbefore: %s\nafter: %s", before, after)
			}
		})
	}
}
