// Package agent is the delegate daemon: it opens one outbound stream to the
// manager, announces its tags and capacity, runs the tasks pushed to it
// within its credit, renews their leases with heartbeats, and reconnects
// with backoff, carrying its running tasks and unacknowledged results over
// to the next stream.
package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/smdelegate/smdelegate/internal/ids"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// Handler runs one task and always returns an outcome.
type Handler interface {
	Run(ctx context.Context, t *delegatev1.Task) *delegatev1.Outcome
}

// FatalError stops the agent: retrying cannot help (a refused token, a
// forbidden tag, a manager that does not speak the protocol). The codes
// are listed in fatal; everything else is retried with backoff.
type FatalError struct {
	Code codes.Code
	Msg  string
}

func (e *FatalError) Error() string { return e.Msg }

// Agent is the delegate daemon.
type Agent struct {
	cfg      Config
	log      zerolog.Logger
	handler  Handler
	version  string
	hostname string
	// instance identifies this process to the manager (Hello.instance_id):
	// its reconnects replace its own stream, and no other agent's.
	instance string

	mu       sync.Mutex // guards the fields below
	running  map[string]*run
	pending  map[string]*delegatev1.TaskResult // results the manager has not acked
	cur      *session                          // the live stream, nil between streams
	draining bool
	// changed is closed and replaced whenever running or pending shrink,
	// or draining starts: what the drain wait and Run's backoff watch.
	changed chan struct{}
	// fenceAfter is the lease duration after which a task no heartbeat
	// acknowledgement renewed is fenced (fence.go); 0: no fencing (before
	// the first Welcome, or a manager that does not acknowledge heartbeats).
	fenceAfter time.Duration

	taskCtx    context.Context // parent of every task; cancelled by CancelRunning
	cancelRuns context.CancelFunc

	// resolver looks up the manager's host names (net.DefaultResolver).
	resolver Resolver
}

// run is one running task.
type run struct {
	leaseID string
	cancel  context.CancelFunc
	// renewed is when the lease was last known renewed at the manager
	// (fence.go); fenced is set once the fence cancelled the task.
	renewed time.Time
	fenced  bool
}

// New builds an agent. cfg must have passed Validate.
func New(cfg Config, log zerolog.Logger, h Handler, version string) *Agent {
	host, _ := os.Hostname()
	ctx, cancel := context.WithCancel(context.Background())
	return &Agent{
		cfg: cfg, log: log, handler: h, version: version, hostname: host, instance: ids.Random(),
		running: map[string]*run{}, pending: map[string]*delegatev1.TaskResult{},
		changed: make(chan struct{}), taskCtx: ctx, cancelRuns: cancel,
		resolver: net.DefaultResolver,
	}
}

// Drain stops taking tasks: the manager is told, running tasks finish (for
// at most DrainTimeout), their results are delivered, and Run returns nil.
func (a *Agent) Drain() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.draining {
		return
	}
	a.draining = true
	if a.cur != nil {
		a.cur.push(&delegatev1.AgentMessage{Msg: &delegatev1.AgentMessage_Draining{Draining: &delegatev1.Draining{}}})
	}
	a.notifyLocked()
	if d := a.cfg.DrainTimeout.D(); d > 0 {
		time.AfterFunc(d, func() {
			if a.Running() > 0 {
				a.log.Warn().Dur("drain_timeout", d).Msg("drain timeout reached")
				a.CancelRunning()
			}
		})
	}
	a.log.Info().Int("running", len(a.running)).Msg("draining: no new tasks; waiting for running tasks to finish")
}

// CancelRunning cancels every running task; their (cancelled) results are
// still reported.
func (a *Agent) CancelRunning() {
	a.log.Warn().Msg("cancelling running tasks")
	a.cancelRuns()
}

// Running returns how many tasks are running.
func (a *Agent) Running() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.running)
}

func (a *Agent) notifyLocked() {
	close(a.changed)
	a.changed = make(chan struct{})
}

// drained reports whether a draining agent has nothing left to do, and
// returns a channel closed at the next change.
func (a *Agent) drained() (bool, <-chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.draining && len(a.running) == 0 && len(a.pending) == 0, a.changed
}

// Run connects and serves until ctx is done (hard stop), a drain
// completes (nil), or the manager refuses the agent (*FatalError). Each
// attempt dials the next address of the rotation (managers.go): after a
// lost stream, or an address that refused or timed out, the agent tries
// another manager, waiting the backoff between attempts; the backoff
// starts again once a stream was welcomed.
func (a *Agent) Run(ctx context.Context) error {
	endpoints, err := parseManagers(a.cfg.Manager)
	if err != nil {
		return err
	}
	tlsBase, err := a.tlsConfig()
	if err != nil {
		return err
	}
	rot := newRotation(endpoints, a.resolver, rand.IntN)

	fctx, stopFence := context.WithCancel(context.Background())
	fenced := make(chan struct{})
	go func() { defer close(fenced); a.fence(fctx) }()
	defer func() { stopFence(); <-fenced }()

	var drainTimer <-chan time.Time
	failures := 0
	for {
		t := rot.Next(ctx)
		welcomed, err := a.attempt(ctx, t, tlsBase)
		if ctx.Err() != nil {
			return nil
		}
		if done, _ := a.drained(); done {
			a.log.Info().Msg("drained; exiting")
			return nil
		}
		if fe := fatal(err); fe != nil {
			return fe
		}
		if welcomed {
			failures = 0
		}
		failures++
		wait := a.backoff(failures)
		l := a.log.Warn().Err(err).Str("manager", t.endpoint).Str("address", t.addr).Dur("retry_in", wait)
		if status.Code(err) == codes.AlreadyExists {
			// Another agent process holds the name, or the manager has
			// not noticed yet that our previous process is gone.
			l.Msg("manager refused the name: another connected delegate holds it; retrying")
		} else {
			// Also when the address refused or timed out: the next
			// attempt goes to the next address.
			l.Msg("stream to manager lost; reconnecting")
		}
		if a.isDraining() && drainTimer == nil && a.cfg.DrainTimeout.D() > 0 {
			drainTimer = time.After(a.cfg.DrainTimeout.D())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		case <-drainTimer:
			a.log.Warn().Msg("drain timeout while disconnected; exiting with results undelivered (their leases expire and the tasks run again)")
			a.CancelRunning()
			return nil
		}
	}
}

// connectTimeout bounds the TCP and TLS handshakes of one attempt (gRPC's
// default, said here because docs/architecture.md states it).
const connectTimeout = 20 * time.Second

// attempt dials t and runs one stream on it until it ends. welcomed says
// whether the manager accepted the Hello.
func (a *Agent) attempt(ctx context.Context, t target, tlsBase *tls.Config) (welcomed bool, err error) {
	if t.err != nil {
		return false, t.err
	}
	creds := insecure.NewCredentials()
	if tlsBase != nil {
		tc := tlsBase.Clone()
		if tc.ServerName == "" { // tls.server_name overrides every address's
			tc.ServerName = t.serverName
		}
		creds = credentials.NewTLS(tc)
	}
	// passthrough: t.addr is already resolved; gRPC must not resolve it
	// again, nor spread the stream over addresses itself.
	conn, err := grpc.NewClient("passthrough:///"+t.addr,
		grpc.WithTransportCredentials(creds),
		// Ping below the typical 60 s idle timeout of load balancers.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}),
		// An address that does not answer fails the attempt after this.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.DefaultConfig, MinConnectTimeout: connectTimeout}),
	)
	if err != nil {
		return false, fmt.Errorf("manager %s: %w", t.addr, err)
	}
	defer conn.Close()
	return a.session(ctx, delegatev1.NewDelegateServiceClient(conn), t)
}

func (a *Agent) isDraining() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.draining
}

// backoff is full jitter: uniform in [0, min(max, initial·2^(n-1))], and at
// least 50 ms so a flapping manager is not hammered.
func (a *Agent) backoff(n int) time.Duration {
	ceil := a.cfg.Reconnect.Max.D()
	if n < 30 {
		ceil = min(ceil, a.cfg.Reconnect.Initial.D()<<(n-1))
	}
	return max(50*time.Millisecond, time.Duration(rand.Int64N(int64(ceil)+1)))
}

// fatal returns a *FatalError for the status codes that must not be
// retried, with a message an operator can act on. Everything else
// (Unavailable, Internal, deadline, transport errors) is retried, and so
// is AlreadyExists: the name is held by another connected delegate (a
// second agent with the same name, or this host's previous process that
// the manager has not seen leave yet), which may go away; this agent
// gets the name once it does.
func fatal(err error) *FatalError {
	st, ok := status.FromError(err)
	if !ok {
		return nil
	}
	switch st.Code() {
	case codes.Unauthenticated:
		// The token was refused: wrong, revoked or missing.
		return &FatalError{st.Code(), "manager refused the delegate token (" + st.Message() + "); check token, token_file or SMD_TOKEN"}
	case codes.PermissionDenied:
		// The token may not do this (an operator token, a forbidden tag).
		return &FatalError{st.Code(), "manager denied this delegate: " + st.Message()}
	case codes.Unimplemented:
		// Not a manager, or one that does not speak delegate.v1.
		return &FatalError{st.Code(), "the address is not an smd manager speaking delegate.v1: " + st.Message()}
	case codes.InvalidArgument:
		// The Hello was refused (bad name or capacity): a config error.
		return &FatalError{st.Code(), "manager refused the delegate's hello: " + st.Message()}
	}
	return nil
}

// tlsConfig is the TLS configuration every address is dialed with (nil
// when tls.insecure); attempt sets the server name per address.
func (a *Agent) tlsConfig() (*tls.Config, error) {
	if a.cfg.TLS.Insecure {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: a.cfg.TLS.ServerName}
	if a.cfg.TLS.CAFile != "" {
		pem, err := os.ReadFile(a.cfg.TLS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca_file: no PEM certificates in %s", a.cfg.TLS.CAFile)
		}
		tc.RootCAs = pool
	}
	if a.cfg.TLS.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(a.cfg.TLS.CertFile, a.cfg.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls.cert_file/tls.key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
