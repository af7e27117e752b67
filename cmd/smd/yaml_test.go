package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// TestItem10ConnectorFileTypes: a connector file whose value has the
// wrong YAML type is refused naming the key as the file writes it
// (snake_case, with its path), never protojson's JSON name
// (recoveryWindowDays) nor no field; a well-typed file reads every kind
// of field, and what smd connector get -o json prints reads back as the
// same connector.
func TestItem10ConnectorFileTypes(t *testing.T) {
	t.Parallel()
	const base = "identifier: t\nname: Types\ncredential_type: instance_role\n"
	dir := t.TempDir()
	read := func(t *testing.T, body string) (*delegatev1.Connector, error) {
		t.Helper()
		f := filepath.Join(dir, strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())+".yaml")
		if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return readConnectorFile(f)
	}
	tests := []struct{ name, yaml, want string }{
		{"int as a word", "recovery_window_days: seven\n", "recovery_window_days: must be a whole number, not text"},
		{"int as a fraction", "recovery_window_days: 7.5\n", "recovery_window_days: must be a whole number, not 7.5"},
		{"int out of range", "assume_role_duration_seconds: 99999999999\n", "assume_role_duration_seconds: must be a whole number from"},
		{"int as a list", "recovery_window_days: [7]\n", "recovery_window_days: must be a whole number, not a list"},
		{"bool as a word", "default: sure\n", "default: must be true or false, not text"},
		{"string as a mapping", "description: {a: b}\n", "description: must be text, not a mapping"},
		{"string as a number", "region: 1\n", "region: must be text, not a number"},
		{"tags as a list", "tags: [a, b]\n", "tags: must be a mapping"},
		{"tag value as a number", "tags: {team: 5}\n", `tags["team"]: must be text, not a number`},
		{"tag value as a list", "tags: {team: [a]}\n", `tags["team"]: must be text, not a list`},
		{"selectors as text", "delegate_selectors: linux\n", "delegate_selectors: must be a list"},
		{"selector as a mapping", "delegate_selectors: [linux, {a: b}]\n", "delegate_selectors[1]: must be text, not a mapping"},
		{"scope part as a number", "scope: {account: 5}\n", "scope.account: must be text, not a number"},
		{"scope as a list", "scope: [a]\n", "scope: must be a mapping"},
		{"unknown nested field", "scope: {account: a, team: b}\n", `unknown field "scope.team"`},
		{"created_at not a time", "created_at: yesterday\n", "created_at: must be an RFC 3339 time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			body := base + tt.yaml
			_, err := read(t, body)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("readConnectorFile(%q) = %v, want %q", tt.yaml, err, tt.want)
			}
			if ce := (*codedError)(nil); !errors.As(err, &ce) || ce.code != exitInvalid {
				t.Errorf("readConnectorFile error %v is not an invalid-input error (exit %d)", err, exitInvalid)
			}
			for _, camel := range []string{"recoveryWindowDays", "assumeRoleDurationSeconds", "delegateSelectors", "createdAt"} {
				if strings.Contains(err.Error(), camel) {
					t.Errorf("error %q names the JSON field %s", err, camel)
				}
			}
		})
	}
	t.Run("every kind of field", func(t *testing.T) {
		t.Parallel()
		want := &delegatev1.Connector{
			Identifier: "t", Name: "Types", Description: "d", Tags: map[string]string{"team": "pay", "cost": "1234"},
			Scope: &delegatev1.Scope{Account: "a", Org: "o"}, CredentialType: delegatev1.CredentialType_ASSUME_ROLE,
			RoleArn: "arn:aws:iam::123456789012:role/x", AssumeRoleDurationSeconds: 3600, Default: true,
			RecoveryWindowDays: 7, DelegateSelectors: []string{"linux", "eu"},
		}
		got, err := read(t, "identifier: t\nname: Types\ndescription: d\ntags: {team: pay, cost: '1234'}\nscope: a/o\n"+
			"credential_type: Assume_Role\nrole_arn: arn:aws:iam::123456789012:role/x\nassume_role_duration_seconds: 3600\n"+
			"default: true\nrecovery_window_days: 7\ndelegate_selectors:\n  - linux\n  - eu\nregion:\n")
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, want) {
			t.Errorf("readConnectorFile = %v, want %v", got, want)
		}
		want.CreatedAt = got.CreatedAt
		printed, err := (protojson.MarshalOptions{UseProtoNames: true}).Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		again, err := read(t, string(printed))
		if err != nil || !proto.Equal(again, want) {
			t.Errorf("reading smd connector get -o json back = %v, %v; want %v", again, err, want)
		}
	})
}
