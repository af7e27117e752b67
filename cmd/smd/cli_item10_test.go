package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/smdelegate/smdelegate/internal/ids"
)

// TestItem10CLIRefusesBeforeSending runs the CLI as an operator would with
// malformed input, against the shared smd dev: text that is not UTF-8 in
// an argument, a flag or a value (which gRPC could not marshal:
// "Internal: error while marshaling"), secret names, tags and options the
// delegate would refuse, credential names, connector identifiers, and
// connector files with values of the wrong YAML type. Each exits 2 with
// the flag, argument or YAML key as the operator wrote it, and nothing
// reaches AWS or the store.
func TestItem10CLIRefusesBeforeSending(t *testing.T) {
	t.Parallel()
	needDev(t)
	mark := "item10" + ids.Random()[:10]
	dir := t.TempDir()
	valueFile := filepath.Join(dir, "value")
	if err := os.WriteFile(valueFile, []byte("v"), 0o600); err != nil {
		t.Fatal(err)
	}
	connectorFile := func(body string) string {
		f := filepath.Join(dir, ids.Random()+".yaml")
		if err := os.WriteFile(f, []byte("identifier: "+mark+"\nname: n\ncredential_type: instance_role\n"+body), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	tests := []struct {
		name  string
		stdin string
		args  []string
		want  string
	}{
		{"name not UTF-8", "", []string{"secret", "create", mark + "\xff", "--value-file", valueFile}, "NAME: must be UTF-8 text"},
		{"flag not UTF-8", "", []string{"secret", "create", mark, "--value-file", valueFile, "--description", "d\xfe"}, "--description: must be UTF-8 text"},
		{"tag not UTF-8", "", []string{"secret", "create", mark, "--value-file", valueFile, "--tag", "team=\xff"}, "--tag: must be UTF-8 text"},
		{"value not UTF-8", "v\xff\xfe", []string{"secret", "create", mark}, "value: must be UTF-8 text; give a binary value in base64 with --binary"},
		{"name charset", "", []string{"secret", "create", mark + " x", "--value-file", valueFile}, "NAME: must be 1-512 characters of letters, digits and /_+=.@-"},
		{"tag key", "", []string{"secret", "create", mark, "--value-file", valueFile, "--tag", "aws:x=1"}, `--tag "aws:x": key must not start with aws:`},
		{"description length", "", []string{"secret", "upsert", mark, "--value-file", valueFile, "--description", strings.Repeat("d", 2049)}, "--description: must be at most 2048 characters"},
		{"recovery window", "", []string{"secret", "delete", mark, "--recovery-window-days", "3"}, "--recovery-window-days: must be 7-30 days"},
		{"version id", "", []string{"secret", "get", mark, "--version-id", "short"}, "--version-id: must be 32-64 characters"},
		{"tag remove key", "", []string{"secret", "tag", mark, "--remove", "aws:x"}, "--remove[0]: key must not start with aws:"},
		{"connector flag", "", []string{"secret", "describe", mark, "--connector", "bad-id"}, "--connector: must start with a letter or _"},
		{"credential name", "", []string{"credential", "put", mark + " x", "--value-file", valueFile}, "NAME: must start with a letter or _ and contain only letters, digits, _, - and ."},
		{"credential value not UTF-8", "k\xff", []string{"credential", "put", mark}, "value: must be UTF-8 text"},
		{"connector identifier", "", []string{"connector", "get", "bad-" + mark}, "ID: must start with a letter or _"},
		{"connector file int type", "", []string{"connector", "create", "-f", connectorFile("recovery_window_days: seven\n")}, "recovery_window_days: must be a whole number, not text"},
		{"connector file tag type", "", []string{"connector", "create", "-f", connectorFile("tags: {team: 5}\n")}, `tags["team"]: must be text, not a number`},
		{"connector file list type", "", []string{"connector", "create", "-f", connectorFile("delegate_selectors: linux\n")}, "delegate_selectors: must be a list"},
		{"connector file scope part type", "", []string{"connector", "create", "-f", connectorFile("scope: {account: 5}\n")}, "scope.account: must be text, not a number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := run(t, tt.stdin, tt.args...)
			if r.code != exitInvalid || !strings.Contains(r.stderr, tt.want) || r.stdout != "" {
				t.Errorf("smd %s = %v, want exit %d with %q and no output", strings.Join(tt.args, " "), r, exitInvalid, tt.want)
			}
			if strings.Contains(r.stderr, "Internal") || strings.Contains(r.stderr, "marshal") {
				t.Errorf("smd %s: %q speaks of gRPC, not of the operator's input", strings.Join(tt.args, " "), r.stderr)
			}
		})
	}
	// Nothing reached AWS or the store: checked once every case has run
	// (the parallel subtests end before the parent's cleanups).
	t.Cleanup(func() {
		out, err := devAWS(t).ListSecrets(context.Background(), &secretsmanager.ListSecretsInput{})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range out.SecretList {
			if strings.Contains(*s.Name, mark) {
				t.Errorf("AWS holds secret %q", *s.Name)
			}
		}
		if r := run(t, "", "connector", "get", mark); r.code != exitNotFound {
			t.Errorf("smd connector get %s = %v, want not found", mark, r)
		}
		if out := mustRun(t, "", "credential", "list"); strings.Contains(out, mark) {
			t.Errorf("smd credential list holds %s:\n%s", mark, out)
		}
	})
}
