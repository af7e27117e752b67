// Package cluster is a replica's membership of a cluster: several
// managers on one store (store.Cluster). A replica records itself alive
// every beat interval, reads the others' heartbeat rows, finds a replica
// whose row went stale dead and drops it (its delegate records go, its
// queued tasks return to the shared queue), and hands the store's
// notifications to the parts of the manager that act on them.
package cluster

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/smdelegate/smdelegate/manager/store"
)

// Config is a Membership's timing (the manager's cluster: section).
type Config struct {
	// BeatInterval is how often the replica records itself alive.
	BeatInterval time.Duration
	// DeadAfter is how stale a replica's row may be (by the store's
	// clock) before it is taken for dead. At least 3 × BeatInterval.
	DeadAfter time.Duration
}

// Membership is one replica's view of its cluster. Build it with New,
// add subscribers with Subscribe, call Join, then Run; Leave at shutdown.
// Its accessors are safe for concurrent use.
type Membership struct {
	cfg   Config
	st    store.Cluster
	self  store.Replica
	log   zerolog.Logger
	gauge prometheus.Gauge

	// beatMu serializes Beat with Leave, so that no heartbeat in flight
	// puts the row back once Leave has deleted it; left is set by Leave.
	beatMu sync.Mutex
	left   bool

	// fanMu serializes calls of the subscribers (events come from the
	// listener, a resync from the beat loop); subs is set before Run.
	fanMu sync.Mutex
	subs  []func(store.Event)

	// mu guards the view of the last read of the replica rows.
	mu sync.Mutex
	// alive: the replicas whose row was fresh (self included), by ID.
	alive map[string]store.Replica
	// dead: the IDs of replicas this one found dead and has not seen
	// dropped yet.
	dead []string
	// started is this replica's row's StartedAt as first read: a later
	// read showing another means the others dropped it meanwhile.
	started time.Time
	// dropped: replicas this one dropped (logged once each).
	dropped map[string]bool
}

// New is the membership of self (its ID, Cluster, Advertise, Host, PID
// set) in the cluster st holds.
func New(cfg Config, st store.Cluster, self store.Replica, log zerolog.Logger) *Membership {
	return &Membership{
		cfg:  cfg,
		st:   st,
		self: self,
		log:  log,
		gauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "smd_cluster_replicas",
			Help: "Live replicas of the cluster (this one included), as this replica last read them.",
		}),
		alive:   map[string]store.Replica{self.ID: self},
		dropped: map[string]bool{},
	}
}

// Subscribe adds fn to the functions called with every event of the
// cluster (store.Cluster.Listen's, and EventResync when notifications may
// have been missed). Call it before Run. Subscribers are called one at a
// time, never concurrently, and must not block: they hold up the others.
func (m *Membership) Subscribe(fn func(store.Event)) {
	m.fanMu.Lock()
	defer m.fanMu.Unlock()
	m.subs = append(m.subs, fn)
}

// publish calls every subscriber with e.
func (m *Membership) publish(e store.Event) {
	m.fanMu.Lock()
	defer m.fanMu.Unlock()
	for _, fn := range m.subs {
		fn(e)
	}
}

// Metrics is the collector of smd_cluster_replicas, for the manager's
// registry.
func (m *Membership) Metrics() prometheus.Collector { return m.gauge }

// Self is this replica's ID.
func (m *Membership) Self() string { return m.self.ID }

// Dead returns the IDs of the replicas this one found dead (their row
// stale by more than DeadAfter) and has not yet seen dropped. A replica
// only finds others dead once its own heartbeats have succeeded for
// DeadAfter: after an outage of the store every row is stale, and the
// others need a moment to beat again.
func (m *Membership) Dead() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.dead...)
}

// Alive says whether replica id was alive at the last read: this replica
// always is; an ID without a fresh row (dead, dropped, left, unknown) is
// not.
func (m *Membership) Alive(id string) bool {
	if id == m.self.ID {
		return true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.alive[id]
	return ok
}

// Peers returns the replicas alive at the last read, this one excepted,
// with the address they advertise.
func (m *Membership) Peers() []store.Replica {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]store.Replica, 0, len(m.alive))
	for id, r := range m.alive {
		if id != m.self.ID {
			out = append(out, r)
		}
	}
	sortReplicas(out)
	return out
}

// Status is a replica as operators see it (smd cluster list).
type Status struct {
	store.Replica
	// Alive: its row is fresh (Age ≤ DeadAfter).
	Alive bool
	// Delegates is how many delegates are connected to it.
	Delegates int
}

// Status reads every replica's row and the delegates each holds, now
// (not the view of the last beat), for operators.
func (m *Membership) Status(ctx context.Context) ([]Status, error) {
	reps, err := m.st.Replicas(ctx)
	if err != nil {
		return nil, err
	}
	ds, err := m.st.Delegates(ctx)
	if err != nil {
		return nil, err
	}
	held := map[string]int{}
	for _, d := range ds {
		held[d.Replica]++
	}
	out := make([]Status, 0, len(reps))
	for _, r := range reps {
		out = append(out, Status{Replica: r, Alive: r.Age <= m.cfg.DeadAfter, Delegates: held[r.ID]})
	}
	return out, nil
}

// Leave stops the heartbeats and deletes this replica's row (a clean
// shutdown: the others need not wait DeadAfter to know it is gone). Call
// it once this replica has given back its queued tasks; Run may still be
// running (it beats no more).
func (m *Membership) Leave(ctx context.Context) error {
	m.beatMu.Lock()
	defer m.beatMu.Unlock()
	m.left = true
	return m.st.Leave(ctx, m.self.ID)
}
