package manager_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/smdelegate/smdelegate/internal/awsemu"
	"github.com/smdelegate/smdelegate/internal/ids"
	"github.com/smdelegate/smdelegate/manager/connector"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// Issue 9, item 1: a connector's builtin:NAME is bound when the connector
// is created or updated, to one credential by scope and name, never above
// the scope of the token that made the change; tasks use exactly that
// credential, and never fall back to another scope's.

// keysSeen records the secret access keys the delegate received, by task.
type keysSeen struct {
	mu   sync.Mutex // guards keys
	keys map[string][]string
}

func newKeysSeen() *keysSeen { return &keysSeen{keys: map[string][]string{}} }

func (k *keysSeen) onRun(_ context.Context, task *delegatev1.Task) {
	v := task.GetPayload().GetSecret().GetConnector().GetSecretAccessKey().GetValue()
	k.mu.Lock()
	k.keys[task.GetId()] = append(k.keys[task.GetId()], v)
	k.mu.Unlock()
}

// all returns every key received, and of how many tasks.
func (k *keysSeen) all() (keys []string, tasks int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, ks := range k.keys {
		keys = append(keys, ks...)
	}
	return keys, len(k.keys)
}

func (k *keysSeen) of(id string) []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.keys[id])
}

// keyConnector is an access_key connector on the emulator whose secret
// access key is builtin:cred.
func keyConnector(id string, sc *delegatev1.Scope, keyID, cred, emuURL string) *delegatev1.Connector {
	return &delegatev1.Connector{Identifier: id, Name: id, Scope: sc, CredentialType: delegatev1.CredentialType_ACCESS_KEY,
		AccessKeyId: keyID, SecretAccessKey: "builtin:" + cred, Region: emuRegion, EndpointUrl: emuURL, StsEndpointUrl: emuURL}
}

// wantBindings checks c's credential bindings, which the API returns
// without their MACs.
func wantBindings(t *testing.T, what string, c *delegatev1.Connector, want ...*delegatev1.CredentialBinding) {
	t.Helper()
	if diff := cmp.Diff(want, c.GetCredentialBindings(), protocmp.Transform()); diff != "" {
		t.Errorf("%s: credential_bindings (-want +got):\n%s", what, diff)
	}
}

func secretBinding(name string, sc *delegatev1.Scope) *delegatev1.CredentialBinding {
	return &delegatev1.CredentialBinding{Field: "secret_access_key", Name: name, Scope: sc}
}

// createAsync creates a secret through ref with an async task and waits
// for the task to be final.
func createAsync(t *testing.T, c delegatev1.ManagerServiceClient, ctx context.Context, ref *delegatev1.ConnectorRef, name string) *delegatev1.TaskInfo {
	t.Helper()
	info, err := c.Secret(ctx, &delegatev1.SecretRequest{Connector: ref, Async: true,
		Op: &delegatev1.SecretRequest_Create{Create: &delegatev1.CreateSecretOp{
			Name: name, Value: &delegatev1.SecretValue{Value: &delegatev1.SecretValue_StringValue{StringValue: "v"}}}}})
	if err != nil {
		t.Fatalf("Secret(create %s, async): %v", name, err)
	}
	return waitTask(t, c, ctx, info.GetId(), 10*time.Second)
}

func wantSucceeded(t *testing.T, what string, info *delegatev1.TaskInfo) {
	t.Helper()
	if info.GetState() != delegatev1.TaskState_SUCCEEDED {
		t.Fatalf("%s = %v %v (%s), want SUCCEEDED", what, info.GetState(), info.GetOutcome().GetCode(), info.GetOutcome().GetMessage())
	}
}

// TestItem1DeletedCredentialDoesNotFallBackUpward is the attack: a
// project operator creates a connector on the project's credential
// aws_key while the account holds one of the same name, deletes the
// project's, and runs tasks through the connector, async, sync and as a
// connection test. Each fails CREDENTIALS naming the reference and where
// it is bound; the project delegate never receives the account's key (it
// receives no task at all), AWS sees no request, and the connector is
// unchanged. Putting the project's credential again restores it.
func TestItem1DeletedCredentialDoesNotFallBackUpward(t *testing.T) {
	t.Parallel()
	keyID := "AKIAPROJ" + ids.Random()[:8]
	projKey, acctKey := "project-key-"+ids.Random(), "account-key-"+ids.Random()
	emu, emuURL := mustEmu(t, awsemu.Options{Region: emuRegion, Credentials: map[string]string{keyID: projKey}})
	log, logs := bufferLogger(t)
	srv := mustManagerAt(t, t.TempDir(), log, withScopedTokens)
	seen := newKeysSeen()
	dlg := startAgentWith(t, srv.Addr(), delegateAP, "dlg-a-proj1", 4, seen.onRun)
	admin, adminCtx := operator(t, srv.Addr())
	waitDelegates(t, admin, adminCtx, 1)
	opA, ctxA := operatorAs(t, srv.Addr(), operatorA)
	opAP, ctxAP := operatorAs(t, srv.Addr(), operatorAP)

	if _, err := opA.PutCredential(ctxA, &delegatev1.PutCredentialRequest{Name: "aws_key", Value: []byte(acctKey)}); err != nil {
		t.Fatalf("PutCredential(acct_a/aws_key) as A: %v", err)
	}
	putProj := func() {
		t.Helper()
		if _, err := opAP.PutCredential(ctxAP, &delegatev1.PutCredentialRequest{Name: "aws_key", Value: []byte(projKey)}); err != nil {
			t.Fatalf("PutCredential(%s/aws_key) as A's project: %v", connector.ScopeKey(scopeAP), err)
		}
	}
	putProj()
	created, err := opAP.CreateConnector(ctxAP, &delegatev1.CreateConnectorRequest{Connector: keyConnector("proj_keys", nil, keyID, "aws_key", emuURL)})
	if err != nil {
		t.Fatalf("CreateConnector(proj_keys) as A's project: %v", err)
	}
	wantBindings(t, "CreateConnector", created, secretBinding("aws_key", scopeAP))
	ref := &delegatev1.ConnectorRef{Identifier: "proj_keys"}
	first := createAsync(t, opAP, ctxAP, ref, "item1/before")
	wantSucceeded(t, "create before the deletion", first)
	if got := seen.of(first.GetId()); !slices.Equal(got, []string{projKey}) {
		t.Fatalf("the delegate received %d keys for the first task, want the project's once", len(got))
	}

	// The attack.
	if _, err := opAP.DeleteCredential(ctxAP, &delegatev1.DeleteCredentialRequest{Name: "aws_key"}); err != nil {
		t.Fatalf("DeleteCredential(aws_key) as A's project: %v", err)
	}
	awsBefore := len(emu.Requests())
	_, tasksBefore := seen.all()
	says := []string{"secret_access_key", `"aws_key"`, "scope " + connector.ScopeKey(scopeAP), "no longer exists"}
	wantNamed := func(what, msg string) {
		t.Helper()
		for _, s := range says {
			if !strings.Contains(msg, s) {
				t.Errorf("%s: message %q does not contain %q", what, msg, s)
			}
		}
	}
	failed := createAsync(t, opAP, ctxAP, ref, "item1/after")
	if failed.GetState() != delegatev1.TaskState_FAILED || failed.GetOutcome().GetCode() != delegatev1.Code_CREDENTIALS {
		t.Errorf("create after the deletion = %v %v (%s), want FAILED CREDENTIALS",
			failed.GetState(), failed.GetOutcome().GetCode(), failed.GetOutcome().GetMessage())
	}
	wantNamed("the failed async task", failed.GetOutcome().GetMessage())
	_, err = opAP.Secret(ctxAP, &delegatev1.SecretRequest{Connector: ref,
		Op: &delegatev1.SecretRequest_Get{Get: &delegatev1.GetSecretOp{Name: "item1/before"}}})
	wantDeniedNamed := func(what string, err error) {
		t.Helper()
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s = %v, want PermissionDenied", what, err)
		}
		wantNamed(what, status.Convert(err).Message())
	}
	wantDeniedNamed("Secret(get) after the deletion", err)
	_, err = opAP.TestConnector(ctxAP, &delegatev1.TestConnectorRequest{Ref: ref})
	wantDeniedNamed("TestConnector after the deletion", err)

	// Nothing reached the delegate or AWS, and nothing changed.
	if keys, tasks := seen.all(); tasks != tasksBefore || slices.Contains(keys, acctKey) {
		t.Errorf("the project delegate received %d tasks after the deletion (the account's key among its keys: %v), want none",
			tasks-tasksBefore, slices.Contains(keys, acctKey))
	}
	if dlg.count(failed.GetId()) != 0 {
		t.Errorf("the project delegate ran the failed task")
	}
	if n := len(emu.Requests()); n != awsBefore {
		t.Errorf("AWS received %d requests after the deletion, want none", n-awsBefore)
	}
	if _, ok := emu.Secret("item1/after"); ok {
		t.Error("the secret of the failed task exists at AWS")
	}
	got, err := opAP.GetConnector(ctxAP, &delegatev1.GetConnectorRequest{Ref: ref})
	if err != nil {
		t.Fatalf("GetConnector(proj_keys): %v", err)
	}
	wantBindings(t, "GetConnector after the attack", got, secretBinding("aws_key", scopeAP))

	// Putting the project's credential again restores the connector.
	putProj()
	restored := createAsync(t, opAP, ctxAP, ref, "item1/restored")
	wantSucceeded(t, "create after the credential is put again", restored)
	if got := seen.of(restored.GetId()); !slices.Equal(got, []string{projKey}) {
		t.Errorf("the delegate received %d keys for the restored task, want the project's once", len(got))
	}
	if keys, _ := seen.all(); slices.Contains(keys, acctKey) {
		t.Error("the project delegate received the account's key")
	}
	assertAbsent(t, "the manager's log", logs.Bytes(), map[string]string{"account key": acctKey, "project key": projKey})
}

// TestItem1AccountBindingStaysBound: an account operator may bind a
// project connector to the account's credential, and it stays bound when
// a project credential of the same name appears (tasks keep the
// account's key; no re-binding downward). A project operator can neither
// bind to the account's credential (refused, nothing stored) nor forge a
// binding by sending one: what a client sends is replaced.
func TestItem1AccountBindingStaysBound(t *testing.T) {
	t.Parallel()
	keyID := "AKIAACCT" + ids.Random()[:8]
	projKey, acctKey := "project-key-"+ids.Random(), "account-key-"+ids.Random()
	_, emuURL := mustEmu(t, awsemu.Options{Region: emuRegion, Credentials: map[string]string{keyID: acctKey}})
	srv := mustManager(t, withScopedTokens)
	seen := newKeysSeen()
	startAgentWith(t, srv.Addr(), delegateAP, "dlg-a-proj1", 4, seen.onRun)
	admin, adminCtx := operator(t, srv.Addr())
	waitDelegates(t, admin, adminCtx, 1)
	opA, ctxA := operatorAs(t, srv.Addr(), operatorA)
	opAP, ctxAP := operatorAs(t, srv.Addr(), operatorAP)

	if _, err := opA.PutCredential(ctxA, &delegatev1.PutCredentialRequest{Name: "shared_key", Value: []byte(acctKey)}); err != nil {
		t.Fatalf("PutCredential(acct_a/shared_key) as A: %v", err)
	}
	created, err := opA.CreateConnector(ctxA, &delegatev1.CreateConnectorRequest{Connector: keyConnector("acct_bound", scopeAP, keyID, "shared_key", emuURL)})
	if err != nil {
		t.Fatalf("CreateConnector(acct_bound in %s) as A: %v", connector.ScopeKey(scopeAP), err)
	}
	wantBindings(t, "CreateConnector as A", created, secretBinding("shared_key", scopeA))
	ref := &delegatev1.ConnectorRef{Identifier: "acct_bound"}
	before := createAsync(t, opAP, ctxAP, ref, "item1/acct-before")
	wantSucceeded(t, "create through the account binding", before)
	if got := seen.of(before.GetId()); !slices.Equal(got, []string{acctKey}) {
		t.Fatalf("the delegate received %d keys, want the account's once", len(got))
	}

	// A project credential of the same name appears: nothing re-binds.
	if _, err := opAP.PutCredential(ctxAP, &delegatev1.PutCredentialRequest{Name: "shared_key", Value: []byte(projKey)}); err != nil {
		t.Fatalf("PutCredential(shared_key) as A's project: %v", err)
	}
	after := createAsync(t, opAP, ctxAP, ref, "item1/acct-after")
	wantSucceeded(t, "create after a project credential of the same name appeared", after)
	if got := seen.of(after.GetId()); !slices.Equal(got, []string{acctKey}) {
		t.Errorf("after the project credential appeared the delegate received %d keys (the project's: %v), want the account's once",
			len(got), slices.Contains(got, projKey))
	}
	got, err := opAP.GetConnector(ctxAP, &delegatev1.GetConnectorRequest{Ref: ref})
	if err != nil {
		t.Fatalf("GetConnector(acct_bound) as A's project: %v", err)
	}
	wantBindings(t, "GetConnector as A's project", got, secretBinding("shared_key", scopeA))

	// The project token cannot bind to the account's credential...
	if _, err := opA.PutCredential(ctxA, &delegatev1.PutCredentialRequest{Name: "acct_only", Value: []byte(acctKey)}); err != nil {
		t.Fatal(err)
	}
	_, err = opAP.CreateConnector(ctxAP, &delegatev1.CreateConnectorRequest{Connector: keyConnector("reach_up", nil, keyID, "acct_only", emuURL)})
	if msg, fields := fieldViolations(t, "CreateConnector(builtin:acct_only) as A's project", err); !slices.Equal(fields, []string{"secret_access_key"}) ||
		!strings.Contains(msg, `"acct_only"`) {
		t.Errorf("CreateConnector(builtin:acct_only) as A's project = %q %v, want secret_access_key refused naming acct_only", msg, fields)
	}
	_, err = opAP.GetConnector(ctxAP, &delegatev1.GetConnectorRequest{Ref: &delegatev1.ConnectorRef{Identifier: "reach_up"}})
	wantCode(t, "GetConnector(reach_up) after the refusal", err, codes.NotFound)

	// ...nor forge a binding: the one it sends (to the account, with a
	// made-up MAC) is replaced by the project's credential, and without
	// that credential the connector's tasks fail rather than reach up.
	forged := keyConnector("forged", nil, keyID, "shared_key", emuURL)
	forged.CredentialBindings = []*delegatev1.CredentialBinding{{Field: "secret_access_key", Name: "shared_key", Scope: scopeA, Mac: []byte("forged-mac")}}
	made, err := opAP.CreateConnector(ctxAP, &delegatev1.CreateConnectorRequest{Connector: forged})
	if err != nil {
		t.Fatalf("CreateConnector(forged) as A's project: %v", err)
	}
	wantBindings(t, "CreateConnector(forged)", made, secretBinding("shared_key", scopeAP))
	if _, err := opAP.DeleteCredential(ctxAP, &delegatev1.DeleteCredentialRequest{Name: "shared_key"}); err != nil {
		t.Fatal(err)
	}
	f := createAsync(t, opAP, ctxAP, &delegatev1.ConnectorRef{Identifier: "forged"}, "item1/forged")
	if f.GetOutcome().GetCode() != delegatev1.Code_CREDENTIALS || len(seen.of(f.GetId())) != 0 {
		t.Errorf("create through the forged connector = %v (%s), delegate received %d keys; want CREDENTIALS before any delegate",
			f.GetOutcome().GetCode(), f.GetOutcome().GetMessage(), len(seen.of(f.GetId())))
	}
	// The account binding is untouched by all of this.
	again := createAsync(t, opAP, ctxAP, ref, "item1/acct-again")
	wantSucceeded(t, "create through the account binding at the end", again)
}
