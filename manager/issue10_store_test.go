package manager_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/manager"
	"github.com/smdelegate/smdelegate/manager/store"
	"github.com/smdelegate/smdelegate/manager/store/postgres"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// logLines counts the manager's log lines at warn and above.
type logLines struct {
	mu sync.Mutex // guards n
	n  int
}

func (l *logLines) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte(`"level":"warn"`)) || bytes.Contains(p, []byte(`"level":"error"`)) {
		l.mu.Lock()
		l.n++
		l.mu.Unlock()
	}
	return len(p), nil
}

func (l *logLines) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

// asyncPing submits an async ping and returns its task id.
func asyncPing(t *testing.T, c delegatev1.ManagerServiceClient, ctx context.Context) string {
	t.Helper()
	info, err := c.Ping(ctx, &delegatev1.PingRequest{Async: true})
	if err != nil {
		t.Fatalf("Ping(async) = %v", err)
	}
	return info.GetId()
}

// nextAck returns the next ResultAck the manager sent w within d, or nil.
func nextAck(w *wire, d time.Duration) *delegatev1.ResultAck {
	deadline := time.After(d)
	for {
		select {
		case m := <-w.msgs:
			if a := m.GetResultAck(); a != nil {
				return a
			}
		case <-deadline:
			return nil
		}
	}
}

// TestIssue10ClaimOutageBacksOff: while every Claim fails with a
// transient error, the dispatcher retries with backoff (a handful of
// calls in 100 ms, not tens of thousands), logs a bounded number of
// lines, and stops once the manager is closed.
func TestIssue10ClaimOutageBacksOff(t *testing.T) {
	t.Parallel()
	fs := mustFaultStore(t)
	logs := &logLines{}
	srv := mustManagerWith(t, nil, zerolog.New(logs), fs)
	mustWire(t, srv.Addr(), delegateToken, hello("claimer", "p1"))
	fs.set(func(f *faults) { f.Claim = fail(errOutage) })
	c, ctx := operator(t, srv.Addr())
	asyncPing(t, c, ctx)

	waitFor(t, 5*time.Second, func() bool { return fs.count("Claim") > 0 }, "a first Claim")
	before, logged := fs.count("Claim"), logs.count()
	time.Sleep(100 * time.Millisecond)
	if n := fs.count("Claim") - before; n > 5 {
		t.Errorf("Claim called %d times in 100 ms of a failing store, want at most 5 (backoff)", n)
	}
	if n := logs.count() - logged; n > 2 {
		t.Errorf("%d warn/error log lines in 100 ms of a failing store, want at most 2", n)
	}
	srv.Close(context.Background())
	closed := fs.count("Claim")
	time.Sleep(200 * time.Millisecond)
	if n := fs.count("Claim") - closed; n > 0 {
		t.Errorf("Claim called %d times after Close, want none", n)
	}
}

// TestIssue10ClaimConflictReleasesWaiters: a Claim that finds the task
// changed under it (finished, or claimed elsewhere) reconciles with the
// stored row, and a WatchTask caller waiting on the task sees the change
// instead of waiting for an update that never comes.
func TestIssue10ClaimConflictReleasesWaiters(t *testing.T) {
	t.Parallel()
	finished, _ := proto.Marshal(&delegatev1.Outcome{Code: delegatev1.Code_CANCELLED, Message: "finished elsewhere"})
	tests := []struct {
		name string
		// meanwhile changes the stored task before the Claim conflicts.
		meanwhile func(ctx context.Context, fs *faultStore, id string) error
		want      func(*delegatev1.TaskInfo) bool
	}{
		{"finished meanwhile", func(ctx context.Context, fs *faultStore, id string) error {
			return fs.Store.Complete(ctx, id, "", store.Final{State: store.StateFailed, Code: "CANCELLED", Outcome: finished})
		}, func(i *delegatev1.TaskInfo) bool {
			return i.GetState() == delegatev1.TaskState_FAILED && i.GetOutcome().GetCode() == delegatev1.Code_CANCELLED
		}},
		{"claimed elsewhere", func(ctx context.Context, fs *faultStore, id string) error {
			return fs.Store.Claim(ctx, id, store.Lease{ID: "other-lease", Delegate: "elsewhere", Attempt: 1})
		}, func(i *delegatev1.TaskInfo) bool {
			return i.GetState() == delegatev1.TaskState_LEASED && i.GetDelegate() == "elsewhere"
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fs := mustFaultStore(t)
			srv := mustManagerWith(t, nil, testLogger(t), fs)
			c, ctx := operator(t, srv.Addr())
			id := asyncPing(t, c, ctx)
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			watch, err := c.WatchTask(wctx, &delegatev1.GetTaskRequest{Id: id})
			if err != nil {
				t.Fatalf("WatchTask: %v", err)
			}
			if _, err := watch.Recv(); err != nil {
				t.Fatalf("WatchTask first: %v", err)
			}
			fs.set(func(f *faults) {
				f.Claim = func(ctx context.Context, id string, _ func() error) error {
					if err := tc.meanwhile(ctx, fs, id); err != nil {
						return err
					}
					return fmt.Errorf("fault: claim %s: %w", id, store.ErrConflict)
				}
			})
			mustWire(t, srv.Addr(), delegateToken, hello("conflicted", "p1"))
			for {
				info, err := watch.Recv()
				if err != nil {
					t.Fatalf("WatchTask ended with %v before showing the stored change", err)
				}
				if tc.want(info) {
					break
				}
			}
		})
	}
}

// TestIssue10CompleteFailureKeepsResult: a result whose Complete fails
// transiently, is slow, or commits and then fails is never acknowledged
// accepted=false (the agent would drop it): the manager keeps it, and
// acknowledges it accepted once it is stored; the task ends SUCCEEDED
// without running again.
func TestIssue10CompleteFailureKeepsResult(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		h    hook
		heal bool // the store comes back after 300 ms
	}{
		{"outage", fail(errOutage), true},
		{"slow", slow(300 * time.Millisecond), false},
		{"committed then failed", commitThenFail(errOutage), false},
		{"committed then lock lost", commitThenFail(postgres.ErrLockLost), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fs := mustFaultStore(t)
			srv := mustManagerWith(t, nil, testLogger(t), fs)
			w := mustWire(t, srv.Addr(), delegateToken, hello("completer", "p1"))
			c, ctx := operator(t, srv.Addr())
			id := asyncPing(t, c, ctx)
			task := w.nextTask(5 * time.Second)
			if task == nil || task.GetId() != id {
				t.Fatalf("delegate got task %v, want %s", task, id)
			}
			fs.set(func(f *faults) { f.Complete = tc.h })
			w.result(task)
			if tc.heal {
				if a := nextAck(w, 300*time.Millisecond); a != nil {
					t.Fatalf("during the outage the manager acked the result (accepted=%v), want no ack", a.GetAccepted())
				}
				fs.set(func(f *faults) { f.Complete = nil })
			}
			a := nextAck(w, 10*time.Second)
			if a == nil || !a.GetAccepted() || a.GetTaskId() != id {
				t.Fatalf("ack = %v, want accepted for task %s", a, id)
			}
			info, err := c.GetTask(ctx, &delegatev1.GetTaskRequest{Id: id})
			if err != nil || info.GetState() != delegatev1.TaskState_SUCCEEDED {
				t.Fatalf("GetTask(%s) = %v, %v; want SUCCEEDED", id, info, err)
			}
			if again := w.tasks(); len(again) > 0 {
				t.Errorf("task dispatched again %d times after its result was kept", len(again))
			}
		})
	}
}

// TestIssue10CatalogOutageDoesNotFailTask: a transient failure reading
// the connector, or the builtin credential it binds, while preparing a
// dispatch retries it; the task is not failed INTERNAL or CREDENTIALS.
func TestIssue10CatalogOutageDoesNotFailTask(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		secret string // the connector's secret_access_key
		break_ func(f *faults)
	}{
		{"connector read", "env:AWS_SECRET_ACCESS_KEY", func(f *faults) { f.GetConnector = failFirst(3, errOutage) }},
		{"builtin credential read", "builtin:k", func(f *faults) { f.GetCredential = failFirst(3, errOutage) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fs := mustFaultStore(t)
			srv := mustManagerWith(t, nil, testLogger(t), fs)
			c, ctx := operator(t, srv.Addr())
			if _, err := c.PutCredential(ctx, &delegatev1.PutCredentialRequest{Name: "k", Value: []byte("planted-key")}); err != nil {
				t.Fatalf("PutCredential: %v", err)
			}
			if _, err := c.CreateConnector(ctx, &delegatev1.CreateConnectorRequest{Connector: &delegatev1.Connector{
				Identifier: "c", Name: "c", CredentialType: delegatev1.CredentialType_ACCESS_KEY,
				AccessKeyId: "AKIAEXAMPLE", SecretAccessKey: tc.secret, Region: "eu-west-1",
				DelegateSelectors: []string{"catalog-reader"},
			}}); err != nil {
				t.Fatalf("CreateConnector: %v", err)
			}
			info, err := c.Secret(ctx, &delegatev1.SecretRequest{Connector: &delegatev1.ConnectorRef{Identifier: "c"}, Async: true,
				Op: &delegatev1.SecretRequest_Create{Create: &delegatev1.CreateSecretOp{Name: "s1",
					Value: &delegatev1.SecretValue{Value: &delegatev1.SecretValue_StringValue{StringValue: "v"}}}}})
			if err != nil {
				t.Fatalf("Secret(create, async) = %v", err)
			}
			fs.set(tc.break_)
			w := mustWire(t, srv.Addr(), delegateToken, hello("catalog-reader", "p1"))
			if task := w.nextTask(10 * time.Second); task == nil || task.GetId() != info.GetId() {
				got, _ := c.GetTask(ctx, &delegatev1.GetTaskRequest{Id: info.GetId()})
				t.Fatalf("delegate got task %v, want %s (the task is now %v)", task, info.GetId(), got)
			}
		})
	}
}

// TestIssue10StoreOutageIsUnavailable: an async submission the store
// fails transiently answers Unavailable, which the CLI retries with the
// same request id, and the retry gets one task that runs. A submission
// whose write committed before the error is found by reading back.
func TestIssue10StoreOutageIsUnavailable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		h    hook
		want codes.Code
	}{
		{"outage", fail(errOutage), codes.Unavailable},
		{"lock lost", fail(fmt.Errorf("postgres: create task: %w", postgres.ErrLockLost)), codes.Unavailable},
		{"store closed", fail(store.ErrClosed), codes.Unavailable},
		{"committed then failed", commitThenFail(errOutage), codes.OK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fs := mustFaultStore(t)
			srv := mustManagerWith(t, nil, testLogger(t), fs)
			w := mustWire(t, srv.Addr(), delegateToken, hello("submitter", "p1"))
			c, ctx := operator(t, srv.Addr())
			req := &delegatev1.PingRequest{Async: true, RequestId: "req-1"}
			fs.set(func(f *faults) { f.CreateTask = tc.h })
			_, err := c.Ping(ctx, req)
			if got := status.Code(err); got != tc.want {
				t.Fatalf("Ping(async) with a failing store = %v, want %v", err, tc.want)
			}
			fs.set(func(f *faults) { f.CreateTask = nil })
			first, err := c.Ping(ctx, req)
			if err != nil {
				t.Fatalf("retry of Ping(async, %s) = %v, want the task", req.GetRequestId(), err)
			}
			again, err := c.Ping(ctx, req)
			if err != nil || again.GetId() != first.GetId() {
				t.Fatalf("second retry = %v, %v; want task %s again", again, err, first.GetId())
			}
			task := w.nextTask(5 * time.Second)
			if task == nil || task.GetId() != first.GetId() {
				t.Fatalf("delegate got task %v, want %s", task, first.GetId())
			}
		})
	}
}

// TestIssue10RequeueFailureReconciles: when a lease expires and the
// Requeue that returns the task to the queue fails (without effect, or
// after taking effect), the dispatcher reads the row back and retries
// with backoff rather than calling Requeue again on every sweep tick;
// the task is dispatched again (attempt 2) once the store has it queued.
func TestIssue10RequeueFailureReconciles(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		h    hook
		heal bool // the store comes back after 1 s of outage
	}{
		{"outage", fail(errOutage), true},
		{"committed then failed", commitThenFail(errOutage), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fs := mustFaultStore(t)
			srv := mustManagerWith(t, func(c *manager.Config) {
				c.Dispatch.LeaseDuration = config.Duration(500 * time.Millisecond)
				c.Dispatch.HeartbeatInterval = config.Duration(100 * time.Millisecond)
			}, testLogger(t), fs)
			// The wire delegate's heartbeats list no task: the lease expires.
			w := mustWire(t, srv.Addr(), delegateToken, hello("requeuer", "p1"))
			c, ctx := operator(t, srv.Addr())
			fs.set(func(f *faults) { f.Requeue = tc.h })
			id := asyncPing(t, c, ctx)
			if task := w.nextTask(5 * time.Second); task == nil || task.GetId() != id {
				t.Fatalf("delegate got task %v, want %s", task, id)
			}
			waitFor(t, 5*time.Second, func() bool { return fs.count("Requeue") > 0 }, "a Requeue after the lease expired")
			if tc.heal {
				before := fs.count("Requeue")
				time.Sleep(time.Second) // 20 sweeps
				if n := fs.count("Requeue") - before; n > 8 {
					t.Errorf("Requeue called %d times in 1 s of a failing store, want at most 8 (backoff, not every sweep)", n)
				}
				fs.set(func(f *faults) { f.Requeue = nil })
			}
			again := w.nextTask(10 * time.Second)
			if again == nil || again.GetId() != id || again.GetAttempt() != 2 {
				info, _ := c.GetTask(ctx, &delegatev1.GetTaskRequest{Id: id})
				t.Fatalf("second dispatch = %v, want task %s attempt 2 (the task is now %v)", again, id, info)
			}
		})
	}
}

// TestIssue10ResultResentDuringOutage: an agent that reconnects while its
// result waits for the store sends it again on the new stream, as the
// agent does with every unacked result; the copy gets no stale
// accepted=false, and the one ack, accepted, comes on the new stream
// once the store is back.
func TestIssue10ResultResentDuringOutage(t *testing.T) {
	t.Parallel()
	fs := mustFaultStore(t)
	srv := mustManagerWith(t, nil, testLogger(t), fs)
	first := mustWire(t, srv.Addr(), delegateToken, hello("resender", "p1"))
	c, ctx := operator(t, srv.Addr())
	id := asyncPing(t, c, ctx)
	task := first.nextTask(5 * time.Second)
	if task == nil || task.GetId() != id {
		t.Fatalf("delegate got task %v, want %s", task, id)
	}
	fs.set(func(f *faults) { f.Complete = fail(errOutage) })
	first.result(task)
	waitFor(t, 5*time.Second, func() bool { return fs.count("Complete") > 0 }, "a first Complete")
	// The same agent process reconnects and sends its unacked result again.
	second := mustWire(t, srv.Addr(), delegateToken, hello("resender", "p1"))
	second.result(task)
	if a := nextAck(second, 300*time.Millisecond); a != nil {
		t.Fatalf("during the outage the resent result was acked (accepted=%v), want no ack", a.GetAccepted())
	}
	fs.set(func(f *faults) { f.Complete = nil })
	a := nextAck(second, 10*time.Second)
	if a == nil || !a.GetAccepted() || a.GetTaskId() != id {
		t.Fatalf("ack on the new stream = %v, want accepted for task %s", a, id)
	}
	if a := nextAck(second, 200*time.Millisecond); a != nil {
		t.Errorf("a second ack came: %v", a)
	}
}

// TestIssue10ReadOutageIsUnavailable: operator calls that read the store
// (tasks, connectors, credentials) answer Unavailable while it is out,
// not Internal, so that callers retry.
func TestIssue10ReadOutageIsUnavailable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		break_ func(f *faults)
		call   func(ctx context.Context, c delegatev1.ManagerServiceClient) error
	}{
		{"ListTasks", func(f *faults) { f.ListTasks = fail(errOutage) }, func(ctx context.Context, c delegatev1.ManagerServiceClient) error {
			_, err := c.ListTasks(ctx, &delegatev1.ListTasksRequest{})
			return err
		}},
		{"GetConnector", func(f *faults) { f.GetConnector = fail(errOutage) }, func(ctx context.Context, c delegatev1.ManagerServiceClient) error {
			_, err := c.GetConnector(ctx, &delegatev1.GetConnectorRequest{Ref: &delegatev1.ConnectorRef{Identifier: "c"}})
			return err
		}},
		{"CreateConnector binding a builtin credential", func(f *faults) { f.GetCredential = fail(errOutage) }, func(ctx context.Context, c delegatev1.ManagerServiceClient) error {
			_, err := c.CreateConnector(ctx, &delegatev1.CreateConnectorRequest{Connector: &delegatev1.Connector{
				Identifier: "c", Name: "c", CredentialType: delegatev1.CredentialType_ACCESS_KEY,
				AccessKeyId: "AKIAEXAMPLE", SecretAccessKey: "builtin:k", Region: "eu-west-1",
			}})
			return err
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fs := mustFaultStore(t)
			srv := mustManagerWith(t, nil, testLogger(t), fs)
			c, ctx := operator(t, srv.Addr())
			fs.set(tc.break_)
			if err := tc.call(ctx, c); status.Code(err) != codes.Unavailable {
				t.Errorf("%s with the store out = %v, want Unavailable", tc.name, err)
			}
		})
	}
}
