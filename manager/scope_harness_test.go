package manager_test

import (
	"context"
	"testing"

	"github.com/smdelegate/smdelegate/agent"
	"github.com/smdelegate/smdelegate/manager"
	"github.com/smdelegate/smdelegate/manager/connector"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// Two accounts, each with an account-wide and a project delegate token
// and operator token. The unscoped delegateToken and operatorToken of
// mustManager stay valid beside them.
var (
	scopeA  = &delegatev1.Scope{Account: "acct_a"}
	scopeAP = &delegatev1.Scope{Account: "acct_a", Org: "org1", Project: "proj1"}
	scopeB  = &delegatev1.Scope{Account: "acct_b"}
	scopeBP = &delegatev1.Scope{Account: "acct_b", Org: "org1", Project: "proj1"}
)

// scopedToken is one token of withScopedTokens.
type scopedToken struct {
	token string
	scope *delegatev1.Scope
}

var (
	delegateA  = scopedToken{"delegate-token-acct-a", scopeA}
	delegateAP = scopedToken{"delegate-token-acct-a-proj1", scopeAP}
	delegateB  = scopedToken{"delegate-token-acct-b", scopeB}
	delegateBP = scopedToken{"delegate-token-acct-b-proj1", scopeBP}
	operatorA  = scopedToken{"operator-token-acct-a", scopeA}
	operatorAP = scopedToken{"operator-token-acct-a-proj1", scopeAP}
	operatorB  = scopedToken{"operator-token-acct-b", scopeB}
)

// withScopedTokens adds the scoped tokens above to a manager's config.
func withScopedTokens(c *manager.Config) {
	for _, tk := range []scopedToken{delegateA, delegateAP, delegateB, delegateBP} {
		c.Auth.DelegateTokens = append(c.Auth.DelegateTokens, manager.TokenConfig{
			Name: "d-" + connector.ScopeKey(tk.scope), SHA256: manager.HashToken(tk.token), Scope: connector.ScopeKey(tk.scope)})
	}
	for _, tk := range []scopedToken{operatorA, operatorAP, operatorB} {
		c.Auth.OperatorTokens = append(c.Auth.OperatorTokens, manager.TokenConfig{
			Name: "o-" + connector.ScopeKey(tk.scope), SHA256: manager.HashToken(tk.token), Scope: connector.ScopeKey(tk.scope)})
	}
}

// startAgentWith runs an agent that can run pings and secret tasks, with
// the given delegate token, until the test ends.
func startAgentWith(t testing.TB, addr string, tok scopedToken, name string, concurrency int, onRun func(context.Context, *delegatev1.Task)) *recorder {
	t.Helper()
	cfg := agent.DefaultConfig()
	cfg.Manager = addr
	cfg.Token = tok.token
	cfg.TLS.Insecure = true
	cfg.Name = name
	cfg.Concurrency = concurrency
	log := testLogger(t)
	return runTestAgent(t, cfg, log, secretTasks(name, log), onRun)
}

// operatorAs returns an API client and a context carrying tok.
func operatorAs(t testing.TB, addr string, tok scopedToken) (delegatev1.ManagerServiceClient, context.Context) {
	t.Helper()
	c, _ := operator(t, addr)
	return c, metadataCtx(t, tok.token)
}

// within reports whether scope s is inner or below it (the rule written
// out again for the tests, on the scopes' text).
func within(inner, s *delegatev1.Scope) bool {
	a, b := connector.ScopeKey(inner), connector.ScopeKey(s)
	return a == "" || b == a || len(b) > len(a) && b[:len(a)+1] == a+"/"
}

// delegateNames lists the delegates c sees with ctx's token.
func delegateNames(t testing.TB, c delegatev1.ManagerServiceClient, ctx context.Context) map[string]*delegatev1.DelegateInfo {
	t.Helper()
	r, err := c.ListDelegates(ctx, &delegatev1.ListDelegatesRequest{})
	if err != nil {
		t.Fatalf("ListDelegates: %v", err)
	}
	out := map[string]*delegatev1.DelegateInfo{}
	for _, d := range r.GetDelegates() {
		out[d.GetName()] = d
	}
	return out
}
