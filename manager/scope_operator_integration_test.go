package manager_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/smdelegate/smdelegate/manager/connector"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// wantDenied checks err is PermissionDenied and its message says why.
func wantDenied(t *testing.T, call string, err error, says ...string) {
	t.Helper()
	wantCode(t, call, err, codes.PermissionDenied)
	for _, s := range says {
		if msg := status.Convert(err).Message(); !strings.Contains(msg, s) {
			t.Errorf("%s message %q does not contain %q", call, msg, s)
		}
	}
}

func instanceRoleConnector(id string, sc *delegatev1.Scope) *delegatev1.Connector {
	return &delegatev1.Connector{Identifier: id, Name: id, Scope: sc,
		CredentialType: delegatev1.CredentialType_INSTANCE_ROLE, Region: "eu-west-1"}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestScopedOperatorAPI checks what a scoped operator token sees and may
// do: requests without a scope work in the token's scope; connectors,
// credentials, tasks and delegates outside it are NotFound or absent,
// as if they did not exist; creating outside it is PermissionDenied
// naming the rule; connector lookups and credential references stop at
// the token's scope; pings take the token's scope; delegates are listed
// when their scope overlaps the token's, with only the running tasks it
// may see; and only delegates at or below its scope may be tagged.
func TestScopedOperatorAPI(t *testing.T) {
	t.Parallel()
	srv := mustManager(t, withScopedTokens)
	startAgentWith(t, srv.Addr(), delegateA, "dlg-a", 4, nil)
	startAgentWith(t, srv.Addr(), delegateAP, "dlg-a-proj1", 4, nil)
	startAgentWith(t, srv.Addr(), delegateB, "dlg-b", 4, nil)
	startAgentWith(t, srv.Addr(), scopedToken{token: delegateToken}, "dlg-any", 4, nil)
	admin, adminCtx := operator(t, srv.Addr())
	waitDelegates(t, admin, adminCtx, 4)
	opA, ctxA := operatorAs(t, srv.Addr(), operatorA)
	opAP, ctxAP := operatorAs(t, srv.Addr(), operatorAP)
	opB, ctxB := operatorAs(t, srv.Addr(), operatorB)

	// Setup through each token, with and without an explicit scope.
	created, err := opA.CreateConnector(ctxA, &delegatev1.CreateConnectorRequest{Connector: instanceRoleConnector("aws_a", nil)})
	if err != nil {
		t.Fatalf("CreateConnector(aws_a, no scope) as A: %v", err)
	}
	if got := connector.ScopeKey(created.GetScope()); got != "acct_a" {
		t.Errorf("CreateConnector(no scope) as A made it in %q, want the token's scope acct_a", got)
	}
	if _, err := opA.PutCredential(ctxA, &delegatev1.PutCredentialRequest{Name: "cred_a", Value: []byte("x")}); err != nil {
		t.Fatalf("PutCredential(cred_a) as A: %v", err)
	}
	if _, err := opB.CreateConnector(ctxB, &delegatev1.CreateConnectorRequest{Connector: instanceRoleConnector("aws_b", nil)}); err != nil {
		t.Fatalf("CreateConnector(aws_b) as B: %v", err)
	}
	if _, err := opB.PutCredential(ctxB, &delegatev1.PutCredentialRequest{Name: "cred_b", Value: []byte("y")}); err != nil {
		t.Fatalf("PutCredential(cred_b) as B: %v", err)
	}
	// A project connector referencing the account's credential: within A's token.
	proj := instanceRoleConnector("aws_p", scopeAP)
	proj.CredentialType, proj.AccessKeyId, proj.SecretAccessKey = delegatev1.CredentialType_ACCESS_KEY, "AKIAEXAMPLE", "builtin:cred_a"
	if _, err := opA.CreateConnector(ctxA, &delegatev1.CreateConnectorRequest{Connector: proj}); err != nil {
		t.Fatalf("CreateConnector(aws_p in %s) as A: %v", connector.ScopeKey(scopeAP), err)
	}

	t.Run("outside the scope is not found", func(t *testing.T) {
		bRef := &delegatev1.ConnectorRef{Scope: scopeB, Identifier: "aws_b"}
		_, err := opA.GetConnector(ctxA, &delegatev1.GetConnectorRequest{Ref: bRef})
		wantCode(t, "GetConnector(acct_b/aws_b) as A", err, codes.NotFound)
		_, err = opA.UpdateConnector(ctxA, &delegatev1.UpdateConnectorRequest{Connector: instanceRoleConnector("aws_b", scopeB)})
		wantCode(t, "UpdateConnector(acct_b/aws_b) as A", err, codes.NotFound)
		_, err = opA.DeleteConnector(ctxA, &delegatev1.DeleteConnectorRequest{Ref: bRef})
		wantCode(t, "DeleteConnector(acct_b/aws_b) as A", err, codes.NotFound)
		_, err = opA.TestConnector(ctxA, &delegatev1.TestConnectorRequest{Ref: bRef})
		wantCode(t, "TestConnector(acct_b/aws_b) as A", err, codes.NotFound)
		_, err = opA.DeleteCredential(ctxA, &delegatev1.DeleteCredentialRequest{Scope: scopeB, Name: "cred_b"})
		wantCode(t, "DeleteCredential(acct_b/cred_b) as A", err, codes.NotFound)
		if r, err := opA.ListCredentials(ctxA, &delegatev1.ListCredentialsRequest{Scope: scopeB}); err != nil || len(r.GetCredentials()) != 0 {
			t.Errorf("ListCredentials(acct_b) as A = %v, %v; want none", r.GetCredentials(), err)
		}
		if r, err := opA.ListConnectors(ctxA, &delegatev1.ListConnectorsRequest{Scope: scopeBP}); err != nil || len(r.GetConnectors()) != 0 {
			t.Errorf("ListConnectors(%s) as A = %v, %v; want none", connector.ScopeKey(scopeBP), r.GetConnectors(), err)
		}
		// Nothing was deleted.
		if _, err := opB.GetConnector(ctxB, &delegatev1.GetConnectorRequest{Ref: bRef}); err != nil {
			t.Errorf("GetConnector(aws_b) as B after A's delete: %v", err)
		}
		if r, err := opB.ListCredentials(ctxB, &delegatev1.ListCredentialsRequest{}); err != nil || len(r.GetCredentials()) != 1 {
			t.Errorf("ListCredentials as B after A's delete = %v, %v; want cred_b", r.GetCredentials(), err)
		}
		// The messages are those of a connector that does not exist.
		_, err = opA.GetConnector(ctxA, &delegatev1.GetConnectorRequest{Ref: &delegatev1.ConnectorRef{Scope: scopeB, Identifier: "no_such"}})
		_, err2 := opA.GetConnector(ctxA, &delegatev1.GetConnectorRequest{Ref: &delegatev1.ConnectorRef{Scope: scopeB, Identifier: "aws_b"}})
		if strings.ReplaceAll(status.Convert(err).Message(), "no_such", "aws_b") != status.Convert(err2).Message() {
			t.Errorf("a hidden connector's error %q differs from a missing one's %q", status.Convert(err2).Message(), status.Convert(err).Message())
		}
	})

	t.Run("creating outside the scope is denied", func(t *testing.T) {
		_, err := opA.CreateConnector(ctxA, &delegatev1.CreateConnectorRequest{Connector: instanceRoleConnector("aws_x", scopeB)})
		wantDenied(t, "CreateConnector(in acct_b) as A", err, "acct_b", "confined to scope acct_a")
		_, err = opA.PutCredential(ctxA, &delegatev1.PutCredentialRequest{Scope: scopeB, Name: "cred_x", Value: []byte("z")})
		wantDenied(t, "PutCredential(in acct_b) as A", err, "acct_b", "at its scope or below")
		_, err = opAP.CreateConnector(ctxAP, &delegatev1.CreateConnectorRequest{Connector: instanceRoleConnector("aws_x", scopeA)})
		wantDenied(t, "CreateConnector(in acct_a) as A's project", err, "acct_a", "confined to scope "+connector.ScopeKey(scopeAP))
		// An invalid connector is still InvalidArgument, whoever asks.
		bad := instanceRoleConnector("aws_x", scopeB)
		bad.Region = "not a region"
		_, err = opA.CreateConnector(ctxA, &delegatev1.CreateConnectorRequest{Connector: bad})
		wantCode(t, "CreateConnector(invalid, in acct_b) as A", err, codes.InvalidArgument)
	})

	t.Run("lookups stop at the token's scope", func(t *testing.T) {
		// The project token does not see the account's connector or credential.
		_, err := opAP.GetConnector(ctxAP, &delegatev1.GetConnectorRequest{Ref: &delegatev1.ConnectorRef{Identifier: "aws_a"}})
		wantCode(t, "GetConnector(aws_a) as A's project", err, codes.NotFound)
		r, err := opAP.ListConnectors(ctxAP, &delegatev1.ListConnectorsRequest{})
		if err != nil || len(r.GetConnectors()) != 1 || r.GetConnectors()[0].GetIdentifier() != "aws_p" {
			t.Errorf("ListConnectors() as A's project = %v, %v; want only aws_p", r.GetConnectors(), err)
		}
		p2 := instanceRoleConnector("aws_p2", nil)
		p2.CredentialType, p2.AccessKeyId, p2.SecretAccessKey = delegatev1.CredentialType_ACCESS_KEY, "AKIAEXAMPLE", "builtin:cred_a"
		_, err = opAP.CreateConnector(ctxAP, &delegatev1.CreateConnectorRequest{Connector: p2})
		if msg, fields := fieldViolations(t, "CreateConnector(builtin:cred_a) as A's project", err); !slices.Contains(fields, "secret_access_key") {
			t.Errorf("CreateConnector(builtin:cred_a) as A's project = %q, want secret_access_key refused", msg)
		}
		// The account token sees the project's connector and falls back to its own.
		for _, ref := range []*delegatev1.ConnectorRef{{Scope: scopeAP, Identifier: "aws_p"}, {Scope: scopeAP, Identifier: "aws_a"}} {
			if _, err := opA.GetConnector(ctxA, &delegatev1.GetConnectorRequest{Ref: ref}); err != nil {
				t.Errorf("GetConnector(%s/%s) as A: %v", connector.ScopeKey(ref.GetScope()), ref.GetIdentifier(), err)
			}
		}
	})

	t.Run("delegates", func(t *testing.T) {
		if got := sortedKeys(delegateNames(t, admin, adminCtx)); !slices.Equal(got, []string{"dlg-a", "dlg-a-proj1", "dlg-any", "dlg-b"}) {
			t.Errorf("ListDelegates as the unscoped operator = %v, want all four", got)
		}
		seen := delegateNames(t, opAP, ctxAP)
		if got := sortedKeys(seen); !slices.Equal(got, []string{"dlg-a", "dlg-a-proj1", "dlg-any"}) {
			t.Errorf("ListDelegates as A's project = %v, want dlg-a, dlg-a-proj1, dlg-any (their scopes overlap)", got)
		}
		if got := connector.ScopeKey(seen["dlg-a-proj1"].GetScope()); got != connector.ScopeKey(scopeAP) {
			t.Errorf("dlg-a-proj1 scope = %q, want %q", got, connector.ScopeKey(scopeAP))
		}
		if seen["dlg-any"].GetScope() != nil {
			t.Errorf("dlg-any scope = %v, want none (an unscoped token)", seen["dlg-any"].GetScope())
		}
		_, err := opAP.TagDelegate(ctxAP, &delegatev1.TagDelegateRequest{Name: "dlg-a", Add: []string{"x"}})
		wantDenied(t, "TagDelegate(dlg-a) as A's project", err, "beyond this operator token's scope")
		_, err = opAP.TagDelegate(ctxAP, &delegatev1.TagDelegateRequest{Name: "dlg-any", Add: []string{"x"}})
		wantDenied(t, "TagDelegate(dlg-any) as A's project", err, "any scope")
		for _, name := range []string{"dlg-b", "not-connected"} {
			_, err = opAP.TagDelegate(ctxAP, &delegatev1.TagDelegateRequest{Name: name, Add: []string{"x"}})
			wantCode(t, "TagDelegate("+name+") as A's project", err, codes.NotFound)
		}
		if _, err := opAP.TagDelegate(ctxAP, &delegatev1.TagDelegateRequest{Name: "dlg-a-proj1", Add: []string{"x"}}); err != nil {
			t.Errorf("TagDelegate(dlg-a-proj1) as A's project: %v", err)
		}
	})

	t.Run("pings and tasks", func(t *testing.T) {
		_, err := opA.Ping(ctxA, &delegatev1.PingRequest{Scope: scopeB})
		wantDenied(t, "Ping(scope acct_b) as A", err, "acct_b")
		_, err = opAP.Ping(ctxAP, &delegatev1.PingRequest{Scope: scopeA})
		wantDenied(t, "Ping(scope acct_a) as A's project", err, "acct_a")
		_, err = opA.Ping(ctxA, &delegatev1.PingRequest{Scope: &delegatev1.Scope{Account: "acct_a", Project: "p"}})
		wantCode(t, "Ping(scope with a project but no org) as A", err, codes.InvalidArgument)
		for range 20 {
			info, err := opAP.Ping(ctxAP, &delegatev1.PingRequest{})
			if err != nil || info.GetOutcome().GetCode() != delegatev1.Code_OK {
				t.Fatalf("Ping() as A's project = %v, %v", info, err)
			}
			if d := info.GetDelegate(); d != "dlg-a" && d != "dlg-a-proj1" && d != "dlg-any" {
				t.Errorf("Ping() as A's project ran on %q, want a delegate serving %s", d, connector.ScopeKey(scopeAP))
			}
			if got := connector.ScopeKey(info.GetScope()); got != connector.ScopeKey(scopeAP) {
				t.Errorf("Ping() as A's project has scope %q, want the token's", got)
			}
		}

		// dlg-any runs a task of each account at once; each account's
		// operator sees only its own among its running tasks.
		slow := durationpb.New(time.Second)
		pa, err := opA.Ping(ctxA, &delegatev1.PingRequest{Selectors: []string{"dlg-any"}, Sleep: slow, Async: true})
		if err != nil {
			t.Fatal(err)
		}
		pb, err := opB.Ping(ctxB, &delegatev1.PingRequest{Selectors: []string{"dlg-any"}, Sleep: slow, Async: true})
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, func() bool {
			return len(delegateNames(t, admin, adminCtx)["dlg-any"].GetRunningTasks()) == 2
		}, "dlg-any to run both pings")
		if got := delegateNames(t, opA, ctxA)["dlg-any"].GetRunningTasks(); !slices.Equal(got, []string{pa.GetId()}) {
			t.Errorf("dlg-any's running tasks as A = %v, want only A's %s", got, pa.GetId())
		}
		if got := delegateNames(t, opB, ctxB)["dlg-any"].GetRunningTasks(); !slices.Equal(got, []string{pb.GetId()}) {
			t.Errorf("dlg-any's running tasks as B = %v, want only B's %s", got, pb.GetId())
		}
		if _, ok := delegateNames(t, opB, ctxB)["dlg-a"]; ok {
			t.Error("ListDelegates as B lists dlg-a")
		}

		_, err = opB.GetTask(ctxB, &delegatev1.GetTaskRequest{Id: pa.GetId()})
		wantCode(t, "GetTask(A's ping) as B", err, codes.NotFound)
		w, err := opB.WatchTask(ctxB, &delegatev1.GetTaskRequest{Id: pa.GetId()})
		if err == nil {
			_, err = w.Recv()
		}
		wantCode(t, "WatchTask(A's ping) as B", err, codes.NotFound)
		if got := waitTask(t, opA, ctxA, pa.GetId(), 5*time.Second); got.GetState() != delegatev1.TaskState_SUCCEEDED {
			t.Errorf("A's ping = %v, want SUCCEEDED", got.GetState())
		}
		waitTask(t, admin, adminCtx, pb.GetId(), 5*time.Second)
		_, err = opAP.GetTask(ctxAP, &delegatev1.GetTaskRequest{Id: pa.GetId()})
		wantCode(t, "GetTask(A's account ping) as A's project", err, codes.NotFound)

		lists := map[string][]string{}
		for _, who := range []struct {
			name string
			c    delegatev1.ManagerServiceClient
			tok  scopedToken
		}{{"A", opA, operatorA}, {"B", opB, operatorB}, {"admin", admin, scopedToken{token: operatorToken}}} {
			r, err := who.c.ListTasks(metadataCtx(t, who.tok.token), &delegatev1.ListTasksRequest{})
			if err != nil {
				t.Fatalf("ListTasks as %s: %v", who.name, err)
			}
			for _, task := range r.GetTasks() {
				lists[who.name] = append(lists[who.name], task.GetId())
				if !within(who.tok.scope, task.GetScope()) {
					t.Errorf("ListTasks as %s lists %s of scope %q", who.name, task.GetId(), connector.ScopeKey(task.GetScope()))
				}
			}
		}
		if !slices.Equal(lists["A"], []string{pa.GetId()}) || !slices.Equal(lists["B"], []string{pb.GetId()}) || len(lists["admin"]) != 2 {
			t.Errorf("ListTasks: A %v, B %v, admin %v; want A's ping, B's ping, both", lists["A"], lists["B"], lists["admin"])
		}
	})
}
