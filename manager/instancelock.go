package manager

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/smdelegate/smdelegate/manager/store"
)

// instanceLock is the manager's hold on a store that several processes can
// open (PostgreSQL), keeping a second manager off it: Start takes it
// before it reads or writes anything, a goroutine watches it, Close
// releases it after the store is closed. bolt needs none: its file lock,
// taken at open, admits one process.
type instanceLock struct {
	lock store.InstanceLock // nil: the store has no such lock

	// lost, when set, is why /readyz answers 503: the lock is lost, and
	// the store fails every call until it is taken again.
	lost atomic.Pointer[string]

	// failed is closed, once, when the manager cannot serve any more;
	// err (set before) says why.
	failOnce sync.Once
	failed   chan struct{}
	err      error
}

// releaseTimeout bounds releasing the lock on Close.
const releaseTimeout = 5 * time.Second

// lockOwner describes this process to a manager the lock refuses.
func lockOwner() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown-host"
	}
	return fmt.Sprintf("smd manager %s pid %d", host, os.Getpid())
}

// takeLock takes the store's manager lock, if it has one: exclusive for a
// single manager, shared with the other replicas of its cluster for a
// replica (cluster.name). A manager already holding it (or, for a replica,
// a single manager or replicas of another cluster) makes this one refuse
// to start, with an error that names them.
func (s *Server) takeLock(ctx context.Context) error {
	owner := lockOwner()
	var (
		lock store.InstanceLock
		err  error
	)
	if name := s.cfg.Cluster.Name; name != "" {
		l, ok := s.store.(clusterLocker)
		if !ok {
			return fmt.Errorf("cluster.name: the store has no lock that replicas of a cluster can share (needs store.driver: postgres)")
		}
		lock, err = l.LockCluster(ctx, owner, name)
	} else {
		l, ok := s.store.(store.InstanceLocker)
		if !ok {
			return nil
		}
		lock, err = l.LockInstance(ctx, owner)
	}
	if err != nil {
		return err
	}
	s.il.lock = lock
	s.log.Info().Str("owner", owner).Str("cluster", s.cfg.Cluster.Name).Msg("took the store's manager lock")
	return nil
}

// watchLock watches the lock until ctx is done, in the server's
// WaitGroup. While the lock is lost the manager is not ready (/readyz,
// gRPC health NOT_SERVING) and its store fails every call, which the
// dispatcher retries and the API answers Unavailable; the lock is taken
// again before it serves. If another manager held it meanwhile, this one
// fails (Failed) and cmd/smd exits non-zero.
func (s *Server) watchLock(ctx context.Context) {
	if s.il.lock == nil {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.il.lock.Run(ctx, s.lockChanged); err != nil {
			s.fail(fmt.Errorf("store lock: %w", err))
		}
	}()
}

func (s *Server) lockChanged(held bool, _ error) {
	if held {
		s.il.lost.Store(nil)
		s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
		return
	}
	why := "lost the store's manager lock; taking it again"
	s.il.lost.Store(&why)
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
}

// fail records why the manager cannot serve any more and closes Failed.
func (s *Server) fail(err error) {
	s.il.failOnce.Do(func() {
		s.il.err = err
		why := "not serving: another manager held the store's lock while this one had lost it; see the log"
		s.il.lost.Store(&why)
		close(s.il.failed)
	})
}

// Failed is closed when the manager can no longer serve and should be
// closed and its process exit non-zero (a supervisor restarts it): its
// store lock was lost and another manager held it meanwhile. Err says
// why.
func (s *Server) Failed() <-chan struct{} { return s.il.failed }

// Err is why Failed is closed, or nil.
func (s *Server) Err() error {
	select {
	case <-s.il.failed:
		return s.il.err
	default:
		return nil
	}
}

// releaseLock releases the lock, if held: cleanup, so even under a
// cancelled ctx, for a few seconds at most.
func (s *Server) releaseLock(ctx context.Context) error {
	if s.il.lock == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	err := s.il.lock.Close(ctx)
	s.il.lock = nil
	return err
}
