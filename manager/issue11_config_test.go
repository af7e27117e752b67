package manager_test

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/manager"
)

// plantedPeerToken is a peer token these tests look for in errors.
const plantedPeerToken = "planted-peer-token-0123456789abcdef-i11"

// replicaConfig is a valid config of a cluster replica.
func replicaConfig() manager.Config {
	c := manager.DefaultConfig()
	c.TLS.Insecure = true
	c.MasterKey = testMasterKey
	c.Auth.DelegateTokens = []manager.TokenConfig{{Name: "d", SHA256: manager.HashToken("x")}}
	c.Auth.OperatorTokens = []manager.TokenConfig{{Name: "o", SHA256: manager.HashToken("y")}}
	c.Store = manager.StoreConfig{Driver: manager.StorePostgres, DSN: "postgres://smd@db.internal/smd"}
	c.Listen = "10.0.0.5:7070"
	c.Cluster.Name = "prod-eu"
	c.Cluster.PeerToken = plantedPeerToken
	return c
}

// TestIssue11ClusterConfigValidate: each rule of the cluster: section is
// refused naming its YAML key, and no error repeats the peer token.
func TestIssue11ClusterConfigValidate(t *testing.T) {
	t.Parallel()
	if c := replicaConfig(); c.Validate() != nil {
		t.Fatalf("valid replica config: %v", c.Validate())
	}
	if got := (manager.DefaultConfig()).Cluster; got.Name != "" || got.BeatInterval.D() != time.Second ||
		got.DeadAfter.D() != 10*time.Second || got.PollInterval.D() != 5*time.Second {
		t.Errorf("DefaultConfig().Cluster = %+v, want no name, beat 1s, dead after 10s, poll 5s", got)
	}
	for _, tc := range []struct {
		name  string
		tweak func(*manager.Config)
		want  string
	}{
		{"bolt store", func(c *manager.Config) { c.Store = manager.StoreConfig{Driver: manager.StoreBolt} },
			`cluster.name: needs store.driver: postgres`},
		{"name with capitals", func(c *manager.Config) { c.Cluster.Name = "Prod" }, "cluster.name: must hold only lower-case letters"},
		{"name too long", func(c *manager.Config) { c.Cluster.Name = strings.Repeat("a", 64) }, "cluster.name: must be at most 63"},
		{"listen names no host", func(c *manager.Config) { c.Listen = "0.0.0.0:7070" }, `cluster.advertise: is required when listen ("0.0.0.0:7070") names no host`},
		{"listen with only a port", func(c *manager.Config) { c.Listen = ":7070" }, "cluster.advertise: is required when listen"},
		{"advertise without a port", func(c *manager.Config) { c.Cluster.Advertise = "manager-1.internal" }, "cluster.advertise: must be host:port"},
		{"advertise a wildcard", func(c *manager.Config) { c.Cluster.Advertise = "[::]:7070" }, "cluster.advertise: must be host:port"},
		{"advertise port 0", func(c *manager.Config) { c.Cluster.Advertise = "m1:0" }, "cluster.advertise: must be host:port"},
		{"no peer token", func(c *manager.Config) { c.Cluster.PeerToken = "" }, "cluster.peer_token_file: a peer token of at least 32 bytes is required"},
		{"short peer token", func(c *manager.Config) { c.Cluster.PeerToken = plantedPeerToken[:31] }, "cluster.peer_token_file: a peer token of at least 32 bytes"},
		{"dead_after below 3 beats", func(c *manager.Config) { c.Cluster.DeadAfter = config.Duration(2900 * time.Millisecond) },
			"cluster.dead_after: must be at least 3 × cluster.beat_interval (3s)"},
		{"tiny beat", func(c *manager.Config) { c.Cluster.BeatInterval = 0 }, "cluster.beat_interval: must be at least 10ms"},
		{"zero poll", func(c *manager.Config) { c.Cluster.PollInterval = 0 }, "cluster.poll_interval: must be positive"},
		{"advertise set without a cluster", func(c *manager.Config) { c.Cluster.Name, c.Cluster.PeerToken, c.Cluster.Advertise = "", "", "m1:7070" },
			"cluster.advertise: is only used with cluster.name"},
		{"peer token without a cluster", func(c *manager.Config) { c.Cluster.Name = ""; c.Cluster.PeerTokenFile = "/etc/smd/peer.token" },
			"cluster.peer_token_file: is only used with cluster.name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := replicaConfig()
			tc.tweak(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate() = %v, want error containing %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), plantedPeerToken[:20]) {
				t.Errorf("Validate() error holds the peer token: %v", err)
			}
		})
	}
	if c := replicaConfig(); c.AdvertiseAddr() != "10.0.0.5:7070" {
		t.Errorf("AdvertiseAddr() = %q, want listen 10.0.0.5:7070", c.AdvertiseAddr())
	}
	c := replicaConfig()
	c.Listen, c.Cluster.Advertise = "0.0.0.0:7070", "m1.internal:7070"
	if err := c.Validate(); err != nil || c.AdvertiseAddr() != "m1.internal:7070" {
		t.Errorf("listen 0.0.0.0 with advertise: Validate() = %v, AdvertiseAddr() = %q, want nil and m1.internal:7070", err, c.AdvertiseAddr())
	}
}

// TestIssue11PeerTokenSources: SMD_CLUSTER_PEER_TOKEN wins over
// cluster.peer_token_file; the file's trailing newline is not part of the
// token; an unreadable file is refused naming the key and not the token.
func TestIssue11PeerTokenSources(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "peer.token")
	if err := os.WriteFile(path, []byte(plantedPeerToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := replicaConfig()
	c.Cluster.PeerToken, c.Cluster.PeerTokenFile = "", path
	if err := c.LoadPeerToken(); err != nil || c.Cluster.PeerToken != plantedPeerToken {
		t.Errorf("LoadPeerToken() from the file = %v, token matches: %v", err, c.Cluster.PeerToken == plantedPeerToken)
	}

	t.Setenv("SMD_CLUSTER_PEER_TOKEN", "env-"+plantedPeerToken)
	c.Cluster.PeerToken = ""
	if err := c.LoadPeerToken(); err != nil || c.Cluster.PeerToken != "env-"+plantedPeerToken {
		t.Errorf("LoadPeerToken() with SMD_CLUSTER_PEER_TOKEN = %v, token from the variable: %v", err, c.Cluster.PeerToken == "env-"+plantedPeerToken)
	}

	t.Setenv("SMD_CLUSTER_PEER_TOKEN", "")
	c.Cluster.PeerToken, c.Cluster.PeerTokenFile = "", filepath.Join(dir, "missing")
	err := c.LoadPeerToken()
	if err == nil || !strings.HasPrefix(err.Error(), "cluster.peer_token_file: cannot read ") {
		t.Errorf("LoadPeerToken() of a missing file = %v, want cluster.peer_token_file: cannot read ...", err)
	}

	// The whole path an operator takes: LoadConfig reads cluster.* from
	// the file and SMD_CLUSTER_*; the token from its own file.
	cfgPath := filepath.Join(dir, "manager.yaml")
	if err := os.WriteFile(cfgPath, []byte("cluster:\n  name: prod\n  peer_token_file: "+path+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SMD_CLUSTER_DEAD_AFTER", "20s")
	lc, err := manager.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := lc.LoadPeerToken(); err != nil {
		t.Fatal(err)
	}
	if lc.Cluster.Name != "prod" || lc.Cluster.DeadAfter.D() != 20*time.Second || lc.Cluster.PeerToken != plantedPeerToken {
		t.Errorf("LoadConfig: cluster = name %q dead_after %s, token from the file: %v", lc.Cluster.Name, lc.Cluster.DeadAfter, lc.Cluster.PeerToken == plantedPeerToken)
	}
}

// TestIssue11KubernetesManifestConfig: the manager.yaml of the shipped
// Kubernetes manifest (configs/kubernetes/manager-replicas.yaml) is a
// valid replica config with what the manifest puts in the environment:
// the Secret's variables and the StatefulSet's SMD_CLUSTER_ADVERTISE.
func TestIssue11KubernetesManifestConfig(t *testing.T) {
	b, err := os.ReadFile("../configs/kubernetes/manager-replicas.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var managerYAML, advertise string
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var doc struct {
			Kind string            `yaml:"kind"`
			Data map[string]string `yaml:"data"`
			Spec struct {
				Template struct {
					Spec struct {
						Containers []struct {
							Env []struct{ Name, Value string } `yaml:"env"`
						} `yaml:"containers"`
					} `yaml:"spec"`
				} `yaml:"template"`
			} `yaml:"spec"`
		}
		if err := dec.Decode(&doc); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		switch doc.Kind {
		case "ConfigMap":
			managerYAML = doc.Data["manager.yaml"]
		case "StatefulSet":
			for _, c := range doc.Spec.Template.Spec.Containers {
				for _, e := range c.Env {
					if e.Name == "SMD_CLUSTER_ADVERTISE" {
						advertise = strings.ReplaceAll(e.Value, "$(POD_NAME)", "smd-manager-0")
					}
				}
			}
		}
	}
	if managerYAML == "" || advertise == "" {
		t.Fatalf("manifest: manager.yaml %d bytes, SMD_CLUSTER_ADVERTISE %q; want both", len(managerYAML), advertise)
	}
	path := filepath.Join(t.TempDir(), "manager.yaml")
	if err := os.WriteFile(path, []byte(managerYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SMD_STORE_DSN", "postgres://smd:pw@db.internal:5432/smd?sslmode=verify-full")
	t.Setenv("SMD_CLUSTER_PEER_TOKEN", plantedPeerToken)
	t.Setenv("SMD_CLUSTER_ADVERTISE", advertise)
	c, err := manager.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	c.MasterKey = testMasterKey
	if err := c.LoadPeerToken(); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("the manifest's manager.yaml: %v", err)
	}
	if c.Cluster.Name == "" || c.AdvertiseAddr() != "smd-manager-0.smd-manager-peers.smd.svc.cluster.local:7070" {
		t.Errorf("the manifest's replica: cluster %q advertising %q", c.Cluster.Name, c.AdvertiseAddr())
	}
}
