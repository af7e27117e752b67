package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/smdelegate/smdelegate/internal/harness"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// memInfo is a process's resident memory from /proc/PID/status, in
// bytes: VmRSS, VmHWM (peak RSS) and RssAnon (private memory; the rest of
// RSS is mostly pages of the binary, shared with other smd processes).
type memInfo struct {
	RSS, Peak, Anon int64
}

func readMem(pid int) (memInfo, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memInfo{}, err
	}
	var m memInfo
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmRSS":
			m.RSS = n * 1024
		case "VmHWM":
			m.Peak = n * 1024
		case "RssAnon":
			m.Anon = n * 1024
		}
	}
	return m, nil
}

// buildSmd builds ./cmd/smd of this module into dir, as a release is
// built.
func buildSmd(dir string) (string, error) {
	return harness.BuildSmd(dir, []string{"CGO_ENABLED=0"}, "-trimpath", "-ldflags", "-s -w")
}

// stopWait is how long stop waits for a process after SIGTERM.
const stopWait = 10 * time.Second

// manager is a manager process and an API client pool to it.
type manager struct {
	proc          *harness.Proc
	dir           string
	Addr          string
	HTTPAddr      string
	DelegateToken string
	OperatorToken string
	conns         []*grpc.ClientConn
	apis          []delegatev1.ManagerServiceClient
	next          atomic.Uint64

	// AgentEndpoints is the endpoints.allow of the agents startAgent
	// starts: the emulator's URL, which the bench's connectors name.
	AgentEndpoints []string
}

// managerSetup is what a manager's config holds beyond its addresses:
// its tokens and master key (replicas of one cluster share them) and
// config sections to add (store, cluster).
type managerSetup struct {
	DelegateToken, OperatorToken string
	MasterKeyFile                string
	Extra                        map[string]any
}

// newSetup makes fresh tokens and a master key in dir.
func newSetup(dir string) (managerSetup, error) {
	su := managerSetup{DelegateToken: harness.RandomToken("smdd_"), OperatorToken: harness.RandomToken("smdo_"),
		MasterKeyFile: filepath.Join(dir, "master.key")}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return su, err
	}
	return su, harness.WriteMasterKey(su.MasterKeyFile)
}

// startManager writes a config into dir and starts `smd manager`, then
// waits for /readyz and dials clients API connections.
func startManager(bin, dir, name string, clients int) (*manager, error) {
	su, err := newSetup(dir)
	if err != nil {
		return nil, err
	}
	return startManagerWith(bin, dir, name, clients, su)
}

// startManagerWith is startManager with the given setup.
func startManagerWith(bin, dir, name string, clients int, su managerSetup) (*manager, error) {
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		return nil, err
	}
	m := &manager{dir: dir, DelegateToken: su.DelegateToken, OperatorToken: su.OperatorToken}
	var err error
	if m.Addr, err = harness.FreeAddr(); err != nil {
		return nil, err
	}
	if m.HTTPAddr, err = harness.FreeAddr(); err != nil {
		return nil, err
	}
	cfg := harness.Manager{
		Addr: m.Addr, HTTPAddr: m.HTTPAddr, DataDir: filepath.Join(dir, "data"), MasterKeyFile: su.MasterKeyFile,
		DelegateTokens: []harness.Token{{Name: "bench", Token: m.DelegateToken}},
		OperatorTokens: []harness.Token{{Name: "bench", Token: m.OperatorToken}},
		LogLevel:       "warn",
	}.YAML()
	// The bench drives one operator token at up to ~13k pings/s and keeps
	// 10,000 tasks of one scope unfinished at once: far above the
	// defaults (100/s, 1000 tasks). Set well above that, so that the
	// limiter runs on the measured path but never refuses.
	cfg["limits"] = map[string]any{
		"submit_rate":            1000000,
		"submit_burst":           1000000,
		"scope_unfinished_tasks": 1000000,
		"scope_payload_bytes":    16 << 30,
	}
	for k, v := range su.Extra {
		cfg[k] = v
	}
	if c, ok := su.Extra["cluster"].(map[string]any); ok {
		// A replica's peers dial the address it listens on.
		own := map[string]any{"advertise": m.Addr}
		for k, v := range c {
			own[k] = v
		}
		cfg["cluster"] = own
	}
	cfgPath := filepath.Join(dir, "manager.yaml")
	if err := harness.WriteYAML(cfgPath, cfg); err != nil {
		return nil, err
	}
	if m.proc, err = harness.Start(dir, name, bin, nil, "manager", "-c", cfgPath); err != nil {
		return nil, err
	}
	if err := harness.WaitReady(m.proc, m.HTTPAddr, 30*time.Second); err != nil {
		m.proc.Stop(stopWait)
		return nil, err
	}
	for range clients {
		conn, err := harness.Dial(m.Addr, m.OperatorToken)
		if err != nil {
			m.close()
			return nil, err
		}
		m.conns = append(m.conns, conn)
		m.apis = append(m.apis, delegatev1.NewManagerServiceClient(conn))
	}
	return m, nil
}

// apiSource hands out API clients: one manager's pool, or the replicas of
// a cluster in turn.
type apiSource interface {
	API() delegatev1.ManagerServiceClient
}

// API returns the next client of the pool (round robin).
func (m *manager) API() delegatev1.ManagerServiceClient {
	return m.apis[m.next.Add(1)%uint64(len(m.apis))]
}

func (m *manager) close() {
	for _, c := range m.conns {
		c.Close()
	}
	m.proc.Stop(stopWait)
}

// connectedDelegates returns how many delegates the manager lists as
// connected, and whether name is one of them.
func (m *manager) connectedDelegates(ctx context.Context, name string) (int, bool, error) {
	resp, err := m.API().ListDelegates(ctx, &delegatev1.ListDelegatesRequest{})
	if err != nil {
		return 0, false, err
	}
	n, found := 0, false
	for _, d := range resp.GetDelegates() {
		if d.GetConnected() {
			n++
			found = found || d.GetName() == name
		}
	}
	return n, found, nil
}

// startAgent starts `smd agent` named name and waits until the manager
// lists it, returning the process and the time from start to connected.
func (m *manager) startAgent(bin, name string, tags []string, concurrency int, env []string) (*harness.Proc, time.Duration, error) {
	dir := filepath.Join(m.dir, "agent-"+name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, 0, err
	}
	cfg := filepath.Join(dir, "agent.yaml")
	if err := harness.WriteYAML(cfg, harness.Agent{
		Manager: m.Addr, Name: name, Token: m.DelegateToken, Tags: tags, Concurrency: concurrency,
		Endpoints: m.AgentEndpoints, LogLevel: "warn",
	}.YAML()); err != nil {
		return nil, 0, err
	}
	start := time.Now()
	p, err := harness.Start(dir, "agent", bin, env, "agent", "-c", cfg)
	if err != nil {
		return nil, 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		if _, ok, err := m.connectedDelegates(ctx, name); err == nil && ok {
			return p, time.Since(start), nil
		}
		if p.Exited() {
			return nil, 0, fmt.Errorf("agent %s exited:\n%s", name, harness.Tail(p.Log(), 15))
		}
		if ctx.Err() != nil {
			p.Stop(stopWait)
			return nil, 0, fmt.Errorf("agent %s not connected within 30s", name)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
