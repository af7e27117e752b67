package cluster_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/smdelegate/smdelegate/internal/harness"
	"github.com/smdelegate/smdelegate/manager/cluster"
	"github.com/smdelegate/smdelegate/manager/store"
)

// fast are timers for tests: a beat every 10 ms, dead after 100 ms.
var fast = cluster.Config{BeatInterval: 10 * time.Millisecond, DeadAfter: 100 * time.Millisecond}

func self(id string) store.Replica {
	return store.Replica{ID: id, Cluster: "c1", Advertise: id + ":7070", Host: "h-" + id, PID: 1}
}

// running is a Membership whose Run the test stops with stop.
type running struct {
	*cluster.Membership
	log    *harness.LogBuffer
	cancel context.CancelFunc
	result chan error
}

// start builds a membership of id on f, joins and runs it; cleanup stops
// it and checks that Run returned nil.
func start(t *testing.T, f *fakeCluster, cfg cluster.Config, id string, subs ...func(store.Event)) *running {
	t.Helper()
	log := &harness.LogBuffer{}
	m := cluster.New(cfg, f, self(id), zerolog.New(log))
	for _, fn := range subs {
		m.Subscribe(fn)
	}
	if err := m.Join(t.Context()); err != nil {
		t.Fatalf("Join() = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Membership: m, log: log, cancel: cancel, result: make(chan error, 1)}
	go func() { r.result <- m.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels Run and waits for it (idempotent).
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	if err, ok := <-r.result; ok {
		close(r.result)
		if err != nil {
			t.Errorf("Run() = %v, want nil once cancelled", err)
		}
	}
}

// waitUntil waits for cond, re-checked whenever f changes; it fails the
// test if cond does not hold within a minute (a hang, not a speed check).
func waitUntil(t *testing.T, f *fakeCluster, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(time.Minute)
	for !cond() {
		select {
		case <-f.changed:
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func peerIDs(m *cluster.Membership) []string {
	var out []string
	for _, r := range m.Peers() {
		out = append(out, r.ID)
	}
	return out
}

// TestIssue11MembershipFindsTheDeadAndDropsThem: a replica whose row is
// older than DeadAfter is dropped (once, logged once) and is neither
// alive nor a peer; a fresh one is both. Two replicas may drop the same
// one: DropReplica is idempotent. smd_cluster_replicas counts the live.
func TestIssue11MembershipFindsTheDeadAndDropsThem(t *testing.T) {
	t.Parallel()
	f := newFakeCluster()
	f.put(store.Replica{ID: "r2", Cluster: "c1", Advertise: "r2:7070", StartedAt: time.Now()})
	f.put(store.Replica{ID: "dead", Cluster: "c1", Advertise: "dead:7070", Age: time.Hour})
	m := start(t, f, fast, "r1")
	if !m.Alive("r2") || m.Alive("dead") || !m.Alive("r1") || m.Alive("unknown") {
		t.Errorf("after Join: Alive(r2, dead, r1, unknown) = %v %v %v %v, want true false true false",
			m.Alive("r2"), m.Alive("dead"), m.Alive("r1"), m.Alive("unknown"))
	}
	if got := peerIDs(m.Membership); !slices.Equal(got, []string{"r2"}) {
		t.Errorf("Peers() = %v, want [r2]", got)
	}
	if m.Self() != "r1" {
		t.Errorf("Self() = %q, want r1", m.Self())
	}
	waitUntil(t, f, "the dead replica dropped", func() bool { _, _, _, d := f.snapshot(); return len(d) > 0 })
	// Another replica finds it dead at the same time: dropped again, harmlessly.
	f.put(store.Replica{ID: "dead", Cluster: "c1", Age: time.Hour})
	waitUntil(t, f, "the dead replica dropped again", func() bool { _, _, _, d := f.snapshot(); return len(d) > 1 })
	m.stop(t)
	if _, _, _, drops := f.snapshot(); slices.ContainsFunc(drops, func(id string) bool { return id != "dead" }) {
		t.Errorf("DropReplica calls = %v, want only the dead replica", drops)
	}
	if n := strings.Count(m.log.String(), "replica found dead"); n != 1 {
		t.Errorf("logged %d lines about the dead replica, want 1:\n%s", n, m.log)
	}
	if got := gaugeValue(t, m.Metrics()); got != 2 {
		t.Errorf("smd_cluster_replicas = %v, want 2 (r1, r2)", got)
	}
}

// TestIssue11MembershipThroughAStoreOutage: while the store fails, the
// replica keeps trying with backoff (no spin: far fewer attempts than
// beat intervals), logs the outage once and its end once, and once the
// store is back it drops nobody whose row went stale during the outage
// (every row did) before it has beaten for DeadAfter itself: the others
// beat again meanwhile.
func TestIssue11MembershipThroughAStoreOutage(t *testing.T) {
	t.Parallel()
	cfg := cluster.Config{BeatInterval: 10 * time.Millisecond, DeadAfter: 200 * time.Millisecond}
	f := newFakeCluster()
	f.put(store.Replica{ID: "r2", Cluster: "c1", StartedAt: time.Now()})
	m := start(t, f, cfg, "r1")

	f.setFail(errOutage)
	began := time.Now()
	waitUntil(t, f, "ten failed heartbeats", func() bool { _, failed, _, _ := f.snapshot(); return failed >= 10 })
	_, failed, _, _ := f.snapshot()
	// Backoff doubles up to DeadAfter/3: ten attempts span well over ten
	// beat intervals. A loop retrying at once would make thousands.
	if elapsed := time.Since(began); failed > int(elapsed/cfg.BeatInterval)+1 {
		t.Errorf("%d heartbeats in %s of outage, want at most one per beat interval (%s)", failed, elapsed, cfg.BeatInterval)
	}
	// The store is back; r2's row is stale, as every row is after an
	// outage, until r2 beats again a few rounds later.
	f.put(store.Replica{ID: "r2", Cluster: "c1", Age: time.Hour})
	_, _, reads0, _ := f.snapshot()
	f.setFail(nil)
	waitUntil(t, f, "three reads after the outage", func() bool { _, _, r, _ := f.snapshot(); return r >= reads0+3 })
	f.put(store.Replica{ID: "r2", Cluster: "c1", Age: 0})
	waitUntil(t, f, "DeadAfter of heartbeats after the outage", func() bool {
		_, _, r, _ := f.snapshot()
		return r >= reads0+3+int(2*cfg.DeadAfter/cfg.BeatInterval)
	})
	m.stop(t)
	if _, _, _, drops := f.snapshot(); len(drops) != 0 {
		t.Errorf("DropReplica after an outage = %v, want none: r2 beat again within DeadAfter", drops)
	}
	log := m.log.String()
	if n := strings.Count(log, "cluster heartbeat failing"); n != 1 {
		t.Errorf("logged the outage %d times, want once:\n%s", n, log)
	}
	if n := strings.Count(log, "cluster heartbeat working again"); n != 1 {
		t.Errorf("logged the outage's end %d times, want once:\n%s", n, log)
	}
	if strings.Contains(log, "still failing") {
		t.Errorf("logged 'still failing' within the first minute of an outage:\n%s", log)
	}
}

// TestIssue11MembershipFansEventsOut: every subscriber gets every event,
// in order; a listener that could not connect is tried again and the
// subscribers hear EventResync first (notifications were missed).
func TestIssue11MembershipFansEventsOut(t *testing.T) {
	t.Parallel()
	f := newFakeCluster()
	f.listenErrs = []error{errOutage}
	got := make([][]store.Event, 2)
	ch := make(chan struct{}, 16)
	sub := func(i int) func(store.Event) {
		return func(e store.Event) { got[i] = append(got[i], e); ch <- struct{}{} }
	}
	m := start(t, f, fast, "r1", sub(0), sub(1))
	want := []store.Event{{Kind: store.EventResync}, {Kind: store.EventQueued}, {Kind: store.EventFinal, TaskID: "t1"}}
	for _, e := range want[1:] {
		f.events <- e
	}
	for range 2 * len(want) {
		select {
		case <-ch:
		case <-time.After(time.Minute):
			t.Fatalf("subscribers got %v, want %v each", got, want)
		}
	}
	m.stop(t)
	for i := range got {
		if diff := cmp.Diff(want, got[i]); diff != "" {
			t.Errorf("subscriber %d (-want +got):\n%s", i, diff)
		}
	}
}

// TestIssue11MembershipLeave: Leave deletes the row and no heartbeat
// puts it back while Run goes on.
func TestIssue11MembershipLeave(t *testing.T) {
	t.Parallel()
	f := newFakeCluster()
	m := start(t, f, fast, "r1")
	if err := m.Leave(t.Context()); err != nil {
		t.Fatalf("Leave() = %v", err)
	}
	beats, _, reads, _ := f.snapshot()
	waitUntil(t, f, "three more rounds", func() bool { _, _, r, _ := f.snapshot(); return r >= reads+3 })
	m.stop(t)
	f.mu.Lock()
	_, there := f.rows["r1"]
	f.mu.Unlock()
	if b, _, _, _ := f.snapshot(); there || b != beats {
		t.Errorf("after Leave: row there = %v, beats %d → %d; want the row gone and no beat", there, beats, b)
	}
}

// TestIssue11MembershipDroppedItself: when the others dropped this
// replica (its row reappears with another start), the subscribers
// resync and a warning says why.
func TestIssue11MembershipDroppedItself(t *testing.T) {
	t.Parallel()
	f := newFakeCluster()
	resync := make(chan struct{}, 1)
	m := start(t, f, fast, "r1", func(e store.Event) {
		if e.Kind == store.EventResync {
			select {
			case resync <- struct{}{}:
			default:
			}
		}
	})
	time.Sleep(time.Millisecond) // the new row's StartedAt must differ
	if err := f.DropReplica(t.Context(), "r1"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-resync:
	case <-time.After(time.Minute):
		t.Fatal("no EventResync after this replica was dropped by the others")
	}
	m.stop(t)
	if !strings.Contains(m.log.String(), "took this one for dead") {
		t.Errorf("no warning that this replica was dropped:\n%s", m.log)
	}
}

// TestIssue11MembershipStatus: Status lists every row, alive or not,
// with the delegates each holds; a store failure is returned.
func TestIssue11MembershipStatus(t *testing.T) {
	t.Parallel()
	f := newFakeCluster()
	f.put(store.Replica{ID: "r2", Cluster: "c1", Age: time.Second})
	f.put(store.Replica{ID: "r3", Cluster: "c1", Age: time.Minute})
	f.delegates = []store.DelegateRecord{{Name: "a", Replica: "r2"}, {Name: "b", Replica: "r2"}, {Name: "c", Replica: "r3"}}
	m := cluster.New(cluster.Config{BeatInterval: time.Second, DeadAfter: 10 * time.Second}, f, self("r1"), zerolog.Nop())
	st, err := m.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][2]any{}
	for _, s := range st {
		got[s.ID] = [2]any{s.Alive, s.Delegates}
	}
	want := map[string][2]any{"r2": {true, 2}, "r3": {false, 1}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Status() (-want +got):\n%s", diff)
	}
	f.setFail(errOutage)
	if _, err := m.Status(t.Context()); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Status() during an outage = %v, want ErrUnavailable", err)
	}
}

// TestIssue11MembershipStopsOnClosedStore: store.ErrClosed is not
// retried: Run returns it.
func TestIssue11MembershipStopsOnClosedStore(t *testing.T) {
	t.Parallel()
	f := newFakeCluster()
	m := cluster.New(fast, f, self("r1"), zerolog.Nop())
	f.setFail(store.ErrClosed)
	done := make(chan error, 1)
	go func() { done <- m.Run(context.Background()) }()
	select {
	case err := <-done:
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("Run() on a closed store = %v, want ErrClosed", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Run() on a closed store did not return")
	}
}

// gaugeValue is the value of the one gauge c collects.
func gaugeValue(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 || len(mfs[0].GetMetric()) != 1 {
		t.Fatalf("Gather() = %v, %v; want one gauge", mfs, err)
	}
	return mfs[0].GetMetric()[0].GetGauge().GetValue()
}
