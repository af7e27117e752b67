package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestWrongToken (Done 7): an agent whose token the manager refuses stops
// at once with a non-zero exit code and a message naming the token
// problem, and neither its output nor the manager's log holds the token.
func TestWrongToken(t *testing.T) {
	m := startManager(t, managerOpts{})
	for _, tc := range []struct {
		name     string
		token    string
		tokenEnv bool
		wantMsg  string
	}{
		{name: "unknown token in config", token: randomToken(t, "smdd_wrong_"), wantMsg: "token"},
		{name: "unknown token in SMD_TOKEN", token: randomToken(t, "smdd_wrong_"), tokenEnv: true, wantMsg: "token"},
		{name: "operator token", token: m.OperatorToken, wantMsg: "operator token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			a := startAgent(t, m, "wrong-token", agentOpts{Token: tc.token, TokenEnv: tc.tokenEnv, NoWait: true})
			// Refusals are not retried: the agent gives up after its
			// first attempt, not after a backoff schedule.
			code := a.wait(t, 10*time.Second)
			took := time.Since(start)
			out := a.log()
			if code == 0 {
				t.Errorf("agent exit code = 0, want non-zero\n%s", out)
			}
			if code != 5 {
				t.Errorf("agent exit code = %d, want 5 (token refused)", code)
			}
			if !strings.Contains(strings.ToLower(out), tc.wantMsg) {
				t.Errorf("agent output does not mention %q:\n%s", tc.wantMsg, out)
			}
			if strings.Contains(out, tc.token) {
				t.Errorf("agent output contains the token %q:\n%s", tc.token, out)
			}
			if n := countLines(out, "reconnecting"); n > 0 {
				t.Errorf("agent retried %d times after the token was refused:\n%s", n, out)
			}
			t.Logf("agent exited with %d after %s: %s", code, took.Round(time.Millisecond), tail(out, 1))
			if log := m.proc.log(); strings.Contains(log, tc.token) {
				t.Errorf("manager log contains the token %q", tc.token)
			}
		})
	}
	// The manager still serves a correct agent.
	startAgent(t, m, "right-token", agentOpts{})
}
