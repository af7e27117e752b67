package e2e

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/smdelegate/smdelegate/internal/harness"
	"github.com/smdelegate/smdelegate/manager/store/postgres/pgtest"
)

// Timers of the test clusters: a replica is found dead within seconds.
const (
	clusterBeat      = 100 * time.Millisecond
	clusterDeadAfter = 1500 * time.Millisecond
)

// newCluster is the cluster: section of a test cluster named name, with
// a fresh peer token file.
func newCluster(t testing.TB, name string) *harness.Cluster {
	t.Helper()
	path := filepath.Join(t.TempDir(), "peer.token")
	if err := harness.WritePeerToken(path); err != nil {
		t.Fatal(err)
	}
	return &harness.Cluster{Name: name, PeerTokenFile: path, BeatInterval: clusterBeat, DeadAfter: clusterDeadAfter, PollInterval: time.Second}
}

// startReplicas starts n replicas of one cluster on a fresh PostgreSQL
// database: the first with startManager, the others its siblings (same
// config, tokens, master key and store; their own ports and data dir).
func startReplicas(t testing.TB, n int, opts managerOpts) []*manager {
	t.Helper()
	if opts.PostgresDSN == "" {
		opts.PostgresDSN, _ = pgtest.Database(t)
	}
	if opts.Cluster == nil {
		opts.Cluster = newCluster(t, "e2e")
	}
	rs := []*manager{startManager(t, opts)}
	for len(rs) < n {
		rs = append(rs, rs[0].sibling(t, nil))
	}
	return rs
}

// clone writes a copy of m's config, changed by tweak (if not nil), with
// new ports and a data dir of its own, for a manager that is not started
// yet. It shares m's tokens and environment (the store's DSN).
func (m *manager) clone(t testing.TB, tweak func(cfg map[string]any)) *manager {
	t.Helper()
	b, err := os.ReadFile(m.configPath)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	if tweak != nil {
		tweak(cfg)
	}
	dir := t.TempDir()
	c := &manager{
		t: t, dir: dir, configPath: filepath.Join(dir, "manager.yaml"),
		DelegateToken: m.DelegateToken, OperatorToken: m.OperatorToken, env: m.env,
		Addr: freeAddr(t), HTTPAddr: freeAddr(t),
	}
	cfg["listen"], cfg["http_listen"], cfg["data_dir"] = c.Addr, c.HTTPAddr, filepath.Join(dir, "data")
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeYAML(t, c.configPath, cfg)
	return c
}

// sibling starts a manager on a copy of m's config (clone) and waits until
// it is ready; a port taken meanwhile is retried with new ones.
func (m *manager) sibling(t testing.TB, tweak func(cfg map[string]any)) *manager {
	t.Helper()
	for try := 0; ; try++ {
		c := m.clone(t, tweak)
		err := c.start()
		if err == nil {
			return c
		}
		if !errors.Is(err, errAddrInUse) || try == 4 {
			t.Fatalf("start manager: %v", err)
		}
	}
}
