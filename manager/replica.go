package manager

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/smdelegate/smdelegate/internal/ids"
	"github.com/smdelegate/smdelegate/manager/cluster"
	"github.com/smdelegate/smdelegate/manager/dispatch"
	"github.com/smdelegate/smdelegate/manager/peer"
	"github.com/smdelegate/smdelegate/manager/store"
)

// A manager with cluster.name set is a replica of that cluster: several
// managers on one PostgreSQL database and schema (docs/architecture.md,
// "Cluster"). This file is the Server's part of it: the replica's
// identity, the lock it shares with the other replicas, and its
// membership (manager/cluster), built in New, joined and run in Start,
// left in Close.

// replica is the Server's state as a replica (nil for a single manager).
type replica struct {
	id  string
	mem *cluster.Membership
	// node is the peer link startReplica built and runs (nil when
	// SetPeer gave one: its caller runs it).
	node *peer.Node

	// cancel stops the membership's Run; done is closed when it returned.
	// Set by startReplica, cleared by stopReplica.
	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

// clusterLocker is a store that replicas of one cluster may share
// (PostgreSQL): LockCluster takes the store's lock shared with the other
// replicas of cluster (a single manager or a replica of another cluster
// holding it makes it fail, naming them).
type clusterLocker interface {
	LockCluster(ctx context.Context, owner, cluster string) (store.InstanceLock, error)
}

// leaveTimeout bounds leaving the cluster on Close.
const leaveTimeout = 5 * time.Second

// newReplicaID is a replica's ID, new at every start, readable by
// operators: host-pid-random.
func newReplicaID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown-host"
	}
	host, _, _ = strings.Cut(host, ".")
	if len(host) > 40 {
		host = host[:40]
	}
	return fmt.Sprintf("%s-%d-%s", strings.ToLower(host), os.Getpid(), ids.Random()[:8])
}

// newReplica checks that the store can be shared by replicas and keeps
// the replica's ID (the store was opened for it). Nothing runs until
// startReplica.
func (s *Server) newReplica(id string) error {
	if _, ok := s.store.(store.Cluster); !ok {
		return fmt.Errorf("cluster.name: the store cannot be shared by the replicas of a cluster (needs store.driver: postgres)")
	}
	s.rep = &replica{id: id}
	return nil
}

// startReplica builds the replica's membership (advertising addr, the
// address its peers dial), wires the dispatcher to it, records the
// replica in the cluster and runs the membership until stopReplica.
// Called by Start once the store lock is held and the listener bound,
// before the dispatcher recovers.
func (s *Server) startReplica(ctx context.Context, addr string) error {
	r := s.rep
	if r == nil {
		return nil
	}
	cs := s.store.(store.Cluster) // checked by newReplica
	host, _ := os.Hostname()
	self := store.Replica{ID: r.id, Cluster: s.cfg.Cluster.Name, Advertise: addr, Host: host, PID: os.Getpid()}
	r.mem = cluster.New(cluster.Config{
		BeatInterval: s.cfg.Cluster.BeatInterval.D(),
		DeadAfter:    s.cfg.Cluster.DeadAfter.D(),
	}, cs, self, s.base.With().Str("component", "cluster").Str("replica", r.id).Logger())
	if err := s.m.Registry().Register(r.mem.Metrics()); err != nil {
		return fmt.Errorf("cluster metrics: %w", err)
	}
	// The dispatcher's shared queue, set before Recover, and the store's
	// events (beside the peer link's, below).
	s.disp.SetCluster(dispatch.ClusterConfig{Replica: r.id, Store: cs, Members: r.mem,
		PollInterval: s.cfg.Cluster.PollInterval.D()})
	r.mem.Subscribe(s.disp.OnEvent)
	s.api.SetCluster(s.cfg.Cluster.Name, r.mem)
	if s.peer == nil {
		n, err := s.newPeer(cs, r)
		if err != nil {
			return err
		}
		s.peer, r.node = n, n
	}
	r.mem.Subscribe(s.peer.OnEvent)
	if err := r.mem.Join(ctx); err != nil {
		return fmt.Errorf("join cluster %q: %w", s.cfg.Cluster.Name, err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	r.mu.Lock()
	r.cancel, r.done = cancel, make(chan struct{})
	r.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := r.mem.Run(runCtx); err != nil {
			s.log.Error().Err(err).Msg("cluster membership stopped")
		}
	}()
	if r.node != nil {
		wg.Add(1)
		go func() { defer wg.Done(); r.node.Run(runCtx) }()
	}
	go func() { wg.Wait(); close(r.done) }()
	s.log.Info().Str("cluster", s.cfg.Cluster.Name).Str("replica", r.id).Str("advertise", addr).Msg("joined the cluster")
	return nil
}

// stopReplica leaves the cluster (the row goes: the others know at once)
// and stops the membership. Idempotent; a replica never started only
// returns.
func (s *Server) stopReplica(ctx context.Context) error {
	r := s.rep
	if r == nil {
		return nil
	}
	r.mu.Lock()
	cancel, done := r.cancel, r.done
	r.cancel = nil
	r.mu.Unlock()
	if cancel == nil {
		return nil
	}
	lctx, lcancel := context.WithTimeout(context.WithoutCancel(ctx), leaveTimeout)
	err := r.mem.Leave(lctx)
	lcancel()
	cancel()
	<-done
	if err != nil {
		err = fmt.Errorf("leave cluster %q: %w", s.cfg.Cluster.Name, err)
	}
	if r.node != nil {
		err = errors.Join(err, r.node.Close())
	}
	return err
}

// newPeer builds the replica's peer link (manager/peer): its PeerService,
// registered by Start, and the dispatcher's forwarding of sync tasks and
// cluster-wide delegate records. Calls to peers use the listener's TLS
// files (the peers' certificates verified against the system roots and
// tls.cert_file's chain); plaintext only under tls.insecure.
func (s *Server) newPeer(cs store.Cluster, r *replica) (*peer.Node, error) {
	var tc *tls.Config
	if !s.cfg.TLS.Insecure {
		var err error
		if tc, err = peer.ClientTLS(s.cfg.TLS.CertFile, s.cfg.TLS.KeyFile, ""); err != nil {
			return nil, fmt.Errorf("cluster peer link: %w", err)
		}
	}
	n, err := peer.New(peer.Config{Replica: r.id, Token: s.cfg.Cluster.PeerToken, TLS: tc, Store: cs, Members: r.mem}, s.disp, s.base)
	if err != nil {
		return nil, fmt.Errorf("cluster peer link: %w", err)
	}
	return n, nil
}

// advertise is the address this replica's peers dial: cluster.advertise,
// else the bound gRPC listener (listen names a host: Validate).
func (s *Server) advertise() string {
	if s.cfg.Cluster.Advertise != "" {
		return s.cfg.Cluster.Advertise
	}
	return s.lis.Addr().String()
}

// Replica is this manager's replica ID, or "" for a single manager.
func (s *Server) Replica() string {
	if s.rep == nil {
		return ""
	}
	return s.rep.id
}
