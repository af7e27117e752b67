package manager_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/manager"
	"github.com/smdelegate/smdelegate/manager/peer"
	"github.com/smdelegate/smdelegate/manager/store"
	"github.com/smdelegate/smdelegate/manager/store/postgres"
	"github.com/smdelegate/smdelegate/manager/store/postgres/pgtest"
)

// The replicas of issue 11's peer link in one process: real managers
// (manager.Server on 127.0.0.1:0, their PeerService registered) wired to
// a cluster, either fakeCluster (delegate records and events in memory)
// or PostgreSQL's.

// peerToken is the cluster's shared peer token in these tests.
const peerToken = "test-peer-token-0123456789abcdef-0123456789"

var errFake = errors.New("not in the fake cluster")

// fakeCluster is a store.Cluster holding only what the peer link uses:
// delegate records with ConnectDelegate's rules, and events delivered to
// every subscriber at once. It also plays the membership: replicas are
// alive until marked dead.
type fakeCluster struct {
	mu   sync.Mutex // guards everything below
	recs map[string]store.DelegateRecord
	subs []func(store.Event)
	reps map[string]string // live replica ID -> advertise address
	dead map[string]bool
}

var _ store.Cluster = (*fakeCluster)(nil)

func newFakeCluster() *fakeCluster {
	return &fakeCluster{recs: map[string]store.DelegateRecord{}, reps: map[string]string{}, dead: map[string]bool{}}
}

func (c *fakeCluster) record(name string) (store.DelegateRecord, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.recs[name]
	return r, ok
}

func (c *fakeCluster) ConnectDelegate(_ context.Context, d store.DelegateRecord, dead []string) (*store.DelegateRecord, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.recs[d.Name]; ok && !slices.Contains(dead, old.Replica) &&
		(d.InstanceID == "" || d.InstanceID != old.InstanceID || d.TokenName != old.TokenName || d.Scope != old.Scope) {
		return &old, store.ErrExists
	}
	d.ConnectedAt, d.UpdatedAt = time.Now(), time.Now()
	c.recs[d.Name] = d
	return &d, nil
}

func (c *fakeCluster) UpdateDelegates(_ context.Context, replica string, ds []store.DelegateRecord) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range ds {
		if r, ok := c.recs[d.Name]; ok && r.Replica == replica {
			r.Running, r.Draining, r.Tags, r.UpdatedAt = d.Running, d.Draining, d.Tags, time.Now()
			c.recs[d.Name] = r
		}
	}
	return nil
}

func (c *fakeCluster) DisconnectDelegate(_ context.Context, replica, name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.recs[name]; ok && r.Replica == replica {
		delete(c.recs, name)
	}
	return nil
}

func (c *fakeCluster) Delegates(context.Context) ([]store.DelegateRecord, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]store.DelegateRecord, 0, len(c.recs))
	for _, r := range c.recs {
		out = append(out, r)
	}
	return out, nil
}

func (c *fakeCluster) DropReplica(_ context.Context, replica string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for n, r := range c.recs {
		if r.Replica == replica {
			delete(c.recs, n)
		}
	}
	return nil
}

func (c *fakeCluster) Notify(_ context.Context, e store.Event) error {
	c.mu.Lock()
	subs := slices.Clone(c.subs)
	c.mu.Unlock()
	for _, fn := range subs {
		fn(e)
	}
	return nil
}

func (c *fakeCluster) subscribe(fn func(store.Event)) {
	c.mu.Lock()
	c.subs = append(c.subs, fn)
	c.mu.Unlock()
}

func (c *fakeCluster) Beat(context.Context, store.Replica) error           { return errFake }
func (c *fakeCluster) Replicas(context.Context) ([]store.Replica, error)   { return nil, errFake }
func (c *fakeCluster) Leave(context.Context, string) error                 { return errFake }
func (c *fakeCluster) Listen(context.Context, func(store.Event)) error     { return errFake }
func (c *fakeCluster) ExpireQueued(context.Context) ([]*store.Task, error) { return nil, errFake }
func (c *fakeCluster) Pull(context.Context, string, []store.PullWant) ([]*store.Task, error) {
	return nil, errFake
}
func (c *fakeCluster) Disown(context.Context, string, []string) (int, error) { return 0, errFake }
func (c *fakeCluster) Adopt(context.Context, string, []store.LeaseRef, time.Duration) ([]*store.Task, error) {
	return nil, errFake
}
func (c *fakeCluster) RenewLeases(context.Context, string, []store.LeaseRef, time.Duration) ([]store.LeaseRef, error) {
	return nil, errFake
}
func (c *fakeCluster) ExpireLeases(context.Context, time.Duration, time.Duration) ([]*store.Task, error) {
	return nil, errFake
}

// members is replica self's view of the fake membership.
type members struct {
	c    *fakeCluster
	self string
}

func (m members) Dead() []string {
	m.c.mu.Lock()
	defer m.c.mu.Unlock()
	var out []string
	for id := range m.c.dead {
		out = append(out, id)
	}
	return out
}

func (m members) Alive(id string) bool {
	m.c.mu.Lock()
	defer m.c.mu.Unlock()
	_, ok := m.c.reps[id]
	return ok && !m.c.dead[id]
}

func (m members) Peers() []store.Replica {
	m.c.mu.Lock()
	defer m.c.mu.Unlock()
	var out []store.Replica
	for id, addr := range m.c.reps {
		if id != m.self && !m.c.dead[id] {
			out = append(out, store.Replica{ID: id, Advertise: addr})
		}
	}
	return out
}

// replica is one manager of a test cluster.
type replica struct {
	id   string
	srv  *manager.Server
	node *peer.Node
}

// replicaOpts tweak mustReplica.
type replicaOpts struct {
	cfg   func(*manager.Config)
	store store.Store        // nil: bolt
	clus  store.Cluster      // nil: the fake cluster
	peer  func(*peer.Config) // changes the peer link's config
	log   *zerolog.Logger    // nil: testLogger
	mem   peer.Members       // nil: the fake cluster's
}

// mustReplica starts replica id of cluster c: a manager with short timers
// whose peer link uses c for its membership (and, unless o.clus is set,
// for its delegate records) and refreshes every 50 ms. It is stopped
// when the test ends.
func mustReplica(t testing.TB, c *fakeCluster, id string, o replicaOpts) *replica {
	t.Helper()
	log := testLogger(t)
	if o.log != nil {
		log = *o.log
	}
	// Built like mustManagerWith's, but started here, after SetPeer.
	var srv *manager.Server
	tweak := func(cfg *manager.Config) {
		if o.cfg != nil {
			o.cfg(cfg)
		}
	}
	srv = newReplicaManager(t, tweak, log, o.store)
	clus := o.clus
	if clus == nil {
		clus = c
	}
	var mem peer.Members = members{c: c, self: id}
	if o.mem != nil {
		mem = o.mem
	}
	pc := peer.Config{Replica: id, Token: peerToken, Store: clus, Members: mem, Refresh: 50 * time.Millisecond}
	if o.peer != nil {
		o.peer(&pc)
	}
	n, err := peer.New(pc, srv.Dispatcher(), log)
	if err != nil {
		t.Fatalf("peer.New: %v", err)
	}
	srv.SetPeer(n)
	if err := srv.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.Run(ctx) }()
	t.Cleanup(func() {
		srv.Close(context.Background())
		cancel()
		<-done
		n.Close()
	})
	c.mu.Lock()
	c.reps[id] = srv.Addr()
	c.subs = append(c.subs, n.OnEvent)
	c.mu.Unlock()
	return &replica{id: id, srv: srv, node: n}
}

// newReplicaManager builds (does not start) a manager configured as
// mustManager's.
func newReplicaManager(t testing.TB, tweak func(*manager.Config), log zerolog.Logger, st store.Store) *manager.Server {
	t.Helper()
	cfg := manager.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.HTTPListen = ""
	cfg.DataDir = t.TempDir()
	cfg.TLS.Insecure = true
	cfg.MasterKey = testMasterKey
	cfg.Auth.DelegateTokens = []manager.TokenConfig{{Name: "d", SHA256: manager.HashToken(delegateToken)}}
	cfg.Auth.OperatorTokens = []manager.TokenConfig{{Name: "o", SHA256: manager.HashToken(operatorToken)}}
	cfg.Dispatch.LeaseDuration = config.Duration(2 * time.Second)
	cfg.Dispatch.HeartbeatInterval = config.Duration(200 * time.Millisecond)
	cfg.Dispatch.QueueTimeout = config.Duration(5 * time.Second)
	cfg.Dispatch.TaskDeadline = config.Duration(20 * time.Second)
	cfg.Dispatch.MissedHeartbeats = 10
	if tweak != nil {
		tweak(&cfg)
	}
	srv, err := manager.New(cfg, log, st)
	if err != nil {
		t.Fatalf("manager.New: %v", err)
	}
	return srv
}

// sharedStore is a store several in-process replicas open on one
// PostgreSQL schema, without the exclusive manager lock (which
// cluster.name replaces with the cluster's shared lock): only Store's
// methods are visible.
type sharedStore struct{ store.Store }

// mustSharedSchema opens n stores on one new PostgreSQL database.
func mustSharedSchema(t *testing.T, n int) []store.Store {
	t.Helper()
	dsn, _ := pgtest.Database(t)
	var out []store.Store
	for range n {
		db, err := postgres.Open(t.Context(), dsn, postgres.Options{})
		if err != nil {
			t.Fatalf("postgres.Open: %v", err)
		}
		out = append(out, sharedStore{db}) // the manager closes it
	}
	return out
}
