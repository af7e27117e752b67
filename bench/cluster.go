package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"gopkg.in/yaml.v3"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// proc is a child process (a manager or an agent) with its log file.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits up to 10 s, then kills.
func (p *proc) stop() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// logTail returns the last lines of the process's log, for error messages.
func (p *proc) logTail() string {
	b, _ := os.ReadFile(p.logPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return strings.Join(lines, "\n")
}

// startProc runs bin with args, output to dir/name.log, in the bench's
// environment minus SMD_* plus env.
func startProc(dir, name, bin string, env []string, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close() // the child has its own descriptor
	cmd := exec.Command(bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SMD_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

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

// buildSmd builds ./cmd/smd of this module into dir.
func buildSmd(dir string) (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	bin := filepath.Join(dir, "smd")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./cmd/smd")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %w\n%s", err, b)
	}
	return bin, nil
}

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func randomToken(prefix string) string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func writeYAML(path string, v any) error {
	b, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// manager is a manager process and an API client pool to it.
type manager struct {
	proc          *proc
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

// startManager writes a config into dir and starts `smd manager`, then
// waits for /readyz and dials clients API connections.
func startManager(bin, dir, name string, clients int) (*manager, error) {
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		return nil, err
	}
	m := &manager{dir: dir, DelegateToken: randomToken("smdd_"), OperatorToken: randomToken("smdo_")}
	keyPath := filepath.Join(dir, "master.key")
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	if err := os.WriteFile(keyPath, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		return nil, err
	}
	var err error
	if m.Addr, err = freeAddr(); err != nil {
		return nil, err
	}
	if m.HTTPAddr, err = freeAddr(); err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "manager.yaml")
	if err := writeYAML(cfgPath, map[string]any{
		"listen":          m.Addr,
		"http_listen":     m.HTTPAddr,
		"data_dir":        filepath.Join(dir, "data"),
		"master_key_file": keyPath,
		"tls":             map[string]any{"insecure": true},
		"auth": map[string]any{
			"delegate_tokens": []map[string]any{{"name": "bench", "sha256": sha256Hex(m.DelegateToken)}},
			"operator_tokens": []map[string]any{{"name": "bench", "sha256": sha256Hex(m.OperatorToken)}},
		},
		"log": map[string]any{"level": "warn", "format": "json"},
		// The bench drives one operator token at up to ~13k pings/s and
		// keeps 10,000 tasks of one scope unfinished at once: far above
		// the defaults (100/s, 1000 tasks). Set well above that, so that
		// the limiter runs on the measured path but never refuses.
		"limits": map[string]any{
			"submit_rate":            1000000,
			"submit_burst":           1000000,
			"scope_unfinished_tasks": 1000000,
			"scope_payload_bytes":    16 << 30,
		},
	}); err != nil {
		return nil, err
	}
	if m.proc, err = startProc(dir, name, bin, nil, "manager", "-c", cfgPath); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m.proc.exited() {
			return nil, fmt.Errorf("manager exited:\n%s", m.proc.logTail())
		}
		if resp, err := http.Get("http://" + m.HTTPAddr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			m.proc.stop()
			return nil, errors.New("manager not ready within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for range clients {
		conn, err := grpc.NewClient(m.Addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithPerRPCCredentials(bearer(m.OperatorToken)))
		if err != nil {
			m.close()
			return nil, err
		}
		m.conns = append(m.conns, conn)
		m.apis = append(m.apis, delegatev1.NewManagerServiceClient(conn))
	}
	return m, nil
}

// API returns the next client of the pool (round robin).
func (m *manager) API() delegatev1.ManagerServiceClient {
	return m.apis[m.next.Add(1)%uint64(len(m.apis))]
}

func (m *manager) close() {
	for _, c := range m.conns {
		c.Close()
	}
	m.proc.stop()
}

// bearer sends the operator token on every call (plaintext loopback).
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return false }

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
func (m *manager) startAgent(bin, name string, tags []string, concurrency int, env []string) (*proc, time.Duration, error) {
	dir := filepath.Join(m.dir, "agent-"+name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, 0, err
	}
	cfg := filepath.Join(dir, "agent.yaml")
	if err := writeYAML(cfg, map[string]any{
		"manager":     m.Addr,
		"token":       m.DelegateToken,
		"name":        name,
		"tags":        tags,
		"concurrency": concurrency,
		"tls":         map[string]any{"insecure": true},
		"log":         map[string]any{"level": "warn", "format": "json"},
		"endpoints":   map[string]any{"allow": m.AgentEndpoints},
	}); err != nil {
		return nil, 0, err
	}
	start := time.Now()
	p, err := startProc(dir, "agent", bin, env, "agent", "-c", cfg)
	if err != nil {
		return nil, 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		if _, ok, err := m.connectedDelegates(ctx, name); err == nil && ok {
			return p, time.Since(start), nil
		}
		if p.exited() {
			return nil, 0, fmt.Errorf("agent %s exited:\n%s", name, p.logTail())
		}
		if ctx.Err() != nil {
			p.stop()
			return nil, 0, fmt.Errorf("agent %s not connected within 30s", name)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
