package manager_test

import (
	"context"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smdelegate/smdelegate/manager/platform"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/smdelegate/smdelegate/agent"
	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/internal/seal"
	"github.com/smdelegate/smdelegate/manager"
	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

var testMasterKey = func() []byte {
	k, err := seal.LoadKey("", seal.GenerateKey())
	if err != nil {
		panic(err)
	}
	return k
}()

const (
	delegateToken = "test-delegate-token"
	operatorToken = "test-operator-token"
)

func testLogger(t testing.TB) zerolog.Logger {
	if os.Getenv("SMD_TEST_LOG") != "" {
		return zerolog.New(zerolog.NewTestWriter(t)).With().Timestamp().Logger()
	}
	return zerolog.Nop()
}

// mustManager starts a manager on 127.0.0.1:0 with short timers; tweak
// changes its config first.
func mustManager(t testing.TB, tweak func(*manager.Config)) *manager.Server {
	t.Helper()
	return mustManagerWith(t, tweak, testLogger(t), nil)
}

// mustManagerWith is mustManager with this logger and store (nil: bolt
// under the data directory).
func mustManagerWith(t testing.TB, tweak func(*manager.Config), log zerolog.Logger, st store.Store) *manager.Server {
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
	// A silent agent is closed no sooner than its leases expire (2 s),
	// as with the defaults: a loaded test machine must not close agents.
	cfg.Dispatch.MissedHeartbeats = 10
	if tweak != nil {
		tweak(&cfg)
	}
	srv, err := manager.New(cfg, log, st)
	if err != nil {
		t.Fatalf("manager.New: %v", err)
	}
	// The tasks the manager runs itself, as cmd/smd wires them.
	runner, err := platform.New(cfg.Platform.Endpoints.Allow, log)
	if err != nil {
		t.Fatalf("platform.New: %v", err)
	}
	srv.SetPlatform(runner)
	if err := srv.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { srv.Close(context.Background()) })
	return srv
}

// recorder is an agent Handler that records which tasks ran, how many at
// once, and can be told what to do with each one.
type recorder struct {
	name     string
	inflight atomic.Int32
	maxSeen  atomic.Int32
	mu       sync.Mutex // guards runs
	runs     map[string]int
	// onRun, if set, runs inside the handler (after counting).
	onRun func(ctx context.Context, t *delegatev1.Task)
	inner agent.Handler
}

func (r *recorder) Run(ctx context.Context, t *delegatev1.Task) *delegatev1.Outcome {
	n := r.inflight.Add(1)
	defer r.inflight.Add(-1)
	for {
		m := r.maxSeen.Load()
		if n <= m || r.maxSeen.CompareAndSwap(m, n) {
			break
		}
	}
	r.mu.Lock()
	r.runs[t.GetId()]++
	r.mu.Unlock()
	if r.onRun != nil {
		r.onRun(ctx, t)
	}
	return r.inner.Run(ctx, t)
}

func (r *recorder) count(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.runs[id]
}

// startAgent runs an agent against addr until the test ends.
func startAgent(t testing.TB, addr, name string, tags []string, concurrency int, onRun func(context.Context, *delegatev1.Task)) *recorder {
	t.Helper()
	cfg := agent.DefaultConfig()
	cfg.Manager = addr
	cfg.Token = delegateToken
	cfg.TLS.Insecure = true
	cfg.Name = name
	cfg.Tags = tags
	cfg.Concurrency = concurrency
	return runTestAgent(t, cfg, testLogger(t), &agent.TaskHandler{Name: name, Version: "test"}, onRun)
}

// runTestAgent runs an agent with cfg (fast reconnects) and inner behind a
// recorder until the test ends.
func runTestAgent(t testing.TB, cfg agent.Config, log zerolog.Logger, inner *agent.TaskHandler, onRun func(context.Context, *delegatev1.Task)) *recorder {
	t.Helper()
	name := cfg.Name
	cfg.Reconnect.Initial = config.Duration(20 * time.Millisecond)
	cfg.Reconnect.Max = config.Duration(100 * time.Millisecond)
	if err := cfg.Validate(); err != nil {
		t.Fatalf("agent config: %v", err)
	}
	rec := &recorder{name: name, runs: map[string]int{}, onRun: onRun, inner: inner}
	a := agent.New(cfg, log, rec, "test")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Errorf("agent %s did not stop", name)
		}
	})
	return rec
}

// operator returns an API client with the operator token.
func operator(t testing.TB, addr string) (delegatev1.ManagerServiceClient, context.Context) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+operatorToken)
	return delegatev1.NewManagerServiceClient(conn), ctx
}

// waitDelegates waits until n delegates are connected.
func waitDelegates(t testing.TB, c delegatev1.ManagerServiceClient, ctx context.Context, n int) {
	t.Helper()
	waitFor(t, 5*time.Second, func() bool {
		r, err := c.ListDelegates(ctx, &delegatev1.ListDelegatesRequest{})
		return err == nil && len(r.GetDelegates()) == n
	}, "%d delegates connected", n)
}

func waitFor(t testing.TB, within time.Duration, cond func() bool, what string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for "+what, append([]any{within}, args...)...)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// proxy is a TCP proxy on 127.0.0.1 that a test can cut and pause, to
// break agent streams without touching the agent or the manager.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex // guards conns and paused
	conns  []net.Conn
	paused bool
}

func mustProxy(t testing.TB, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.cut() })
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.paused {
			p.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		go func() { io.Copy(up, c); up.Close() }()
		go func() { io.Copy(c, up); c.Close() }()
	}
}

// cut closes every proxied connection.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// pause refuses new connections (and cut drops the existing ones).
func (p *proxy) pause(v bool) {
	p.mu.Lock()
	p.paused = v
	p.mu.Unlock()
}

func metadataCtx(t testing.TB, token string) context.Context {
	return metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+token)
}

func operatorTLS(t testing.TB, addr, caFile string) (delegatev1.ManagerServiceClient, context.Context) {
	t.Helper()
	creds, err := credentials.NewClientTLSFromFile(caFile, "")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return delegatev1.NewManagerServiceClient(conn), metadataCtx(t, operatorToken)
}
