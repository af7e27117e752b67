package manager_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/manager"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	valid := func() manager.Config {
		c := manager.DefaultConfig()
		c.TLS.Insecure = true
		c.MasterKey = testMasterKey
		c.Auth.DelegateTokens = []manager.TokenConfig{{Name: "d", SHA256: manager.HashToken("x")}}
		c.Auth.OperatorTokens = []manager.TokenConfig{{Name: "o", SHA256: manager.HashToken("y")}}
		return c
	}
	if c := valid(); c.Validate() != nil {
		t.Fatalf("valid config: %v", c.Validate())
	}
	scoped := valid()
	scoped.Auth.DelegateTokens[0].Scope = " acme / payments / web "
	scoped.Auth.OperatorTokens[0].Scope = "acme"
	if err := scoped.Validate(); err != nil {
		t.Fatalf("config with token scopes: %v", err)
	}
	for _, tc := range []struct {
		name  string
		tweak func(*manager.Config)
		want  string
	}{
		{"no TLS and not insecure", func(c *manager.Config) { c.TLS.Insecure = false }, "tls.cert_file: "},
		{"bad hash", func(c *manager.Config) { c.Auth.OperatorTokens[0].SHA256 = "abc" }, "auth.operator_tokens[0].sha256: must be the 64-character hex"},
		{"no delegate tokens", func(c *manager.Config) { c.Auth.DelegateTokens = nil }, "auth.delegate_tokens: at least one"},
		{"heartbeat not below lease", func(c *manager.Config) { c.Dispatch.HeartbeatInterval = c.Dispatch.LeaseDuration }, "dispatch.heartbeat_interval: must be positive and shorter"},
		{"zero attempts", func(c *manager.Config) { c.Dispatch.MaxAttempts = 0 }, "dispatch.max_attempts: must be between 1 and 100"},
		{"one missed heartbeat", func(c *manager.Config) { c.Dispatch.MissedHeartbeats = 1 }, "dispatch.missed_heartbeats: must be between 2 and 100"},
		{"zero queue timeout", func(c *manager.Config) { c.Dispatch.QueueTimeout = 0 }, "dispatch.queue_timeout: must be positive"},
		{"tiny lease", func(c *manager.Config) { c.Dispatch.LeaseDuration = config.Duration(time.Millisecond) }, "dispatch.lease_duration: must be at least 100ms"},
		{"no master key", func(c *manager.Config) { c.MasterKey = nil }, "master_key_file: a 32-byte master key is required"},
		{"empty data dir", func(c *manager.Config) { c.DataDir = "" }, "data_dir: must not be empty"},
		{"delegate token scope with four parts", func(c *manager.Config) { c.Auth.DelegateTokens[0].Scope = "a/b/c/d" },
			"auth.delegate_tokens[0].scope: must be account, account/org or account/org/project"},
		{"delegate token scope with an empty org", func(c *manager.Config) { c.Auth.DelegateTokens[0].Scope = "acme//web" },
			"auth.delegate_tokens[0].scope: must be account, account/org or account/org/project"},
		{"operator token scope not an identifier", func(c *manager.Config) { c.Auth.OperatorTokens[0].Scope = "acme/pay-ments" },
			"auth.operator_tokens[0].scope.org: "},
		{"unknown store driver", func(c *manager.Config) { c.Store.Driver = "sqlite" }, `store.driver: must be "bolt" or "postgres", not "sqlite"`},
		{"postgres without a dsn", func(c *manager.Config) { c.Store.Driver = "postgres" }, "store.dsn: is required with store.driver postgres"},
		{"bolt with a dsn", func(c *manager.Config) { c.Store.DSN = "postgres://smd@db/smd" }, "store.dsn: is only used by store.driver postgres"},
		{"postgres with a bad dsn", func(c *manager.Config) {
			c.Store = manager.StoreConfig{Driver: "postgres", DSN: "postgres://smd:pw@db:port/smd"}
		}, "store.dsn: is not a valid PostgreSQL connection string"},
		{"item2 platform endpoint with a query", func(c *manager.Config) {
			c.Platform.Endpoints.Allow = []string{"https://sts.internal.example.com", "https://x.example.com/?a=b"}
		}, "platform.endpoints.allow[1]: must be scheme://host[:port][/path]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.tweak(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate() = %v, want error containing %q", err, tc.want)
			}
		})
	}
}

// TestConfigStore: the store is bolt unless said otherwise; postgres takes
// its DSN from the file or SMD_STORE_DSN and needs no data_dir; and no
// validation error repeats the DSN's password.
func TestConfigStore(t *testing.T) {
	t.Parallel()
	if got := manager.DefaultConfig().Store; got != (manager.StoreConfig{Driver: manager.StoreBolt}) {
		t.Errorf("DefaultConfig().Store = %+v, want the bolt driver and no DSN", got)
	}

	const pw = "planted-Pa55word-93d1"
	c := manager.DefaultConfig()
	c.TLS.Insecure = true
	c.MasterKey = testMasterKey
	c.Auth.DelegateTokens = []manager.TokenConfig{{Name: "d", SHA256: manager.HashToken("x")}}
	c.Auth.OperatorTokens = []manager.TokenConfig{{Name: "o", SHA256: manager.HashToken("y")}}
	c.DataDir = ""
	c.Store = manager.StoreConfig{Driver: manager.StorePostgres, DSN: "postgres://smd:" + pw + "@db.internal:5432/smd?sslmode=verify-full"}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate() of a postgres store without data_dir = %v, want nil", err)
	}
	for _, bad := range []string{
		"postgres://smd:" + pw + "@db.internal:port/smd",
		"host=db.internal port=x user=smd password=" + pw,
		"host=db.internal user=smd password='" + pw,
	} {
		c.Store.DSN = bad
		err := c.Validate()
		if err == nil {
			t.Errorf("Validate() of an invalid DSN = nil, want an error")
			continue
		}
		if strings.Contains(err.Error(), pw) {
			t.Errorf("Validate() error holds the DSN's password: %v", err)
		}
	}
}

// TestLoadConfigStoreEnv: SMD_STORE_DRIVER and SMD_STORE_DSN override the
// file, so that the DSN's password can stay out of it.
func TestLoadConfigStoreEnv(t *testing.T) {
	path := filepath.Join(t.TempDir(), "manager.yaml")
	if err := os.WriteFile(path, []byte("store:\n  driver: bolt\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SMD_STORE_DRIVER", "postgres")
	t.Setenv("SMD_STORE_DSN", "postgres://smd:secret@db/smd")
	c, err := manager.LoadConfig(path)
	if err != nil {
		t.Fatalf("LoadConfig(%q) = %v", path, err)
	}
	want := manager.StoreConfig{Driver: "postgres", DSN: "postgres://smd:secret@db/smd"}
	if c.Store != want {
		t.Errorf("LoadConfig(%q).Store = %+v, want %+v", path, c.Store, want)
	}
}
