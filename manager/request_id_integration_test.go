package manager_test

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/smdelegate/smdelegate/internal/awsemu"
	"github.com/smdelegate/smdelegate/internal/ids"
	"github.com/smdelegate/smdelegate/manager"
	"github.com/smdelegate/smdelegate/manager/store/bolt"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// operatorToken2 is a second unscoped operator token: the same rights as
// operatorToken, its own request ids.
const operatorToken2 = "test-operator-token-2"

// TestRequestID drives request ids through the API: a repeated mutation
// with the same request_id gets the first call's task, queued, running or
// final, and AWS sees one change; async and waiting calls share it; the
// same id with another request is AlreadyExists naming request_id;
// another token's id of the same name is its own; reads and sync pings
// are not deduplicated; malformed ids are InvalidArgument naming the
// field; and the store holds no value of a request.
func TestRequestID(t *testing.T) {
	t.Parallel()
	keyID, keySecret := "AKIAREQ"+ids.Random()[:8], "req-cred-"+ids.Random()
	emu, emuURL := mustEmu(t, awsemu.Options{Region: emuRegion, Credentials: map[string]string{keyID: keySecret}})
	dir := t.TempDir()
	log, logs := bufferLogger(t)
	srv := mustManagerAt(t, dir, log, func(c *manager.Config) {
		withScopedTokens(c)
		c.Auth.OperatorTokens = append(c.Auth.OperatorTokens, manager.TokenConfig{Name: "o2", SHA256: manager.HashToken(operatorToken2)})
	})
	held := make(chan struct{})
	startSecretAgent(t, srv.Addr(), "req-agent", nil, log, func(ctx context.Context, task *delegatev1.Task) {
		if task.GetPayload().GetSecret().GetCreate().GetName() == "held" {
			select { // a create the test holds while it retries
			case <-held:
			case <-ctx.Done():
			}
		}
	})
	startAgent(t, srv.Addr(), "ping-agent", []string{"pinger"}, 4, nil)
	c, ctx := operator(t, srv.Addr())
	waitDelegates(t, c, ctx, 2)
	if _, err := c.PutCredential(ctx, &delegatev1.PutCredentialRequest{Name: "k", Value: []byte(keySecret)}); err != nil {
		t.Fatalf("PutCredential: %v", err)
	}
	for _, id := range []string{"req", "req_other"} {
		if _, err := c.CreateConnector(ctx, &delegatev1.CreateConnectorRequest{Connector: &delegatev1.Connector{
			Identifier: id, Name: id, CredentialType: delegatev1.CredentialType_ACCESS_KEY,
			AccessKeyId: keyID, SecretAccessKey: "builtin:k", Region: emuRegion, EndpointUrl: emuURL,
			SecretNamePrefix: "app", DelegateSelectors: []string{"req-agent"},
		}}); err != nil {
			t.Fatalf("CreateConnector(%s): %v", id, err)
		}
	}
	const planted = "planted-request-value-7f3a"
	create := func(rid, name, value string, async bool) *delegatev1.SecretRequest {
		return &delegatev1.SecretRequest{Connector: &delegatev1.ConnectorRef{Identifier: "req"}, Async: async, RequestId: rid,
			Op: &delegatev1.SecretRequest_Create{Create: &delegatev1.CreateSecretOp{Name: name,
				Value: &delegatev1.SecretValue{Value: &delegatev1.SecretValue_StringValue{StringValue: value}}}}}
	}
	secret := func(t *testing.T, what string, req *delegatev1.SecretRequest) *delegatev1.TaskInfo {
		t.Helper()
		info, err := c.Secret(ctx, req)
		if err != nil {
			t.Fatalf("%s: Secret() = %v", what, err)
		}
		return info
	}
	versions := func(name string) int {
		st, ok := emu.Secret("app/" + name)
		if !ok {
			return 0
		}
		return len(st.Versions)
	}

	t.Run("async retry while queued, running and final", func(t *testing.T) {
		first := secret(t, "first", create("held-1", "held", planted, true))
		if first.GetRequestId() != "held-1" {
			t.Errorf("TaskInfo.request_id = %q, want %q", first.GetRequestId(), "held-1")
		}
		waitFor(t, 5*time.Second, func() bool {
			got, err := c.GetTask(ctx, &delegatev1.GetTaskRequest{Id: first.GetId()})
			return err == nil && got.GetState() == delegatev1.TaskState_LEASED
		}, "the held create to be leased")
		again := secret(t, "retry while running", create("held-1", "held", planted, true))
		if again.GetId() != first.GetId() || again.GetState() != delegatev1.TaskState_LEASED {
			t.Errorf("retry while running = task %s %s, want %s LEASED", again.GetId(), again.GetState(), first.GetId())
		}
		// A retry that waits gets the first call's outcome.
		waited := make(chan *delegatev1.TaskInfo, 1)
		go func() {
			info, err := c.Secret(ctx, create("held-1", "held", planted, false))
			if err != nil {
				t.Errorf("waiting retry: %v", err)
			}
			waited <- info
		}()
		time.Sleep(100 * time.Millisecond)
		close(held)
		w := <-waited
		if w.GetId() != first.GetId() || w.GetState() != delegatev1.TaskState_SUCCEEDED || w.GetOutcome().GetSecret().GetName() != "held" {
			t.Errorf("waiting retry = %v, want task %s SUCCEEDED", w, first.GetId())
		}
		final := secret(t, "retry when final", create("held-1", "held", planted, true))
		if final.GetId() != first.GetId() || final.GetState() != delegatev1.TaskState_SUCCEEDED ||
			final.GetOutcome().GetSecret().GetVersionId() != w.GetOutcome().GetSecret().GetVersionId() {
			t.Errorf("retry when final = %v, want task %s SUCCEEDED with version %s", final, first.GetId(), w.GetOutcome().GetSecret().GetVersionId())
		}
		if n := versions("held"); n != 1 {
			t.Errorf("AWS holds %d versions of app/held, want 1", n)
		}
		got, err := c.GetTask(ctx, &delegatev1.GetTaskRequest{Id: first.GetId()})
		if err != nil || got.GetRequestId() != "held-1" {
			t.Errorf("GetTask(%s) = %v, %v; want request_id held-1", first.GetId(), got, err)
		}
	})

	t.Run("waiting call retried", func(t *testing.T) {
		first := secret(t, "first", create("wait-1", "waited", "v1", false))
		again := secret(t, "retry", create("wait-1", "waited", "v1", false))
		if first.GetState() != delegatev1.TaskState_SUCCEEDED || again.GetId() != first.GetId() ||
			again.GetOutcome().GetSecret().GetVersionId() != first.GetOutcome().GetSecret().GetVersionId() {
			t.Errorf("retry = %v, want the first call's task %v", again, first)
		}
		if n := versions("waited"); n != 1 {
			t.Errorf("AWS holds %d versions of app/waited, want 1", n)
		}
	})

	t.Run("another request under the id", func(t *testing.T) {
		first := secret(t, "first", create("taken-1", "taken", "v1", false))
		reused := map[string]*delegatev1.SecretRequest{
			"another name":  create("taken-1", "taken-2", "v1", false),
			"another value": create("taken-1", "taken", "v2", false),
			"another op": {Connector: &delegatev1.ConnectorRef{Identifier: "req"}, RequestId: "taken-1",
				Op: &delegatev1.SecretRequest_Delete{Delete: &delegatev1.DeleteSecretOp{Name: "taken"}}},
			"another connector": func() *delegatev1.SecretRequest {
				r := create("taken-1", "taken", "v1", false)
				r.Connector.Identifier = "req_other"
				return r
			}(),
		}
		for what, req := range reused {
			_, err := c.Secret(ctx, req)
			st := status.Convert(err)
			if st.Code() != codes.AlreadyExists || !strings.Contains(st.Message(), "request_id") || !strings.Contains(st.Message(), first.GetId()) {
				t.Errorf("%s: Secret() = %v, want AlreadyExists naming request_id and task %s", what, err, first.GetId())
				continue
			}
			var info *errdetails.ErrorInfo
			for _, d := range st.Details() {
				if ei, ok := d.(*errdetails.ErrorInfo); ok {
					info = ei
				}
			}
			if info.GetReason() != "REQUEST_ID_REUSED" || info.GetMetadata()["task_id"] != first.GetId() {
				t.Errorf("%s: error details = %v, want ErrorInfo REQUEST_ID_REUSED with task_id %s", what, st.Details(), first.GetId())
			}
		}
		if _, ok := emu.Secret("app/taken-2"); ok {
			t.Error("a refused request ran")
		}
		if n := versions("taken"); n != 1 {
			t.Errorf("AWS holds %d versions of app/taken, want 1", n)
		}
	})

	t.Run("ids are per token", func(t *testing.T) {
		c2, ctx2 := operatorAs(t, srv.Addr(), scopedToken{token: operatorToken2})
		cA, ctxA := operatorAs(t, srv.Addr(), operatorA)
		ping := &delegatev1.PingRequest{Selectors: []string{"pinger"}, Async: true, RequestId: "ping-1"}
		seen := map[string]string{}
		for who, call := range map[string]func() (*delegatev1.TaskInfo, error){
			"o":      func() (*delegatev1.TaskInfo, error) { return c.Ping(ctx, ping) },
			"o2":     func() (*delegatev1.TaskInfo, error) { return c2.Ping(ctx2, ping) },
			"acct_a": func() (*delegatev1.TaskInfo, error) { return cA.Ping(ctxA, ping) },
		} {
			first, err := call()
			if err != nil {
				t.Fatalf("%s: Ping() = %v", who, err)
			}
			again, err := call()
			if err != nil || again.GetId() != first.GetId() {
				t.Errorf("%s: Ping() again = %v, %v; want task %s", who, again, err, first.GetId())
			}
			if other, ok := seen[first.GetId()]; ok {
				t.Errorf("tokens %s and %s share task %s under one request_id", who, other, first.GetId())
			}
			seen[first.GetId()] = who
		}
		// A different ping under an id already used is refused.
		_, err := c.Ping(ctx, &delegatev1.PingRequest{Selectors: []string{"pinger"}, Async: true, RequestId: "ping-1", Sleep: durationpb.New(time.Millisecond)})
		wantCode(t, "Ping(another ping, the same id)", err, codes.AlreadyExists)
	})

	t.Run("sync work is not deduplicated", func(t *testing.T) {
		get := &delegatev1.SecretRequest{Connector: &delegatev1.ConnectorRef{Identifier: "req"}, RequestId: "get-1",
			Op: &delegatev1.SecretRequest_Get{Get: &delegatev1.GetSecretOp{Name: "waited"}}}
		a, b := secret(t, "get", get), secret(t, "get again", get)
		if a.GetId() == b.GetId() || a.GetOutcome().GetCode() != delegatev1.Code_OK || a.GetRequestId() != "" {
			t.Errorf("two gets with one request_id = %v and %v, want two sync tasks, no request_id", a, b)
		}
		ping := &delegatev1.PingRequest{Selectors: []string{"pinger"}, RequestId: "sync-ping"}
		p1, err1 := c.Ping(ctx, ping)
		p2, err2 := c.Ping(ctx, ping)
		if err1 != nil || err2 != nil || p1.GetId() == p2.GetId() {
			t.Errorf("two sync pings with one request_id = %v, %v / %v, %v; want two tasks", p1, err1, p2, err2)
		}
	})

	t.Run("malformed ids", func(t *testing.T) {
		ok := strings.Repeat("a", 128)
		if _, err := c.Ping(ctx, &delegatev1.PingRequest{Selectors: []string{"pinger"}, Async: true, RequestId: ok}); err != nil {
			t.Errorf("Ping(128-character request_id) = %v, want nil", err)
		}
		if _, err := c.Ping(ctx, &delegatev1.PingRequest{Selectors: []string{"pinger"}, Async: true, RequestId: "A-z_0.9:x"}); err != nil {
			t.Errorf("Ping(request_id of every allowed kind) = %v, want nil", err)
		}
		for _, bad := range []string{ok + "a", "with space", "slash/", "ünï", "tab\t", "semi;colon"} {
			_, err := c.Ping(ctx, &delegatev1.PingRequest{Async: true, RequestId: bad})
			if _, fields := fieldViolations(t, "Ping(request_id "+bad+")", err); len(fields) != 1 || fields[0] != "request_id" {
				t.Errorf("Ping(request_id %q) field violations = %v, want [request_id]", bad, fields)
			}
			// Checked on reads too, though they are not deduplicated.
			_, err = c.Secret(ctx, &delegatev1.SecretRequest{RequestId: bad, Op: &delegatev1.SecretRequest_Get{Get: &delegatev1.GetSecretOp{Name: "x"}}})
			if _, fields := fieldViolations(t, "Secret(get, request_id "+bad+")", err); len(fields) != 1 || fields[0] != "request_id" {
				t.Errorf("Secret(get, request_id %q) field violations = %v, want [request_id]", bad, fields)
			}
		}
	})

	for _, where := range [][]byte{logs.Bytes(), readStore(t, srv, dir)} {
		if bytes.Contains(where, []byte(planted)) {
			t.Errorf("the value of a request with a request_id is in the store file or the log")
		}
	}
}

// TestRequestIDAcrossRestart: a manager stopped after it stored a task
// gives the task back to a retry after it starts again, recovered from
// the store, instead of queueing a second one.
func TestRequestIDAcrossRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := mustManagerAt(t, dir, testLogger(t), func(c *manager.Config) {
		c.Dispatch.QueueTimeout = manager.DefaultConfig().Dispatch.QueueTimeout
	})
	c, ctx := operator(t, srv.Addr())
	ping := &delegatev1.PingRequest{Selectors: []string{"later"}, Async: true, RequestId: "restart-1"}
	first, err := c.Ping(ctx, ping)
	if err != nil {
		t.Fatalf("Ping() = %v", err)
	}
	if err := srv.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}

	srv = mustManagerAt(t, dir, testLogger(t), nil)
	c, ctx = operator(t, srv.Addr())
	again, err := c.Ping(ctx, ping)
	if err != nil || again.GetId() != first.GetId() || again.GetState() != delegatev1.TaskState_QUEUED {
		t.Fatalf("Ping() after a restart = %v, %v; want the recovered task %s, QUEUED", again, err, first.GetId())
	}
	startAgent(t, srv.Addr(), "later-agent", []string{"later"}, 1, nil)
	if final := waitTask(t, c, ctx, first.GetId(), 10*time.Second); final.GetState() != delegatev1.TaskState_SUCCEEDED {
		t.Errorf("recovered task = %v, want SUCCEEDED", final)
	}
	list, err := c.ListTasks(ctx, &delegatev1.ListTasksRequest{})
	if err != nil || len(list.GetTasks()) != 1 {
		t.Errorf("ListTasks() = %v, %v; want the one task", list, err)
	}
}

// TestRequestIDTaskOfAnotherManager: two managers share one store, as
// replicas on one PostgreSQL database would. A retry that reaches the
// manager that does not run the first call's task gets that task from
// the store, and a retry that waits follows it there until it is final.
func TestRequestIDTaskOfAnotherManager(t *testing.T) {
	t.Parallel()
	keyID, keySecret := "AKIAREP"+ids.Random()[:8], "rep-cred-"+ids.Random()
	emu, emuURL := mustEmu(t, awsemu.Options{Region: emuRegion, Credentials: map[string]string{keyID: keySecret}})
	db, err := bolt.Open(filepath.Join(t.TempDir(), bolt.FileName), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	start := func(name string) *manager.Server {
		cfg := manager.DefaultConfig()
		cfg.Listen, cfg.HTTPListen, cfg.DataDir = "127.0.0.1:0", "", t.TempDir()
		cfg.TLS.Insecure, cfg.MasterKey = true, testMasterKey
		cfg.Auth.DelegateTokens = []manager.TokenConfig{{Name: "d", SHA256: manager.HashToken(delegateToken)}}
		cfg.Auth.OperatorTokens = []manager.TokenConfig{{Name: "o", SHA256: manager.HashToken(operatorToken)}}
		srv, err := manager.New(cfg, testLogger(t), db)
		if err != nil {
			t.Fatalf("manager.New(%s): %v", name, err)
		}
		if err := srv.Start(t.Context()); err != nil {
			t.Fatalf("Start(%s): %v", name, err)
		}
		return srv
	}
	a, b := start("a"), start("b")
	t.Cleanup(func() { // one store: close it once, after both
		b.Close(context.Background())
		a.Close(context.Background())
	})
	held := make(chan struct{})
	startSecretAgent(t, a.Addr(), "rep-agent", nil, testLogger(t), func(ctx context.Context, _ *delegatev1.Task) {
		select {
		case <-held:
		case <-ctx.Done():
		}
	})
	ca, ctxA := operator(t, a.Addr())
	cb, ctxB := operator(t, b.Addr())
	waitDelegates(t, ca, ctxA, 1)
	if _, err := ca.PutCredential(ctxA, &delegatev1.PutCredentialRequest{Name: "k", Value: []byte(keySecret)}); err != nil {
		t.Fatalf("PutCredential: %v", err)
	}
	if _, err := ca.CreateConnector(ctxA, &delegatev1.CreateConnectorRequest{Connector: &delegatev1.Connector{
		Identifier: "rep", Name: "rep", CredentialType: delegatev1.CredentialType_ACCESS_KEY,
		AccessKeyId: keyID, SecretAccessKey: "builtin:k", Region: emuRegion, EndpointUrl: emuURL, SecretNamePrefix: "app",
	}}); err != nil {
		t.Fatalf("CreateConnector: %v", err)
	}
	req := &delegatev1.SecretRequest{Connector: &delegatev1.ConnectorRef{Identifier: "rep"}, RequestId: "rep-1",
		Op: &delegatev1.SecretRequest_Create{Create: &delegatev1.CreateSecretOp{Name: "replicated",
			Value: &delegatev1.SecretValue{Value: &delegatev1.SecretValue_StringValue{StringValue: "v"}}}}}

	first := make(chan *delegatev1.TaskInfo, 1)
	go func() {
		info, err := ca.Secret(ctxA, req) // waits on a, which runs it
		if err != nil {
			t.Errorf("Secret() on a = %v", err)
		}
		first <- info
	}()
	var id string
	waitFor(t, 5*time.Second, func() bool {
		l, err := cb.ListTasks(ctxB, &delegatev1.ListTasksRequest{State: delegatev1.TaskState_LEASED})
		if err != nil || len(l.GetTasks()) != 1 {
			return false
		}
		id = l.GetTasks()[0].GetId()
		return true
	}, "the create to be leased")

	async := proto.Clone(req).(*delegatev1.SecretRequest)
	async.Async = true
	got, err := cb.Secret(ctxB, async)
	if err != nil || got.GetId() != id || got.GetState() != delegatev1.TaskState_LEASED {
		t.Fatalf("async retry on b = %v, %v; want task %s, LEASED", got, err, id)
	}
	waited := make(chan *delegatev1.TaskInfo, 1)
	go func() {
		info, err := cb.Secret(ctxB, req) // waits on b, which follows the store
		if err != nil {
			t.Errorf("waiting retry on b = %v", err)
		}
		waited <- info
	}()
	time.Sleep(200 * time.Millisecond)
	close(held)
	for _, info := range []*delegatev1.TaskInfo{<-first, <-waited} {
		if info.GetId() != id || info.GetState() != delegatev1.TaskState_SUCCEEDED {
			t.Errorf("Secret() = %v, want task %s SUCCEEDED", info, id)
		}
	}
	if st, ok := emu.Secret("app/replicated"); !ok || len(st.Versions) != 1 {
		t.Errorf("AWS: %+v, %v; want one version", st, ok)
	}
}
