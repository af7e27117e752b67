package dispatch

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/internal/outbox"
	"github.com/smdelegate/smdelegate/manager/identity"
	"github.com/smdelegate/smdelegate/manager/store"
	"github.com/smdelegate/smdelegate/manager/store/bolt"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// newTestDispatcher is a dispatcher on a bolt store of its own, with one
// attempt per task (a task dispatched in vain fails at once).
func newTestDispatcher(t *testing.T) *Dispatcher {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), bolt.FileName), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	cfg := Config{
		LeaseDuration: config.Duration(time.Minute), HeartbeatInterval: config.Duration(time.Second),
		QueueTimeout: config.Duration(time.Minute), TaskDeadline: config.Duration(time.Minute), MaxAttempts: 1,
	}
	return New(cfg, db, zerolog.Nop(), NewMetrics())
}

// mustConnect registers a stream of the agent process instance under name.
func mustConnect(t *testing.T, d *Dispatcher, name, instance string, capacity int32) *delegate {
	t.Helper()
	h := &delegatev1.Hello{Name: name, InstanceId: instance, Capacity: capacity}
	dg, err := d.connect(h, identity.Identity{Kind: identity.Delegate, Name: "tok"}, outbox.New[*delegatev1.ManagerMessage](0))
	if err != nil {
		t.Fatalf("connect(%q, %q) error: %v", name, instance, err)
	}
	return dg
}

func pingPayload() *delegatev1.TaskPayload {
	return &delegatev1.TaskPayload{Op: &delegatev1.TaskPayload_Ping{Ping: &delegatev1.PingTask{}}}
}

// TestIssue10UnleaseSkipsReplacedStream: a lease given back (its task's
// connector could not be resolved) after the delegate reconnected on a
// new stream must not spend the replaced stream's credit. The replaced
// stream is closed: a task leased to it is never sent, loses its attempt
// and, with one attempt, ends DELEGATE_LOST although the live stream
// would run it as soon as it has credit.
func TestIssue10UnleaseSkipsReplacedStream(t *testing.T) {
	t.Parallel()
	d := newTestDispatcher(t)
	entered, release := make(chan struct{}), make(chan struct{})
	d.resolve = func(ctx context.Context, _ string, p *delegatev1.TaskPayload) (*delegatev1.TaskPayload, error) {
		close(entered)
		<-release
		return nil, errors.New("connector not found")
	}
	ctx := t.Context()

	old := mustConnect(t, d, "a", "inst-1", 2)
	resolved, err := d.submit(ctx, SubmitRequest{Kind: "secret", Async: true, Payload: &delegatev1.TaskPayload{
		Connector: &delegatev1.ConnectorRef{Identifier: "c"},
		Op:        &delegatev1.TaskPayload_Secret{Secret: &delegatev1.SecretTask{}},
	}})
	if err != nil {
		t.Fatalf("Submit(secret) error: %v", err)
	}
	<-entered // leased to old (credit 2 → 1), resolving

	// The agent reconnects (same process): old is replaced and closed.
	live := mustConnect(t, d, "a", "inst-1", 1)
	if _, err := d.submit(ctx, SubmitRequest{Kind: "ping", Payload: pingPayload()}); err != nil {
		t.Fatalf("Submit(ping 1) error: %v", err)
	}
	waiting, err := d.submit(ctx, SubmitRequest{Kind: "ping", Payload: pingPayload()})
	if err != nil {
		t.Fatalf("Submit(ping 2) error: %v", err)
	}

	close(release) // resolve fails: unlease, then the task fails
	select {
	case <-resolved.done:
	case <-ctx.Done():
		t.Fatal("the task whose resolve failed never finished")
	}

	d.mu.Lock()
	state, attempt, holder := waiting.state, waiting.attempt, waiting.holder
	_, onOld := old.running[waiting.id]
	d.mu.Unlock()
	if state != store.StateQueued || attempt != 0 {
		t.Fatalf("task waiting for credit: state %v, attempt %d, holder %q; want queued with attempt 0 (not leased to the replaced stream)",
			state, attempt, holder)
	}
	if onOld {
		t.Errorf("the replaced stream holds task %s", waiting.id)
	}
	// The live stream's next credit takes it.
	d.credit(live, 1)
	d.mu.Lock()
	state, holder = waiting.state, waiting.holder
	_, onLive := live.running[waiting.id]
	d.mu.Unlock()
	if state != store.StateLeased || !onLive {
		t.Errorf("after the live stream's credit: state %v, holder %q, on the live stream %v; want leased to it", state, holder, onLive)
	}
}

// TestIssue10CreditOnReplacedStreamTakesNothing: a Credit still arriving
// on a stream its agent replaced by reconnecting takes no task (fixed by
// liveLocked before this test; it keeps it so): the waiting task stays
// queued with its attempt, for the live stream.
func TestIssue10CreditOnReplacedStreamTakesNothing(t *testing.T) {
	t.Parallel()
	d := newTestDispatcher(t)
	ctx := t.Context()
	old := mustConnect(t, d, "a", "inst-1", 1)
	live := mustConnect(t, d, "a", "inst-1", 1)
	if _, err := d.submit(ctx, SubmitRequest{Kind: "ping", Payload: pingPayload()}); err != nil {
		t.Fatalf("Submit(ping 1) error: %v", err)
	}
	waiting, err := d.submit(ctx, SubmitRequest{Kind: "ping", Payload: pingPayload()})
	if err != nil {
		t.Fatalf("Submit(ping 2) error: %v", err)
	}
	d.credit(old, 1)
	d.mu.Lock()
	state, attempt, holder := waiting.state, waiting.attempt, waiting.holder
	d.mu.Unlock()
	if state != store.StateQueued || attempt != 0 {
		t.Fatalf("after a credit on the replaced stream: state %v, attempt %d, holder %q; want queued with attempt 0", state, attempt, holder)
	}
	d.credit(live, 1)
	d.mu.Lock()
	_, onLive := live.running[waiting.id]
	d.mu.Unlock()
	if !onLive {
		t.Errorf("after the live stream's credit the task is not on it")
	}
}
