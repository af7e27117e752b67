package manager

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/smdelegate/smdelegate/internal/allowlist"
	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/internal/seal"
	"github.com/smdelegate/smdelegate/manager/connector"
	"github.com/smdelegate/smdelegate/manager/dispatch"
	"github.com/smdelegate/smdelegate/manager/store/postgres"
)

// Config is the manager's configuration (configs/manager.yaml).
type Config struct {
	// Listen is the gRPC address agents and operators connect to.
	Listen string `yaml:"listen"`
	// HTTPListen serves /healthz, /readyz and /metrics ("" disables it).
	HTTPListen string `yaml:"http_listen"`
	// DataDir holds the embedded store (smd.db) when Store.Driver is bolt.
	DataDir  string         `yaml:"data_dir"`
	Store    StoreConfig    `yaml:"store"`
	TLS      TLSConfig      `yaml:"tls"`
	Auth     AuthConfig     `yaml:"auth"`
	Dispatch DispatchConfig `yaml:"dispatch"`
	Log      LogConfig      `yaml:"log"`
	// ShutdownTimeout bounds GracefulStop before the server stops hard.
	ShutdownTimeout config.Duration `yaml:"shutdown_timeout"`
	// MasterKeyFile holds the base64 AES-256 master key that encrypts
	// builtin credentials, OIDC signing keys and stored task payloads.
	// SMD_MASTER_KEY (the key itself) takes precedence. Required.
	MasterKeyFile string `yaml:"master_key_file"`
	// MasterKey is the decoded key, set by LoadConfig from SMD_MASTER_KEY
	// or MasterKeyFile (or directly by smd dev and tests).
	MasterKey []byte         `yaml:"-"`
	OIDC      OIDCConfig     `yaml:"oidc"`
	Platform  PlatformConfig `yaml:"platform"`
	// TaskRetention is how long finished async tasks stay readable
	// (smd task get/list) before they are pruned from the store.
	TaskRetention config.Duration `yaml:"task_retention"`
	Limits        LimitsConfig    `yaml:"limits"`
	// Cluster makes the manager a replica of a cluster (clusterconfig.go).
	Cluster ClusterConfig `yaml:"cluster"`
}

// Store drivers (StoreConfig.Driver).
const (
	// StoreBolt is the embedded store: one file under data_dir, no setup.
	StoreBolt = "bolt"
	// StorePostgres is a PostgreSQL database (store.dsn).
	StorePostgres = "postgres"
)

// StoreConfig chooses where the manager keeps tasks and its catalog.
type StoreConfig struct {
	// Driver is "bolt" (the default) or "postgres".
	Driver string `yaml:"driver"`
	// DSN is the PostgreSQL connection string (postgres://user:password@
	// host:port/database?sslmode=verify-full, or libpq key=value pairs),
	// for the postgres driver only. It may hold a password, so it is
	// never logged nor quoted in an error; SMD_STORE_DSN keeps it out of
	// the config file.
	DSN string `yaml:"dsn"`
}

// TLSConfig configures the gRPC listener's TLS.
type TLSConfig struct {
	// Insecure serves plaintext. It must be said explicitly.
	Insecure bool   `yaml:"insecure"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile, when set, requires client certificates signed by it (mTLS).
	ClientCAFile string `yaml:"client_ca_file"`
}

// AuthConfig lists the accepted bearer tokens, stored as SHA-256 hashes
// (`smd token generate` prints a token and its hash).
type AuthConfig struct {
	DelegateTokens []TokenConfig `yaml:"delegate_tokens"`
	OperatorTokens []TokenConfig `yaml:"operator_tokens"`
}

// TokenConfig is one accepted token.
type TokenConfig struct {
	// Name identifies the token in logs.
	Name string `yaml:"name"`
	// SHA256 is the hex SHA-256 of the token.
	SHA256 string `yaml:"sha256"`
	// AllowedTags, for a delegate token, restricts the tags a delegate
	// using it may declare. Empty allows any.
	AllowedTags []string `yaml:"allowed_tags"`
	// Scope, when set ("account", "account/org" or
	// "account/org/project"), confines the token to that scope and those
	// below it: a delegate using it runs only tasks of connectors there;
	// an operator using it sees and uses only connectors, credentials,
	// tasks and delegates there. Empty: unrestricted.
	Scope string `yaml:"scope"`
}

// OIDCConfig configures the manager's OIDC issuer (for oidc connectors).
type OIDCConfig struct {
	// Listen, when set, is an HTTP listener of its own that serves only
	// the discovery document and the JWKS, the two documents AWS IAM must
	// reach; http_listen then serves health and metrics only. Empty: the
	// documents are served on http_listen beside them.
	Listen string `yaml:"listen"`
	// IssuerURL is the public base URL AWS IAM reaches the discovery
	// document and JWKS at (the "iss" claim). Default: http://<listen>,
	// oidc.listen's or else http_listen's.
	IssuerURL string `yaml:"issuer_url"`
	// TokenTTL is the lifetime of the per-task ID tokens.
	TokenTTL config.Duration `yaml:"token_ttl"`
	// RotateAfter is the age at which the signing key is replaced.
	RotateAfter config.Duration `yaml:"rotate_after"`
}

// The dispatcher's settings are its own (manager/dispatch); the manager's
// Config holds them under these names.
type (
	DispatchConfig = dispatch.Config
	LimitsConfig   = dispatch.LimitsConfig
)

// PlatformTag is the selector of tasks the manager runs itself
// (dispatch.PlatformTag).
const PlatformTag = dispatch.PlatformTag

// PlatformConfig configures tasks the manager runs itself (oidc
// connectors with oidc_connectivity: platform).
type PlatformConfig struct {
	// Concurrency is how many platform tasks run at once.
	Concurrency int `yaml:"concurrency"`
	// Endpoints says which endpoint_url and sts_endpoint_url values beside
	// AWS's own endpoints platform tasks call: the manager posts its own
	// signed tokens there. Empty (the default): none.
	Endpoints EndpointsConfig `yaml:"endpoints"`
}

// EndpointsConfig is an allow-list of custom endpoints.
type EndpointsConfig struct {
	// Allow: scheme://host[:port][/path] patterns; a leading "*." in the
	// host matches subdomains, port "*" any port. AWS's own Secrets
	// Manager and STS endpoints are always allowed.
	Allow []string `yaml:"allow"`
}

// LogConfig configures logging.
type LogConfig struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// DefaultConfig returns the defaults of design §4.
func DefaultConfig() Config {
	return Config{
		Listen:     "127.0.0.1:7070",
		HTTPListen: "127.0.0.1:7071",
		DataDir:    "/var/lib/smd",
		Store:      StoreConfig{Driver: StoreBolt},
		Dispatch: DispatchConfig{
			LeaseDuration:     config.Duration(30 * time.Second),
			HeartbeatInterval: config.Duration(10 * time.Second),
			QueueTimeout:      config.Duration(30 * time.Second),
			TaskDeadline:      config.Duration(60 * time.Second),
			MaxAttempts:       3,
			MissedHeartbeats:  3,
		},
		Log:             LogConfig{Level: "info"},
		ShutdownTimeout: config.Duration(10 * time.Second),
		TaskRetention:   config.Duration(7 * 24 * time.Hour),
		OIDC:            OIDCConfig{TokenTTL: config.Duration(5 * time.Minute), RotateAfter: config.Duration(30 * 24 * time.Hour)},
		Platform:        PlatformConfig{Concurrency: 16},
		Limits: LimitsConfig{
			SubmitRate: 100, SubmitBurst: 500,
			ScopeUnfinishedTasks: 1000, ScopePayloadBytes: 64 << 20,
			PingMaxSleep: config.Duration(10 * time.Second),
		},
		Cluster: defaultClusterConfig(),
	}
}

// LoadConfig reads defaults, then the file at path (if not empty), then
// SMD_* environment variables. The caller applies flags and calls Validate.
func LoadConfig(path string) (Config, error) {
	return config.Load(path, DefaultConfig())
}

// LoadMasterKey sets MasterKey from SMD_MASTER_KEY or MasterKeyFile,
// unless it is already set.
func (c *Config) LoadMasterKey() error {
	if len(c.MasterKey) > 0 {
		return nil
	}
	k, err := seal.LoadKey(c.MasterKeyFile, os.Getenv("SMD_MASTER_KEY"))
	if err != nil {
		return err
	}
	c.MasterKey = k
	return nil
}

// Validate checks every field and names the first one that is wrong, with
// the rule it breaks. It reports all problems joined.
func (c *Config) Validate() error {
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	if c.Listen == "" {
		add(config.Errf("listen", "must not be empty"))
	}
	switch c.Store.Driver {
	case StoreBolt:
		if c.DataDir == "" {
			add(config.Errf("data_dir", "must not be empty"))
		}
		if c.Store.DSN != "" {
			add(config.Errf("store.dsn", "is only used by store.driver postgres; set store.driver: postgres or remove store.dsn (SMD_STORE_DSN)"))
		}
	case StorePostgres:
		if c.Store.DSN == "" {
			add(config.Errf("store.dsn", "is required with store.driver postgres (or SMD_STORE_DSN)"))
		} else if _, err := postgres.ParseDSN(c.Store.DSN); err != nil {
			// The parser's detail may quote the password: not repeated.
			add(config.Errf("store.dsn", "is not a valid PostgreSQL connection string "+
				"(postgres://user:password@host:port/database?sslmode=... or libpq key=value pairs)"))
		}
	default:
		add(config.Errf("store.driver", "must be %q or %q, not %q", StoreBolt, StorePostgres, c.Store.Driver))
	}
	if !c.TLS.Insecure && (c.TLS.CertFile == "" || c.TLS.KeyFile == "") {
		add(config.Errf("tls.cert_file", "tls.cert_file and tls.key_file are required unless tls.insecure is true"))
	}
	if c.TLS.Insecure && c.TLS.ClientCAFile != "" {
		add(config.Errf("tls.client_ca_file", "needs TLS; it cannot be used with tls.insecure"))
	}
	for kind, toks := range map[string][]TokenConfig{"auth.delegate_tokens": c.Auth.DelegateTokens, "auth.operator_tokens": c.Auth.OperatorTokens} {
		for i, t := range toks {
			f := fmt.Sprintf("%s[%d]", kind, i)
			if t.Name == "" {
				add(config.Errf(f+".name", "must not be empty"))
			}
			if b, err := hex.DecodeString(t.SHA256); err != nil || len(b) != 32 {
				add(config.Errf(f+".sha256", "must be the 64-character hex SHA-256 of the token (see smd token generate)"))
			}
			for j, tag := range t.AllowedTags {
				if p := connector.TagProblem(tag); p != "" {
					add(config.Errf(fmt.Sprintf("%s.allowed_tags[%d]", f, j), "%s", p))
				}
			}
			if t.Scope != "" {
				if _, err := connector.ParseScope(t.Scope); err != nil {
					for _, e := range config.Flatten(err) {
						var fe *config.FieldError
						if errors.As(e, &fe) {
							// "scope.org" → "auth.delegate_tokens[0].scope.org"
							add(config.Errf(f+"."+fe.Field, "%s", fe.Rule))
						} else {
							add(config.Errf(f+".scope", "%v", e))
						}
					}
				}
			}
		}
	}
	// A delegate token's name is its identity (operator tags are confirmed
	// for one, and a refused stream names the holder's): one name, one token.
	seen := map[string]int{}
	for i, t := range c.Auth.DelegateTokens {
		if j, dup := seen[t.Name]; dup && t.Name != "" {
			add(config.Errf(fmt.Sprintf("auth.delegate_tokens[%d].name", i), "%q is also the name of auth.delegate_tokens[%d]; each delegate token needs its own name (when rotating one, give the new token a new name)", t.Name, j))
			continue
		}
		seen[t.Name] = i
	}
	if len(c.Auth.DelegateTokens) == 0 {
		add(config.Errf("auth.delegate_tokens", "at least one delegate token is required"))
	}
	if len(c.Auth.OperatorTokens) == 0 {
		add(config.Errf("auth.operator_tokens", "at least one operator token is required"))
	}
	d := c.Dispatch
	if d.LeaseDuration.D() < 100*time.Millisecond {
		add(config.Errf("dispatch.lease_duration", "must be at least 100ms"))
	}
	if d.HeartbeatInterval.D() <= 0 || d.HeartbeatInterval.D() >= d.LeaseDuration.D() {
		add(config.Errf("dispatch.heartbeat_interval", "must be positive and shorter than dispatch.lease_duration"))
	}
	if d.QueueTimeout.D() <= 0 {
		add(config.Errf("dispatch.queue_timeout", "must be positive"))
	}
	if d.TaskDeadline.D() <= 0 {
		add(config.Errf("dispatch.task_deadline", "must be positive"))
	}
	if d.MaxAttempts < 1 || d.MaxAttempts > 100 {
		add(config.Errf("dispatch.max_attempts", "must be between 1 and 100"))
	}
	if d.MissedHeartbeats < 2 || d.MissedHeartbeats > 100 {
		// One missed beat is ordinary jitter: a delegate heartbeats once
		// per interval, so 1 would close healthy streams.
		add(config.Errf("dispatch.missed_heartbeats", "must be between 2 and 100"))
	}
	if len(c.MasterKey) != seal.KeySize {
		add(config.Errf("master_key_file", "a %d-byte master key is required (master_key_file or SMD_MASTER_KEY; smd master-key generate makes one)", seal.KeySize))
	}
	if o := c.OIDC.Listen; o != "" && !strings.HasSuffix(o, ":0") && (o == c.Listen || o == c.HTTPListen) {
		add(config.Errf("oidc.listen", "must differ from listen and http_listen: it is a listener of its own that serves only the OIDC documents"))
	}
	if c.OIDC.IssuerURL != "" {
		if u, err := url.Parse(c.OIDC.IssuerURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			add(config.Errf("oidc.issuer_url", "must be an absolute http(s) URL"))
		}
	}
	if c.OIDC.TokenTTL.D() < time.Minute || c.OIDC.TokenTTL.D() > 12*time.Hour {
		add(config.Errf("oidc.token_ttl", "must be between 1m and 12h"))
	}
	if c.OIDC.RotateAfter.D() < time.Hour {
		add(config.Errf("oidc.rotate_after", "must be at least 1h"))
	}
	if c.Platform.Concurrency < 1 || c.Platform.Concurrency > 10000 {
		add(config.Errf("platform.concurrency", "must be between 1 and 10000"))
	}
	for i, e := range c.Platform.Endpoints.Allow {
		if _, err := allowlist.ParseEndpoint(e); err != nil {
			add(config.Errf(fmt.Sprintf("platform.endpoints.allow[%d]", i), "%v", err))
		}
	}
	if c.TaskRetention.D() < time.Minute {
		add(config.Errf("task_retention", "must be at least 1m"))
	}
	l := c.Limits
	for _, f := range []struct {
		key string
		v   int
	}{
		{"limits.submit_rate", l.SubmitRate}, {"limits.submit_burst", l.SubmitBurst},
		{"limits.scope_unfinished_tasks", l.ScopeUnfinishedTasks}, {"limits.scope_payload_bytes", l.ScopePayloadBytes},
	} {
		if f.v < 1 {
			add(config.Errf(f.key, "must be at least 1"))
		}
	}
	if l.PingMaxSleep.D() < 0 || l.PingMaxSleep.D() > d.TaskDeadline.D()/2 {
		add(config.Errf("limits.ping_max_sleep", "must be between 0 and half of dispatch.task_deadline (%s)", d.TaskDeadline.D()/2))
	}
	if c.ShutdownTimeout.D() < 0 {
		add(config.Errf("shutdown_timeout", "must not be negative"))
	}
	c.validateCluster(add)
	return errors.Join(errs...)
}
