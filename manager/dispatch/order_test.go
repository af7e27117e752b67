package dispatch

import (
	"context"
	"path/filepath"
	"sync"
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

// orderRig is a dispatcher on a bolt store with a clock the test moves,
// and one delegate whose outbox the test reads.
type orderRig struct {
	t   *testing.T
	db  *bolt.DB
	cfg Config
	d   *Dispatcher
	dg  *delegate
	out *outbox.Outbox[*delegatev1.ManagerMessage]

	mu    sync.Mutex // guards clock
	clock time.Time
}

func newOrderRig(t *testing.T) *orderRig {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), bolt.FileName), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	r := &orderRig{t: t, db: db, clock: time.Now(), cfg: Config{
		LeaseDuration: config.Duration(time.Minute), HeartbeatInterval: config.Duration(10 * time.Second),
		QueueTimeout: config.Duration(time.Minute), TaskDeadline: config.Duration(10 * time.Minute), MaxAttempts: 3,
		MissedHeartbeats: 100,
	}}
	r.restart()
	return r
}

// restart builds a new dispatcher on the same store and recovers it, as
// a manager restart does; the delegate connects again with nothing running.
func (r *orderRig) restart() {
	r.t.Helper()
	if r.d != nil {
		r.d.close()
	}
	r.d = New(r.cfg, r.db, zerolog.Nop(), NewMetrics())
	r.d.now = r.now
	if _, err := r.d.recover(context.Background()); err != nil {
		r.t.Fatalf("recover: %v", err)
	}
	r.connect(nil)
}

// connect connects the delegate "d" (capacity 8), resuming running.
func (r *orderRig) connect(running []*delegatev1.RunningTask) {
	r.t.Helper()
	r.out = outbox.New[*delegatev1.ManagerMessage](0)
	dg, err := r.d.connect(&delegatev1.Hello{Name: "d", Capacity: 8, InstanceId: "i", Running: running},
		identity.Identity{Kind: identity.Delegate, Name: "tok"}, r.out)
	if err != nil {
		r.t.Fatalf("connect: %v", err)
	}
	r.dg = dg
}

func (r *orderRig) now() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.clock
}

func (r *orderRig) advance(by time.Duration) {
	r.mu.Lock()
	r.clock = r.clock.Add(by)
	r.mu.Unlock()
}

// update submits an async update of secret name through a connector of
// region.
func (r *orderRig) update(region, name string) *task {
	r.t.Helper()
	st := &delegatev1.SecretTask{Op: &delegatev1.SecretTask_Update{Update: &delegatev1.UpdateSecretOp{Name: name}}}
	p := &delegatev1.TaskPayload{Op: &delegatev1.TaskPayload_Secret{Secret: st}}
	tk, err := r.d.submit(context.Background(), SubmitRequest{Kind: "secret.update", Payload: p, Async: true,
		OrderKey: OrderKey(&delegatev1.Connector{Region: region, SecretNamePrefix: "team"}, st)})
	if err != nil {
		r.t.Fatalf("Submit(update %s): %v", name, err)
	}
	return tk
}

// sent returns the tasks sent to the delegate so far, by id (claims
// are persisted before a Task message is pushed: it waits for those of
// the leased tasks of want).
func (r *orderRig) sent(want ...*task) map[string]*delegatev1.Task {
	r.t.Helper()
	got := map[string]*delegatev1.Task{}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		for _, m := range r.out.Take(ctx, nil) {
			if tk := m.GetTask(); tk != nil {
				got[tk.GetId()] = tk
			}
		}
		cancel()
		missing := false
		for _, w := range want {
			missing = missing || got[w.id] == nil
		}
		if !missing {
			return got
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("tasks sent: %d, want at least %d", len(got), len(want))
		}
	}
}

// finish reports tk's result (code) under lease and waits until it is final.
func (r *orderRig) finish(tk *task, lease string, code delegatev1.Code) {
	r.t.Helper()
	r.d.result(r.dg, &delegatev1.TaskResult{TaskId: tk.id, LeaseId: lease, Outcome: &delegatev1.Outcome{Code: code}})
	select {
	case <-tk.done:
	case <-time.After(10 * time.Second):
		r.t.Fatalf("task %s is not final after its result", tk.id)
	}
}

func (r *orderRig) state(tk *task) (store.State, bool) {
	r.d.mu.Lock()
	defer r.d.mu.Unlock()
	return tk.state, tk.waiting
}

// TestIssue10OrderSameSecret: a second mutation of a secret is not
// dispatched while the first runs, whatever connector prefix form names
// it, while a mutation of another secret (or of the same name in another
// region) runs in parallel; it is dispatched once the first is final,
// even when the first failed.
func TestIssue10OrderSameSecret(t *testing.T) {
	t.Parallel()
	r := newOrderRig(t)
	first := r.update("eu-west-1", "db")
	second := r.update("eu-west-1", "team/db") // the same AWS name: team/db
	other := r.update("eu-west-1", "api")
	otherRegion := r.update("us-east-1", "db")
	got := r.sent(first, other, otherRegion)
	if got[second.id] != nil {
		t.Fatalf("second update of team/db was dispatched while the first runs")
	}
	if st, waiting := r.state(second); st != store.StateQueued || !waiting {
		t.Fatalf("second update: state %v waiting %v, want queued and waiting", st, waiting)
	}
	r.finish(first, got[first.id].GetLeaseId(), delegatev1.Code_THROTTLED)
	if got := r.sent(second); got[second.id] == nil {
		t.Fatal("second update not dispatched after the first failed")
	}
}

// TestIssue10OrderWaitingNotCounted: time spent behind a predecessor does
// not count toward queue_timeout nor the task deadline: the successor's
// timers start when it becomes the head.
func TestIssue10OrderWaitingNotCounted(t *testing.T) {
	t.Parallel()
	r := newOrderRig(t)
	first := r.update("", "db")
	second := r.update("", "db")
	lease := r.sent(first)[first.id].GetLeaseId()
	// Longer than queue_timeout (1m) and most of the deadline (10m): the
	// first one's lease is kept by heartbeats.
	for range 9 {
		r.advance(time.Minute)
		r.d.heartbeat(r.dg, 1, []*delegatev1.RunningTask{{TaskId: first.id, LeaseId: lease}})
		r.d.sweepOnce()
	}
	if st, waiting := r.state(second); st != store.StateQueued || !waiting {
		t.Fatalf("second update after 9m behind the first: state %v waiting %v, want queued and waiting", st, waiting)
	}
	r.finish(first, lease, delegatev1.Code_OK)
	lease2 := r.sent(second)[second.id].GetLeaseId()
	// 9m since it became the head, 18m since it was submitted.
	r.advance(9 * time.Minute)
	r.d.heartbeat(r.dg, 2, []*delegatev1.RunningTask{{TaskId: second.id, LeaseId: lease2}})
	r.d.sweepOnce()
	if st, _ := r.state(second); st != store.StateLeased {
		t.Fatalf("second update 9m after it became the head: state %v, want leased (its deadline is 10m from then)", st)
	}
	r.advance(2 * time.Minute)
	r.d.heartbeat(r.dg, 3, []*delegatev1.RunningTask{{TaskId: second.id, LeaseId: lease2}})
	r.d.sweepOnce()
	select {
	case <-second.done:
	case <-time.After(10 * time.Second):
		t.Fatal("second update did not time out 11m after it became the head")
	}
	if c := second.outcome.GetCode(); c != delegatev1.Code_TIMEOUT {
		t.Fatalf("second update outcome %v, want TIMEOUT", c)
	}
}

// TestIssue10OrderFencedRedispatch: an ordered task whose delegate went
// silent is dispatched again only once its lease and the fence margin
// (one heartbeat interval) have passed, not when its stream closes, and
// its successor waits for it throughout.
func TestIssue10OrderFencedRedispatch(t *testing.T) {
	t.Parallel()
	r := newOrderRig(t)
	first := r.update("eu-west-1", "db")
	second := r.update("eu-west-1", "db")
	r.sent(first)
	// The manager closes the stream (as for missed heartbeats): the task
	// keeps its lease, the agent may still be running it.
	r.d.evict(r.dg, &StreamClosedError{Reason: CloseMissedHeartbeats, Msg: "evicted by the test"})
	r.connect(nil) // another stream of the agent, without the task
	r.advance(r.cfg.LeaseDuration.D() + time.Second)
	r.d.sweepOnce()
	if st, _ := r.state(first); st != store.StateLeased {
		t.Fatalf("first update just after its lease expired: state %v, want still leased (fence margin)", st)
	}
	r.advance(r.cfg.HeartbeatInterval.D())
	r.d.sweepOnce()
	got := r.sent(first)
	if tk := got[first.id]; tk.GetAttempt() != 2 {
		t.Fatalf("first update re-dispatched with attempt %d, want 2", tk.GetAttempt())
	}
	if got[second.id] != nil {
		t.Fatal("second update dispatched while the first is re-dispatched")
	}
}

// TestIssue10OrderRecovered: after a manager restart the chains are
// rebuilt from the store in creation order: the leased head keeps its
// lease (the agent resumes it), the others wait, and they run one by one
// in submission order.
func TestIssue10OrderRecovered(t *testing.T) {
	t.Parallel()
	r := newOrderRig(t)
	var ups []*task
	for range 4 {
		ups = append(ups, r.update("eu-west-1", "db"))
	}
	lease := r.sent(ups[0])[ups[0].id].GetLeaseId()
	r.restart()
	r.connect([]*delegatev1.RunningTask{{TaskId: ups[0].id, LeaseId: lease}})
	ids := make([]string, len(ups))
	for i, u := range ups {
		ids[i] = u.id
	}
	byID := func(id string) *task {
		r.d.mu.Lock()
		defer r.d.mu.Unlock()
		return r.d.tasks[id]
	}
	head := byID(ids[0])
	for i, id := range ids[1:] {
		if tk := byID(id); tk == nil || !tk.waiting {
			t.Fatalf("recovered update %d: %+v, want waiting", i+1, tk)
		}
	}
	r.finish(head, lease, delegatev1.Code_OK)
	for i, id := range ids[1:] {
		tk := byID(id)
		got := r.sent(tk)
		for _, later := range ids[i+2:] {
			if got[later] != nil {
				t.Fatalf("update %d dispatched before update %d is final", slicesIndex(ids, later), i+1)
			}
		}
		r.finish(tk, got[id].GetLeaseId(), delegatev1.Code_OK)
	}
}

func slicesIndex(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// TestIssue10OrderKey: the key is the secret at AWS, whichever connector
// names it: the connector's region and the full name with its prefix.
func TestIssue10OrderKey(t *testing.T) {
	t.Parallel()
	update := func(name string) *delegatev1.SecretTask {
		return &delegatev1.SecretTask{Op: &delegatev1.SecretTask_Update{Update: &delegatev1.UpdateSecretOp{Name: name}}}
	}
	acme := &delegatev1.Scope{Account: "acme"}
	same := OrderKey(&delegatev1.Connector{Scope: acme, Region: "eu-west-1", SecretNamePrefix: "team"}, update("db"))
	tests := []struct {
		name string
		c    *delegatev1.Connector
		st   *delegatev1.SecretTask
		want bool // the same key as `same`
	}{
		{"no prefix, full name", &delegatev1.Connector{Scope: acme, Region: "eu-west-1"}, update("team/db"), true},
		{"prefix with slashes", &delegatev1.Connector{Scope: acme, Region: "eu-west-1", SecretNamePrefix: "/team/"}, update("db"), true},
		{"name already prefixed", &delegatev1.Connector{Scope: acme, Region: "eu-west-1", SecretNamePrefix: "team"}, update("team/db"), true},
		{"a connector of a project of the account", &delegatev1.Connector{Scope: &delegatev1.Scope{Account: "acme", Org: "o", Project: "p"},
			Region: "eu-west-1", SecretNamePrefix: "team"}, update("db"), true},
		{"a delete of it", &delegatev1.Connector{Scope: acme, Region: "eu-west-1", SecretNamePrefix: "team"},
			&delegatev1.SecretTask{Op: &delegatev1.SecretTask_Delete{Delete: &delegatev1.DeleteSecretOp{Name: "db"}}}, true},
		{"another region", &delegatev1.Connector{Scope: acme, Region: "us-east-1", SecretNamePrefix: "team"}, update("db"), false},
		{"no region", &delegatev1.Connector{Scope: acme, SecretNamePrefix: "team"}, update("db"), false},
		{"another prefix", &delegatev1.Connector{Scope: acme, Region: "eu-west-1", SecretNamePrefix: "ops"}, update("db"), false},
		{"another account", &delegatev1.Connector{Scope: &delegatev1.Scope{Account: "other"}, Region: "eu-west-1", SecretNamePrefix: "team"}, update("db"), false},
		{"an unscoped connector", &delegatev1.Connector{Region: "eu-west-1", SecretNamePrefix: "team"}, update("db"), false},
	}
	for _, tt := range tests {
		if got := OrderKey(tt.c, tt.st) == same; got != tt.want {
			t.Errorf("%s: orderKey = %q, same as %q: %v, want %v", tt.name, OrderKey(tt.c, tt.st), same, got, tt.want)
		}
	}
	get := &delegatev1.SecretTask{Op: &delegatev1.SecretTask_Get{Get: &delegatev1.GetSecretOp{Name: "db"}}}
	if k := OrderKey(&delegatev1.Connector{Region: "eu-west-1"}, get); k != "" {
		t.Errorf("OrderKey(get) = %q, want \"\" (reads are not ordered)", k)
	}
}
