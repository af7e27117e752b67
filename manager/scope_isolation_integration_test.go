package manager_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/smdelegate/smdelegate/internal/awsemu"
	"github.com/smdelegate/smdelegate/manager/connector"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// TestScopeIsolation is done-means #3 of issue 6: two accounts, each with
// an account delegate and a project delegate; 500 secret tasks through
// four connectors at different scopes (account A, a project of A, account
// B, a project of B) against the AWS emulator. Every task ran on a
// delegate whose token's scope contains the connector's, as the manager
// records it and as each agent saw it; every delegate ran some; and
// account B's connector is invisible to account A's operator token.
func TestScopeIsolation(t *testing.T) {
	t.Parallel()
	const (
		keyA   = "AKIAACCOUNTA0000001"
		keyB   = "AKIAACCOUNTB0000001"
		total  = 500
		seed   = "seed"
		worker = 16
	)
	emu, emuURL := mustEmu(t, awsemu.Options{Region: emuRegion, Credentials: map[string]string{
		keyA: "secret-key-of-account-a-000000000000000", keyB: "secret-key-of-account-b-000000000000000"}})
	srv := mustManager(t, withScopedTokens)

	// What each agent ran, and the scope of the connector each task it was
	// sent names: the delegate's side of the rule.
	var mu sync.Mutex // guards ranOn, violations
	ranOn := map[string]string{}
	var violations []string
	agents := map[string]scopedToken{"dlg-a": delegateA, "dlg-a-proj1": delegateAP, "dlg-b": delegateB, "dlg-b-proj1": delegateBP}
	for name, tok := range agents {
		startAgentWith(t, srv.Addr(), tok, name, 4, func(_ context.Context, task *delegatev1.Task) {
			got := task.GetPayload().GetConnector().GetScope()
			mu.Lock()
			defer mu.Unlock()
			ranOn[task.GetId()] = name
			if !within(tok.scope, got) {
				violations = append(violations, fmt.Sprintf("%s (scope %s) was sent task %s of connector scope %s",
					name, connector.ScopeKey(tok.scope), task.GetId(), connector.ScopeKey(got)))
			}
		})
	}
	admin, adminCtx := operator(t, srv.Addr())
	waitDelegates(t, admin, adminCtx, len(agents))

	// Each account's operator stores its key and makes its connectors.
	type conn struct {
		ref   *delegatev1.ConnectorRef
		c     delegatev1.ManagerServiceClient
		ctx   context.Context
		owner string
	}
	var conns []conn
	for _, acct := range []struct {
		op       scopedToken
		key      string
		name     string
		scopes   []*delegatev1.Scope
		prefixes []string
	}{
		{operatorA, keyA, "a", []*delegatev1.Scope{scopeA, scopeAP}, []string{"a", "a-proj1"}},
		{operatorB, keyB, "b", []*delegatev1.Scope{scopeB, scopeBP}, []string{"b", "b-proj1"}},
	} {
		c, ctx := operatorAs(t, srv.Addr(), acct.op)
		secret := "secret-key-of-account-" + acct.name + "-000000000000000"
		if _, err := c.PutCredential(ctx, &delegatev1.PutCredentialRequest{Name: "aws_key", Value: []byte(secret)}); err != nil {
			t.Fatalf("PutCredential as %s: %v", connector.ScopeKey(acct.op.scope), err)
		}
		for i, sc := range acct.scopes {
			id := "aws_" + acct.name
			if _, err := c.CreateConnector(ctx, &delegatev1.CreateConnectorRequest{Connector: &delegatev1.Connector{
				Identifier: id, Name: id, Scope: sc, CredentialType: delegatev1.CredentialType_ACCESS_KEY,
				AccessKeyId: acct.key, SecretAccessKey: "builtin:aws_key", SecretNamePrefix: acct.prefixes[i],
				Region: emuRegion, EndpointUrl: emuURL, StsEndpointUrl: emuURL,
			}}); err != nil {
				t.Fatalf("CreateConnector(%s in %s): %v", id, connector.ScopeKey(sc), err)
			}
			conns = append(conns, conn{ref: &delegatev1.ConnectorRef{Scope: sc, Identifier: id}, c: c, ctx: ctx, owner: acct.name})
		}
	}

	// 500 tasks: a seed secret per connector, then creates (async, stored)
	// and gets (sync) spread over the four connectors from 16 callers.
	type result struct {
		conn int
		info *delegatev1.TaskInfo
	}
	results := make([]result, 0, total)
	var rmu sync.Mutex // guards results
	run := func(i int) error {
		k := i % len(conns)
		cn := conns[k]
		var info *delegatev1.TaskInfo
		var err error
		switch {
		case i < len(conns) || (i/len(conns))%5 == 0:
			name := seed
			if i >= len(conns) {
				name = fmt.Sprintf("s-%d", i)
			}
			info, err = cn.c.Secret(cn.ctx, &delegatev1.SecretRequest{Connector: cn.ref, Op: &delegatev1.SecretRequest_Create{
				Create: &delegatev1.CreateSecretOp{Name: name, Value: &delegatev1.SecretValue{Value: &delegatev1.SecretValue_StringValue{StringValue: "v" + name}}}}})
		default:
			info, err = cn.c.Secret(cn.ctx, &delegatev1.SecretRequest{Connector: cn.ref, Op: &delegatev1.SecretRequest_Get{
				Get: &delegatev1.GetSecretOp{Name: seed}}})
		}
		if err != nil {
			return fmt.Errorf("task %d on %s: %w", i, connector.ScopeKey(cn.ref.GetScope()), err)
		}
		if info.GetOutcome().GetCode() != delegatev1.Code_OK {
			return fmt.Errorf("task %d on %s: %v: %s", i, connector.ScopeKey(cn.ref.GetScope()), info.GetOutcome().GetCode(), info.GetOutcome().GetMessage())
		}
		rmu.Lock()
		results = append(results, result{k, info})
		rmu.Unlock()
		return nil
	}
	for i := range len(conns) { // the seeds first: the gets read them
		if err := run(i); err != nil {
			t.Fatal(err)
		}
	}
	next := make(chan int)
	errs := make(chan error, total)
	var wg sync.WaitGroup
	for range worker {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := run(i); err != nil {
					errs <- err
				}
			}
		}()
	}
	for i := len(conns); i < total; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}

	// The manager's record: every task ran on a delegate whose scope
	// contains its connector's, and carries that scope.
	perDelegate := map[string]int{}
	perConn := map[string]map[string]int{}
	for _, r := range results {
		cn := conns[r.conn]
		dg := r.info.GetDelegate()
		perDelegate[dg]++
		key := connector.ScopeKey(cn.ref.GetScope())
		if perConn[key] == nil {
			perConn[key] = map[string]int{}
		}
		perConn[key][dg]++
		tok, ok := agents[dg]
		if !ok || !within(tok.scope, cn.ref.GetScope()) {
			t.Errorf("task %s of connector scope %s ran on %q, whose scope does not contain it", r.info.GetId(), key, dg)
		}
		if got := r.info.GetScope(); connector.ScopeKey(got) != key {
			t.Errorf("task %s scope = %q, want its connector's %q", r.info.GetId(), connector.ScopeKey(got), key)
		}
		mu.Lock()
		if ranOn[r.info.GetId()] != dg {
			t.Errorf("task %s: the manager says it ran on %q, the agents say %q", r.info.GetId(), dg, ranOn[r.info.GetId()])
		}
		mu.Unlock()
	}
	t.Logf("%d tasks per delegate: %v; per connector scope: %v", len(results), perDelegate, perConn)
	if len(results) != total {
		t.Errorf("%d tasks completed, want %d", len(results), total)
	}
	for name := range agents {
		if perDelegate[name] == 0 {
			t.Errorf("delegate %s ran no task (per delegate: %v)", name, perDelegate)
		}
	}
	mu.Lock()
	for _, v := range violations {
		t.Error(v)
	}
	mu.Unlock()
	// Each account's key signed only its own connectors' calls.
	for _, r := range emu.Requests() {
		if r.Service == "secretsmanager" && r.AccessKeyID != keyA && r.AccessKeyID != keyB {
			t.Errorf("%s signed with %q, want one of the accounts' keys", r.Action, r.AccessKeyID)
		}
	}

	// Account B's connector is invisible to account A's operator token:
	// not found by scope, by identifier from A's own scope, in lists, or
	// to run a task; and its tasks cannot be read.
	opA, ctxA := operatorAs(t, srv.Addr(), operatorA)
	bRef := conns[2].ref
	_, err := opA.GetConnector(ctxA, &delegatev1.GetConnectorRequest{Ref: bRef})
	wantCode(t, "GetConnector(B's connector) as A", err, codes.NotFound)
	_, err = opA.GetConnector(ctxA, &delegatev1.GetConnectorRequest{Ref: &delegatev1.ConnectorRef{Identifier: "aws_b"}})
	wantCode(t, "GetConnector(aws_b, no scope) as A", err, codes.NotFound)
	_, err = opA.Secret(ctxA, &delegatev1.SecretRequest{Connector: bRef, Op: &delegatev1.SecretRequest_Get{Get: &delegatev1.GetSecretOp{Name: seed}}})
	wantCode(t, "Secret(get through B's connector) as A", err, codes.NotFound)
	for _, sc := range []*delegatev1.Scope{nil, scopeB, scopeBP} {
		r, err := opA.ListConnectors(ctxA, &delegatev1.ListConnectorsRequest{Scope: sc})
		if err != nil {
			t.Fatalf("ListConnectors(%v) as A: %v", sc, err)
		}
		for _, c := range r.GetConnectors() {
			if !within(scopeA, c.GetScope()) {
				t.Errorf("ListConnectors(%v) as A lists %s in %s", sc, c.GetIdentifier(), connector.ScopeKey(c.GetScope()))
			}
		}
	}
	tl, err := opA.ListTasks(ctxA, &delegatev1.ListTasksRequest{Limit: 1000})
	if err != nil {
		t.Fatalf("ListTasks as A: %v", err)
	}
	if len(tl.GetTasks()) == 0 {
		t.Error("ListTasks as A lists nothing, want A's creates")
	}
	for _, task := range tl.GetTasks() {
		if !within(scopeA, task.GetScope()) {
			t.Errorf("ListTasks as A lists task %s of scope %s", task.GetId(), connector.ScopeKey(task.GetScope()))
		}
	}
	for _, r := range results {
		if within(scopeA, conns[r.conn].ref.GetScope()) {
			continue
		}
		_, err := opA.GetTask(ctxA, &delegatev1.GetTaskRequest{Id: r.info.GetId()})
		wantCode(t, "GetTask(a task of B) as A", err, codes.NotFound)
		break
	}
	for name := range delegateNames(t, opA, ctxA) {
		if tok := agents[name]; !within(scopeA, tok.scope) {
			t.Errorf("ListDelegates as A lists %s of scope %s", name, connector.ScopeKey(tok.scope))
		}
	}
}
