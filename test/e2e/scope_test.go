package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestScopesProcess (issue 6, process level): token scopes set in
// manager.yaml confine delegates and operators. Account A's operator,
// through the CLI, lists only A's delegates (with their scope), pings
// only them, cannot act in account B (exit 5) and does not find B's
// connector (exit 3); the unscoped operator sees both accounts.
func TestScopesProcess(t *testing.T) {
	delegateA, delegateB := randomToken(t, "smdd_a_"), randomToken(t, "smdd_b_")
	operatorA := randomToken(t, "smdo_a_")
	m := startManager(t, managerOpts{QueueTimeout: 2 * time.Second, Tokens: []tokenOpt{
		{Kind: "delegate", Token: delegateA, Scope: "acct_a"},
		{Kind: "delegate", Token: delegateB, Scope: " acct_b / org1 / proj1 "},
		{Kind: "operator", Token: operatorA, Scope: "acct_a"},
	}})
	startAgent(t, m, "agent-a", agentOpts{Token: delegateA})
	startAgent(t, m, "agent-b", agentOpts{Token: delegateB})

	asA := func(args ...string) (string, string, int) { return smdCLIAs(t, m, operatorA, args...) }

	t.Run("delegate list", func(t *testing.T) {
		stdout, stderr, code := asA("delegate", "list", "-o", "json")
		if code != 0 {
			t.Fatalf("delegate list as A: exit %d\n%s", code, stderr)
		}
		var resp struct {
			Delegates []struct {
				Name  string            `json:"name"`
				Scope map[string]string `json:"scope"`
			} `json:"delegates"`
		}
		if err := json.Unmarshal([]byte(stdout), &resp); err != nil {
			t.Fatalf("delegate list -o json: %v\n%s", err, stdout)
		}
		if len(resp.Delegates) != 1 || resp.Delegates[0].Name != "agent-a" || resp.Delegates[0].Scope["account"] != "acct_a" {
			t.Errorf("delegate list as A = %+v, want only agent-a of scope acct_a", resp.Delegates)
		}
		stdout, _, _ = smdCLI(t, m, "delegate", "list")
		for _, want := range [][]string{{"agent-a", "acct_a "}, {"agent-b", "acct_b/org1/proj1"}} {
			if countLines(stdout, want...) != 1 {
				t.Errorf("delegate list as the unscoped operator: no row with %q:\n%s", want, stdout)
			}
		}
		if !strings.Contains(stdout, "SCOPE") {
			t.Errorf("delegate list has no SCOPE column:\n%s", stdout)
		}
	})

	t.Run("pings stay in the scope", func(t *testing.T) {
		for i := range 10 {
			stdout, stderr, code := asA("delegate", "ping")
			if code != 0 || !strings.HasPrefix(stdout, "pong from agent-a ") {
				t.Fatalf("ping #%d as A: exit %d, %q, %q; want a pong from agent-a", i, code, stdout, stderr)
			}
		}
		_, stderr, code := asA("delegate", "ping", "--scope", "acct_b/org1/proj1")
		if code != 5 || !strings.Contains(stderr, "confined to scope acct_a") {
			t.Errorf("ping --scope acct_b/org1/proj1 as A: exit %d, %q; want 5, naming the token's scope", code, stderr)
		}
		// Account B's project delegate serves nothing of A: with only it
		// matching the selector, the ping finds no eligible delegate, and
		// the message does not name it.
		_, stderr, code = asA("delegate", "ping", "--selector", "agent-b")
		if code != 4 || !strings.Contains(stderr, "scope is acct_a or above") || strings.Contains(stderr, "acct_b") {
			t.Errorf("ping --selector agent-b as A: exit %d, %q; want 4 naming scope acct_a and not account B", code, stderr)
		}
	})

	t.Run("connectors of another account", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "b.yaml")
		body := "identifier: aws_b\nname: B\nscope: acct_b\ncredential_type: instance_role\nregion: eu-west-1\n"
		if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		_, stderr, code := asA("connector", "create", "-f", file)
		if code != 5 || !strings.Contains(stderr, "a scoped token acts only at its scope or below") {
			t.Errorf("connector create in acct_b as A: exit %d, %q; want 5 naming the rule", code, stderr)
		}
		if _, stderr, code := smdCLI(t, m, "connector", "create", "-f", file); code != 0 {
			t.Fatalf("connector create in acct_b as the unscoped operator: exit %d\n%s", code, stderr)
		}
		if _, stderr, code := asA("connector", "get", "aws_b", "--scope", "acct_b"); code != 3 {
			t.Errorf("connector get aws_b --scope acct_b as A: exit %d, %q; want 3 (not found)", code, stderr)
		}
		if stdout, _, code := asA("connector", "list", "--scope", "acct_b"); code != 0 || strings.Contains(stdout, "aws_b") {
			t.Errorf("connector list --scope acct_b as A: exit %d\n%s\nwant no aws_b", code, stdout)
		}
		if stdout, _, code := smdCLI(t, m, "connector", "list", "--scope", "acct_b"); code != 0 || !strings.Contains(stdout, "aws_b") {
			t.Errorf("connector list --scope acct_b as the unscoped operator: exit %d\n%s\nwant aws_b", code, stdout)
		}
	})
}
