// Package peer is the link between the replicas of a cluster (several
// `smd manager` processes on one PostgreSQL database): the PeerService a
// replica serves on its own gRPC listener, the pool of clients it calls
// the other replicas with, and the wiring of both into the dispatcher
// (sync tasks forwarded to the replica holding an eligible delegate; the
// cluster-wide registry of delegates; generated values brought to the
// replica where their caller waits). A single manager has none of it.
//
// Replicas authenticate each other with a shared peer token
// (cluster.peer_token_file): the caller sends it as a bearer token, the
// server keeps only its SHA-256 and compares in constant time. The token
// is accepted only on PeerService, which accepts no other token (the
// manager's own token check knows nothing of it, so ManagerService and
// DelegateService refuse it). The link uses the listener's TLS; it is
// plaintext only under tls.insecure.
package peer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"

	"github.com/smdelegate/smdelegate/manager/dispatch"
	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// MinTokenLen is the shortest peer token accepted: it guards every
// replica's PeerService, so it must not be guessable.
const MinTokenLen = 32

// Members is what the peer link needs of the cluster's membership
// (manager/cluster.Membership implements it).
type Members interface {
	// Dead lists the replicas found dead; Alive says whether one is
	// alive.
	Dead() []string
	Alive(id string) bool
	// Peers are the live replicas but this one, with their Advertise
	// address.
	Peers() []store.Replica
}

// Config configures a replica's peer link.
type Config struct {
	// Replica is this replica's ID.
	Replica string
	// Token is the cluster's shared peer token (at least MinTokenLen
	// bytes).
	Token string
	// TLS is the TLS of calls to peers (ClientTLS builds it); nil dials
	// plaintext, for tls.insecure only.
	TLS *tls.Config
	// Store holds the delegate records; Members says who is alive.
	Store   store.Cluster
	Members Members
	// Refresh is how often the delegate records are updated and read
	// (default 1s).
	Refresh time.Duration
}

// Node is a replica's end of the peer link. Build it with New before the
// dispatcher takes streams or tasks, register its service with Register,
// subscribe OnEvent to the membership, run Run, and Close it after the
// dispatcher closed.
type Node struct {
	cfg  Config
	d    *dispatch.Dispatcher
	log  zerolog.Logger
	svc  *Service
	pool *pool
}

var (
	_ dispatch.Forwarder = (*Node)(nil)
	_ dispatch.Courier   = (*Node)(nil)
)

// New builds the peer link of replica cfg.Replica and wires it into d:
// d records its delegates cluster-wide (SetDirectory) and forwards sync
// tasks through the Node (SetForwarder).
func New(cfg Config, d *dispatch.Dispatcher, log zerolog.Logger) (*Node, error) {
	switch {
	case cfg.Replica == "":
		return nil, errors.New("peer: the replica ID is empty")
	case len(cfg.Token) < MinTokenLen:
		return nil, fmt.Errorf("cluster.peer_token_file: the peer token must be at least %d characters", MinTokenLen)
	case cfg.Store == nil || cfg.Members == nil:
		return nil, errors.New("peer: a store and a membership are required")
	}
	log = log.With().Str("component", "peer").Logger()
	n := &Node{cfg: cfg, d: d, log: log, svc: newService(cfg.Token, d, log), pool: newPool(cfg.Token, cfg.TLS)}
	d.SetDirectory(dispatch.DirectoryConfig{Replica: cfg.Replica, Store: cfg.Store, Members: cfg.Members, Refresh: cfg.Refresh})
	d.SetForwarder(n)
	d.SetCourier(n)
	return n, nil
}

// Register serves PeerService on s (the manager's gRPC server).
func (n *Node) Register(s *grpc.Server) { delegatev1.RegisterPeerServiceServer(s, n.svc) }

// OnEvent hands a cluster event to the delegate registry (the
// membership's subscriber; it never blocks).
func (n *Node) OnEvent(e store.Event) { n.d.DirectoryEvent(e) }

// Run keeps the delegate records up to date until ctx is done.
func (n *Node) Run(ctx context.Context) error {
	n.d.RunDirectory(ctx)
	return nil
}

// Close closes the connections to the other replicas.
func (n *Node) Close() error { return n.pool.close() }

// Forward runs req on replica's delegates (dispatch.Forwarder).
func (n *Node) Forward(ctx context.Context, replica string, req dispatch.SubmitRequest) (dispatch.Forwarded, error) {
	c, err := n.client(replica)
	if err != nil {
		return dispatch.Forwarded{}, err
	}
	return runTask(ctx, c, replica, req)
}

// DeliverGenerated hands a generated value to the replica where its
// caller waits (dispatch.Courier).
func (n *Node) DeliverGenerated(ctx context.Context, replica, taskID, leaseID string, o *delegatev1.Outcome) error {
	c, err := n.client(replica)
	if err != nil {
		return err
	}
	return deliverGenerated(ctx, c, replica, taskID, leaseID, o)
}

// client returns the PeerService client of live replica id; not alive,
// or without an address, is dispatch.ErrPeerUnreachable.
func (n *Node) client(replica string) (delegatev1.PeerServiceClient, error) {
	addr := ""
	for _, p := range n.cfg.Members.Peers() {
		if p.ID == replica {
			addr = p.Advertise
		}
	}
	if addr == "" {
		return nil, fmt.Errorf("replica %s: %w (not alive, or no advertise address)", replica, dispatch.ErrPeerUnreachable)
	}
	c, err := n.pool.client(addr)
	if err != nil {
		return nil, fmt.Errorf("replica %s at %s: %w: %v", replica, addr, dispatch.ErrPeerUnreachable, err)
	}
	return c, nil
}
