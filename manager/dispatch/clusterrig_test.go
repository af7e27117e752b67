package dispatch

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/internal/outbox"
	"github.com/smdelegate/smdelegate/manager/identity"
	"github.com/smdelegate/smdelegate/manager/store"
	"github.com/smdelegate/smdelegate/manager/store/postgres"
	"github.com/smdelegate/smdelegate/manager/store/postgres/pgtest"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// A cluster of dispatchers on one shared queue, for the tests of issue
// 11: the in-memory fakeQueue, or with SMD_TEST_POSTGRES_DSN set, real
// PostgreSQL stores opened as replicas on one schema. Delegates are
// simulated at the dispatcher's Session, as the stream handler drives it.

// backend opens replica stores on one shared queue.
type backend struct {
	name string
	// open returns replica id's store; listen delivers the store's
	// events to fn until the test ends.
	open   func(t *testing.T, id string) store.Store
	listen func(t *testing.T, st store.Store, fn func(store.Event))
	// fake is the shared queue of the fake backend (nil on PostgreSQL).
	fake *fakeQueue
}

// clusterCfg is the dispatch config of the cluster tests: short leases
// and heartbeats.
func clusterCfg() Config {
	return Config{
		LeaseDuration: config.Duration(2 * time.Second), HeartbeatInterval: config.Duration(100 * time.Millisecond),
		QueueTimeout: config.Duration(time.Minute), TaskDeadline: config.Duration(2 * time.Minute), MaxAttempts: 3,
		MissedHeartbeats: 50,
	}
}

func fakeBackend() *backend {
	q := newFakeQueue(clusterCfg().LeaseDuration.D())
	return &backend{
		name: "fake", fake: q,
		open:   func(t *testing.T, id string) store.Store { return q.replica(t, id) },
		listen: func(t *testing.T, _ store.Store, fn func(store.Event)) { q.subscribe(t, fn) },
	}
}

// pgBackend is a fresh schema on the test server; nil (the test is
// skipped) without SMD_TEST_POSTGRES_DSN.
func pgBackend(t *testing.T) *backend {
	if os.Getenv(pgtest.EnvDSN) == "" {
		return nil
	}
	dsn := pgtest.DSN(t)
	schema := pgtest.Name("smdq_")
	t.Cleanup(func() { pgtest.Exec(t, dsn, "DROP SCHEMA IF EXISTS "+schema+" CASCADE") })
	return &backend{
		name: "postgres",
		open: func(t *testing.T, id string) store.Store {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			db, err := postgres.Open(ctx, dsn, postgres.Options{Schema: schema, Replica: id, LeaseDuration: clusterCfg().LeaseDuration.D()})
			if err != nil {
				t.Fatalf("open replica %s: %v", id, err)
			}
			t.Cleanup(func() { db.Close() })
			return db
		},
		listen: func(t *testing.T, st store.Store, fn func(store.Event)) {
			// An event sent before LISTEN is issued is missed: the
			// puller's safety poll covers it, as in production.
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				defer close(done)
				if err := st.(store.Cluster).Listen(ctx, fn); err != nil {
					t.Errorf("listen: %v", err)
				}
			}()
			t.Cleanup(func() { cancel(); <-done })
		},
	}
}

// backends are the backends a cluster test runs on.
func backends(t *testing.T) []*backend {
	bs := []*backend{fakeBackend()}
	if pg := pgBackend(t); pg != nil {
		bs = append(bs, pg)
	}
	return bs
}

// replicaRig is one replica: its dispatcher, running (Sweep) until stop.
type replicaRig struct {
	id   string
	d    *Dispatcher
	st   store.Store
	stop func() // ends Sweep (and the cluster loops), as a dead replica's end
}

// startReplica starts replica id on b.
func startReplica(t *testing.T, b *backend, id string) *replicaRig {
	t.Helper()
	st := b.open(t, id)
	log := zerolog.Nop()
	if os.Getenv("SMD_TEST_LOG") != "" {
		log = zerolog.New(zerolog.NewTestWriter(t)).With().Str("replica", id).Logger()
	}
	d := New(clusterCfg(), st, log, NewMetrics())
	d.SetCluster(ClusterConfig{Replica: id, Store: st.(store.Cluster), PollInterval: time.Second})
	if _, err := d.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	b.listen(t, st, d.OnEvent)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Sweep(ctx, 50*time.Millisecond) }()
	var once sync.Once
	r := &replicaRig{id: id, d: d, st: st, stop: func() { once.Do(func() { cancel(); <-done }) }}
	t.Cleanup(func() {
		d.Close()
		r.stop()
		d.Join()
	})
	return r
}

// ledger records what the simulated agents did.
type ledger struct {
	mu    sync.Mutex // guards the fields below
	runs  map[string]int
	order []string // task ids in the order agents received them
	acked map[string]bool
}

func newLedger() *ledger { return &ledger{runs: map[string]int{}, acked: map[string]bool{}} }

func (l *ledger) ran(id string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.runs[id]
}

// agent is a simulated agent process: one stream at a time to a
// replica's dispatcher, running ping tasks at once (or holding them),
// heartbeating what it holds.
type agent struct {
	t        *testing.T
	name     string
	instance string
	scope    store.Scope
	capacity int
	led      *ledger
	// hold keeps received tasks running (no result) until finishHeld.
	hold bool

	mu      sync.Mutex // guards the fields below
	running map[string]string
	cancels []string
	s       *Session
	stop    func()
}

func newAgent(t *testing.T, led *ledger, name string, capacity int) *agent {
	return &agent{t: t, name: name, instance: name + "-instance", capacity: capacity, led: led, running: map[string]string{}}
}

// connect opens a stream to r, listing the tasks it holds.
func (a *agent) connect(r *replicaRig) {
	a.t.Helper()
	out := outbox.New[*delegatev1.ManagerMessage](0)
	a.mu.Lock()
	var held []*delegatev1.RunningTask
	for id, lease := range a.running {
		held = append(held, &delegatev1.RunningTask{TaskId: id, LeaseId: lease})
	}
	a.mu.Unlock()
	s, err := r.d.Connect(&delegatev1.Hello{Name: a.name, Capacity: int32(a.capacity), InstanceId: a.instance, Running: held},
		identity.Identity{Kind: identity.Delegate, Name: "tok-" + a.name, Scope: a.scope}, out)
	if err != nil {
		a.t.Fatalf("connect %s to %s: %v", a.name, r.id, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); a.read(ctx, s, out) }()
	go func() { defer wg.Done(); a.beat(ctx, s, r.d.cfg.HeartbeatInterval.D()) }()
	a.mu.Lock()
	a.s = s
	a.stop = func() { cancel(); out.Close(); wg.Wait(); s.Disconnect() }
	a.mu.Unlock()
	a.t.Cleanup(a.disconnect)
}

// disconnect ends the stream (the agent keeps what it holds).
func (a *agent) disconnect() {
	a.mu.Lock()
	stop := a.stop
	a.stop = nil
	a.mu.Unlock()
	if stop != nil {
		stop()
	}
}

func (a *agent) read(ctx context.Context, s *Session, out *outbox.Outbox[*delegatev1.ManagerMessage]) {
	var buf []*delegatev1.ManagerMessage
	for {
		if buf = out.Take(ctx, buf); buf == nil {
			return
		}
		for _, m := range buf {
			switch {
			case m.GetTask() != nil:
				tk := m.GetTask()
				a.led.mu.Lock()
				a.led.runs[tk.GetId()]++
				a.led.order = append(a.led.order, tk.GetId())
				a.led.mu.Unlock()
				a.mu.Lock()
				a.running[tk.GetId()] = tk.GetLeaseId()
				hold := a.hold
				a.mu.Unlock()
				if !hold {
					a.finish(s, tk.GetId())
				}
			case m.GetCancel() != nil:
				a.mu.Lock()
				delete(a.running, m.GetCancel().GetTaskId())
				a.cancels = append(a.cancels, m.GetCancel().GetTaskId())
				a.mu.Unlock()
			case m.GetResultAck() != nil:
				a.led.mu.Lock()
				a.led.acked[m.GetResultAck().GetTaskId()] = m.GetResultAck().GetAccepted()
				a.led.mu.Unlock()
			}
		}
	}
}

// finish sends task id's result (OK) on s and a credit.
func (a *agent) finish(s *Session, id string) {
	a.mu.Lock()
	lease, ok := a.running[id]
	delete(a.running, id)
	a.mu.Unlock()
	if !ok {
		return
	}
	s.Result(&delegatev1.TaskResult{TaskId: id, LeaseId: lease, Outcome: &delegatev1.Outcome{Code: delegatev1.Code_OK}})
	s.Credit(1)
}

// finishHeld sends the results of every task it holds on its stream.
func (a *agent) finishHeld() {
	a.mu.Lock()
	s := a.s
	ids := make([]string, 0, len(a.running))
	for id := range a.running {
		ids = append(ids, id)
	}
	a.mu.Unlock()
	for _, id := range ids {
		a.finish(s, id)
	}
}

func (a *agent) held() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.running)
}

func (a *agent) beat(ctx context.Context, s *Session, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for seq := uint64(1); ; seq++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		a.mu.Lock()
		var rs []*delegatev1.RunningTask
		for id, lease := range a.running {
			rs = append(rs, &delegatev1.RunningTask{TaskId: id, LeaseId: lease})
		}
		a.mu.Unlock()
		s.Heartbeat(seq, rs)
	}
}

// ping submits an async ping on r (with an order key when key is set).
func ping(t *testing.T, r *replicaRig, key string) *Submitted {
	t.Helper()
	s, err := r.d.Submit(context.Background(), SubmitRequest{Kind: "ping", Async: true, OrderKey: key,
		Payload: &delegatev1.TaskPayload{Op: &delegatev1.TaskPayload_Ping{Ping: &delegatev1.PingTask{}}}})
	if err != nil {
		t.Fatalf("submit on %s: %v", r.id, err)
	}
	return s
}

// eventually waits until cond holds, failing t with what after a long
// while (a hang, not a speed bound).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stored reads task id from st.
func stored(t *testing.T, st store.Store, id string) *store.Task {
	t.Helper()
	got, err := st.GetTask(context.Background(), id)
	if err != nil {
		t.Fatalf("GetTask(%s) = %v", id, err)
	}
	return got
}

// waitDone waits for s to be final and returns its view.
func waitDone(t *testing.T, s *Submitted) *delegatev1.TaskInfo {
	t.Helper()
	select {
	case <-s.Done():
	case <-time.After(60 * time.Second):
		t.Fatalf("task %s never ended: %v", s.ID(), s.Info())
	}
	return s.Info()
}

// waitStored waits for task id to be final in st and returns it.
func waitStored(t *testing.T, st store.Store, id string) *store.Task {
	t.Helper()
	var got *store.Task
	eventually(t, "task "+id+" final in the store", func() bool {
		got = stored(t, st, id)
		return got.State.Final()
	})
	return got
}
