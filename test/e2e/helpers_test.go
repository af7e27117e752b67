package e2e

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/smdelegate/smdelegate/internal/harness"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// Timers every test uses unless it says otherwise: short, so that lease
// expiry and reconnects happen within seconds.
const (
	defaultLease     = 2 * time.Second
	defaultHeartbeat = 500 * time.Millisecond
)

// proc is a child process with its own log file (harness.Proc), with
// helpers that fail the test.
type proc struct {
	*harness.Proc
}

// startProc starts the smd binary with args, its stdout and stderr in
// dir/<name>.log. The environment is the test's without SMD_* variables,
// plus env. On cleanup the process is killed if still running, its log is
// checked for data races and panics, and when the test failed its tail is
// printed.
func startProc(t testing.TB, dir, name string, env []string, args ...string) *proc {
	t.Helper()
	hp, err := harness.Start(dir, name, smdBin, env, args...)
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{hp}
	t.Cleanup(func() {
		if !p.exited() {
			_ = p.Signal(syscall.SIGKILL)
			<-p.Done()
		}
		log := p.log()
		for _, bad := range []string{"WARNING: DATA RACE", "\npanic: ", "fatal error: "} {
			if strings.Contains("\n"+log, bad) {
				t.Errorf("%s log contains %q", name, strings.TrimSpace(bad))
			}
		}
		if t.Failed() {
			t.Logf("---- tail of %s (%s) ----\n%s", name, p.LogPath, tail(log, 40))
		}
	})
	return p
}

// cleanEnv is the test's environment without SMD_* variables, so that an
// operator's shell cannot change what the tests run.
func cleanEnv() []string { return harness.CleanEnv() }

func tail(s string, n int) string { return harness.Tail(s, n) }

func (p *proc) exited() bool { return p.Exited() }

func (p *proc) pid() int { return p.Pid() }

// log returns everything the process wrote so far.
func (p *proc) log() string { return p.Log() }

// signal sends sig to the process.
func (p *proc) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := p.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill(t testing.TB) {
	t.Helper()
	p.signal(t, syscall.SIGKILL)
	<-p.Done()
}

// wait waits for the process to exit and returns its exit code (-1 when a
// signal ended it).
func (p *proc) wait(t testing.TB, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.Done():
		return p.ExitCode()
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %s", p.Name, timeout)
		return 0
	}
}

// waitFor polls cond until it returns nil, failing the test with cond's
// last error after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freeAddr returns a 127.0.0.1 address whose port was free a moment ago.
// startManager retries when another process took it meanwhile.
func freeAddr(t testing.TB) string {
	t.Helper()
	addr, err := harness.FreeAddr()
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	return addr
}

func randomToken(t testing.TB, prefix string) string {
	t.Helper()
	return harness.RandomToken(prefix)
}

func sha256Hex(s string) string { return harness.SHA256Hex(s) }

func writeYAML(t testing.TB, path string, v any) {
	t.Helper()
	if err := harness.WriteYAML(path, v); err != nil {
		t.Fatal(err)
	}
}

// managerOpts are the dispatch timers of a test manager; zero fields take
// the test defaults.
type managerOpts struct {
	Lease, Heartbeat, QueueTimeout, TaskDeadline time.Duration
	MaxAttempts                                  int
	// Tokens are accepted besides the manager's own two.
	Tokens []tokenOpt
	// PostgresDSN, when set, puts the manager's store in that PostgreSQL
	// database (store.driver postgres in the file, the DSN in
	// SMD_STORE_DSN) instead of bolt under its data dir.
	PostgresDSN string
	// Cluster, when set, makes the manager a replica of that cluster
	// (with PostgresDSN); its siblings are replicas (cluster_helpers_test.go).
	Cluster *harness.Cluster
}

// tokenOpt is one more token of a test manager, with its scope.
type tokenOpt struct {
	Kind  string // "delegate" or "operator"
	Token string
	Scope string // "" for an unscoped token
}

func (o managerOpts) withDefaults() managerOpts {
	if o.Lease == 0 {
		o.Lease = defaultLease
	}
	if o.Heartbeat == 0 {
		o.Heartbeat = defaultHeartbeat
	}
	if o.QueueTimeout == 0 {
		o.QueueTimeout = 30 * time.Second
	}
	if o.TaskDeadline == 0 {
		o.TaskDeadline = 60 * time.Second
	}
	if o.MaxAttempts == 0 {
		o.MaxAttempts = 3
	}
	return o
}

// manager is a manager process, with the tokens it accepts.
type manager struct {
	t             testing.TB
	dir           string
	configPath    string
	Addr          string // gRPC
	HTTPAddr      string
	DelegateToken string
	OperatorToken string
	proc          *proc
	starts        int
	env           []string // SMD_* variables of the process, beside its config file

	apiOnce sync.Once
	api     delegatev1.ManagerServiceClient
}

// startManager writes a manager config with fresh ports, a data dir and a
// delegate and an operator token, starts `smd manager -c` and waits for
// /readyz. A port taken by someone else between freeAddr and the bind is
// retried with new ports.
func startManager(t testing.TB, opts managerOpts) *manager {
	t.Helper()
	opts = opts.withDefaults()
	dir := t.TempDir()
	m := &manager{
		t: t, dir: dir, configPath: filepath.Join(dir, "manager.yaml"),
		DelegateToken: randomToken(t, "smdd_e2e_"), OperatorToken: randomToken(t, "smdo_e2e_"),
	}
	// The master key seals stored credentials and payloads.
	keyPath := filepath.Join(dir, "master.key")
	if err := harness.WriteMasterKey(keyPath); err != nil {
		t.Fatal(err)
	}
	delegateTokens := []harness.Token{{Name: "e2e-delegate", Token: m.DelegateToken}}
	operatorTokens := []harness.Token{{Name: "e2e-operator", Token: m.OperatorToken}}
	for i, tk := range opts.Tokens {
		entry := harness.Token{Name: fmt.Sprintf("e2e-%s-%d", tk.Kind, i), Token: tk.Token, Scope: tk.Scope}
		if tk.Kind == "delegate" {
			delegateTokens = append(delegateTokens, entry)
		} else {
			operatorTokens = append(operatorTokens, entry)
		}
	}
	storeCfg := map[string]any{"driver": "bolt"}
	if opts.PostgresDSN != "" {
		storeCfg = map[string]any{"driver": "postgres"}
		m.env = append(m.env, "SMD_STORE_DSN="+opts.PostgresDSN)
	}
	for try := 0; ; try++ {
		m.Addr, m.HTTPAddr = freeAddr(t), freeAddr(t)
		cfg := harness.Manager{
			Addr: m.Addr, HTTPAddr: m.HTTPAddr, DataDir: filepath.Join(dir, "data"), MasterKeyFile: keyPath,
			DelegateTokens: delegateTokens, OperatorTokens: operatorTokens, LogLevel: "info",
		}.YAML()
		cfg["store"] = storeCfg
		if opts.Cluster != nil {
			cfg["cluster"] = opts.Cluster.YAML()
		}
		cfg["shutdown_timeout"] = "2s"
		cfg["dispatch"] = map[string]any{
			"lease_duration":     opts.Lease.String(),
			"heartbeat_interval": opts.Heartbeat.String(),
			"queue_timeout":      opts.QueueTimeout.String(),
			"task_deadline":      opts.TaskDeadline.String(),
			"max_attempts":       opts.MaxAttempts,
		}
		// Well above what any test here submits, so no limit refuses the
		// chaos workload or a burst of pings; the limits' own tests are
		// in package manager.
		cfg["limits"] = map[string]any{
			"submit_rate":            100000,
			"submit_burst":           100000,
			"scope_unfinished_tasks": 100000,
			"scope_payload_bytes":    1 << 30,
			"ping_max_sleep":         (opts.TaskDeadline / 2).String(),
		}
		writeYAML(t, m.configPath, cfg)
		if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
			t.Fatal(err)
		}
		err := m.start()
		if err == nil {
			return m
		}
		if !errors.Is(err, errAddrInUse) || try == 4 {
			t.Fatalf("start manager: %v", err)
		}
	}
}

var errAddrInUse = errors.New("address already in use")

// start runs the manager on its current config and waits until it is
// ready.
func (m *manager) start() error {
	m.starts++
	name := "manager"
	if m.starts > 1 {
		name = fmt.Sprintf("manager-%d", m.starts)
	}
	m.proc = startProc(m.t, m.dir, name, m.env, "manager", "-c", m.configPath)
	err := harness.WaitReady(m.proc.Proc, m.HTTPAddr, 20*time.Second)
	if errors.Is(err, harness.ErrExited) && strings.Contains(m.proc.log(), "address already in use") {
		return errAddrInUse
	}
	return err
}

// restart starts the manager again on the same config: same ports, same
// data dir. The previous process must have exited. The ports were just
// released by the old process, so a bind failure is retried for a while.
func (m *manager) restart(t testing.TB) {
	t.Helper()
	if !m.proc.exited() {
		t.Fatal("restart: the manager is still running")
	}
	var err error
	for try := 0; try < 20; try++ {
		if err = m.start(); !errors.Is(err, errAddrInUse) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("restart manager: %v", err)
	}
}

// bearer is an operator token sent with every call (plaintext loopback).
type bearer = harness.Bearer

// API returns a client of the manager's operator API, as platform code
// would use it. It survives manager restarts (gRPC reconnects).
func (m *manager) API() delegatev1.ManagerServiceClient {
	m.apiOnce.Do(func() {
		conn, err := harness.Dial(m.Addr, m.OperatorToken)
		if err != nil {
			m.t.Fatalf("grpc client: %v", err)
		}
		m.t.Cleanup(func() { conn.Close() })
		m.api = delegatev1.NewManagerServiceClient(conn)
	})
	return m.api
}

// agentOpts configure a test agent; zero fields take the defaults.
type agentOpts struct {
	Tags        []string
	Concurrency int
	// Manager overrides the address the agent connects to (a proxy).
	Manager string
	// Managers, when set, is the manager key as a YAML list (failover
	// between managers); the agent is not waited for (NoWait).
	Managers []string
	// LogLevel is the agent's log level; "" is info.
	LogLevel string
	// Token overrides the delegate token.
	Token string
	// TokenEnv passes the token in SMD_TOKEN instead of the config file.
	TokenEnv bool
	// NoWait returns without waiting for the agent to connect.
	NoWait bool
	// Endpoints is the agent's endpoints.allow: the emulator's URL for
	// connectors that point at it.
	Endpoints []string
}

// startAgent writes an agent config and starts `smd agent -c`, then waits
// until the manager lists it.
func startAgent(t testing.TB, m *manager, name string, opts agentOpts) *proc {
	t.Helper()
	if opts.Concurrency == 0 {
		opts.Concurrency = 4
	}
	if opts.Manager == "" {
		opts.Manager = m.Addr
	}
	if opts.Token == "" {
		opts.Token = m.DelegateToken
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "agent.yaml")
	ac := harness.Agent{
		Manager: opts.Manager, Name: name, Tags: opts.Tags, Concurrency: opts.Concurrency,
		Endpoints: opts.Endpoints, LogLevel: "info",
	}
	var env []string
	if opts.TokenEnv {
		env = append(env, "SMD_TOKEN="+opts.Token)
	} else {
		ac.Token = opts.Token
	}
	if opts.LogLevel != "" {
		ac.LogLevel = opts.LogLevel
	}
	c := ac.YAML()
	if len(opts.Managers) > 0 {
		c["manager"] = opts.Managers
		opts.NoWait = true
	}
	c["drain_timeout"] = "30s"
	c["reconnect"] = map[string]any{"initial": "100ms", "max": "1s"}
	writeYAML(t, cfg, c)
	p := startProc(t, dir, "agent-"+name, env, "agent", "-c", cfg)
	if !opts.NoWait {
		m.waitConnected(t, name)
	}
	return p
}
