package agent

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/smdelegate/smdelegate/internal/allowlist"
	"github.com/smdelegate/smdelegate/internal/config"
)

// Config is the agent's configuration (configs/agent.yaml).
type Config struct {
	// Manager is the manager's gRPC address, host:port, or several
	// separated by commas (the replicas of one cluster; a host name may
	// resolve to several addresses): the agent connects to one and fails
	// over to the others (managers.go). In the YAML file it may also be a
	// list. The key is decoded by Config.UnmarshalYAML and SMD_MANAGER
	// read by LoadConfig: yaml:"-" keeps the generic decoder, which cannot
	// take a list into a string, off it.
	Manager string `yaml:"-"`
	// Token is the delegate token. Prefer TokenFile or SMD_TOKEN.
	Token string `yaml:"token"`
	// TokenFile holds the delegate token (read at start, trimmed).
	TokenFile string `yaml:"token_file"`
	// Name identifies the delegate; it defaults to the hostname and is
	// always one of its tags.
	Name string `yaml:"name"`
	// Tags are matched against connectors' delegate selectors.
	Tags []string `yaml:"tags"`
	// Group, if set, is also a tag.
	Group string `yaml:"group"`
	// Concurrency is how many tasks run at once.
	Concurrency int `yaml:"concurrency"`
	// DrainTimeout is how long a draining agent lets running tasks finish
	// before it cancels them; 0 waits without limit.
	DrainTimeout config.Duration `yaml:"drain_timeout"`
	TLS          TLSConfig       `yaml:"tls"`
	Reconnect    ReconnectConfig `yaml:"reconnect"`
	AWS          AWSConfig       `yaml:"aws"`
	// References says which env: and file: references of connectors this
	// delegate resolves. Empty (the default): none.
	References ReferencesConfig `yaml:"references"`
	// Endpoints says which endpoint_url and sts_endpoint_url values beside
	// AWS's own endpoints this delegate calls. Empty (the default): none.
	Endpoints EndpointsConfig `yaml:"endpoints"`
	Log       LogConfig       `yaml:"log"`
	// ConfigFile is the file LoadConfig read ("" when none). References
	// never read it, nor TokenFile or TLS.KeyFile.
	ConfigFile string `yaml:"-"`
}

// ReferencesConfig is the delegate host's allow-list for connectors'
// env: and file: references (access_key_id, secret_access_key). A
// connector is written by an operator of the manager, the host belongs to
// whoever runs the agent: only the latter decides what may be read.
type ReferencesConfig struct {
	// AllowEnv: environment variable names, or patterns of names
	// (AWS_KEY_*), env: references may read. SMD_* variables never.
	AllowEnv []string `yaml:"allow_env"`
	// AllowFiles: absolute path globs (* does not cross /) file:
	// references may read. The agent's token file, config file and TLS
	// key are never read, even when a glob matches them.
	AllowFiles []string `yaml:"allow_files"`
}

// EndpointsConfig is the delegate host's allow-list of custom endpoints.
type EndpointsConfig struct {
	// Allow: scheme://host[:port][/path] patterns; a leading "*." in the
	// host matches subdomains, port "*" any port. AWS's own Secrets
	// Manager and STS endpoints are always allowed.
	Allow []string `yaml:"allow"`
}

// TLSConfig configures the connection to the manager.
type TLSConfig struct {
	// Insecure connects in plaintext. It must be said explicitly.
	Insecure bool `yaml:"insecure"`
	// CAFile verifies the manager's certificate (system roots when empty).
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are the agent's client certificate (mTLS).
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName overrides the name checked in the manager's certificate.
	ServerName string `yaml:"server_name"`
}

// ReconnectConfig is the backoff between stream attempts: full jitter,
// doubling from Initial up to Max.
type ReconnectConfig struct {
	Initial config.Duration `yaml:"initial"`
	Max     config.Duration `yaml:"max"`
}

// AWSConfig tunes the AWS SDK clients the agent keeps.
type AWSConfig struct {
	// RetryMode is "standard" or "adaptive".
	RetryMode string `yaml:"retry_mode"`
	// MaxAttempts is the SDK's attempts per call.
	MaxAttempts int `yaml:"max_attempts"`
	// ClientPoolSize bounds the pooled Secrets Manager clients.
	ClientPoolSize int `yaml:"client_pool_size"`
	// ClientTTL evicts a pooled client after this long.
	ClientTTL config.Duration `yaml:"client_ttl"`
}

// LogConfig configures logging.
type LogConfig struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// DefaultConfig returns the agent's defaults.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		Manager:      "127.0.0.1:7070",
		Name:         host,
		Concurrency:  10,
		DrainTimeout: config.Duration(5 * time.Minute),
		Reconnect:    ReconnectConfig{Initial: config.Duration(time.Second), Max: config.Duration(60 * time.Second)},
		AWS:          AWSConfig{RetryMode: "standard", MaxAttempts: 3, ClientPoolSize: 64, ClientTTL: config.Duration(time.Hour)},
		Log:          LogConfig{Level: "info"},
	}
}

// LoadConfig reads defaults, then the file at path (if not empty), then
// SMD_* environment variables (SMD_MANAGER, SMD_TOKEN, SMD_TAGS, ...). The
// caller applies flags and calls Validate.
func LoadConfig(path string) (Config, error) {
	c, err := config.Load(path, DefaultConfig())
	if err != nil {
		return c, err
	}
	if v, ok := os.LookupEnv("SMD_MANAGER"); ok { // comma-separated, as in the file
		c.Manager = v
	}
	c.ConfigFile = path
	return c, nil
}

// Validate checks every field, naming the field and the rule. It also
// reads TokenFile into Token.
func (c *Config) Validate() error {
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	if _, err := parseManagers(c.Manager); err != nil {
		add(err)
	}
	if c.TokenFile != "" && c.Token == "" { // token (or SMD_TOKEN) wins over token_file
		b, err := os.ReadFile(c.TokenFile)
		if err != nil {
			add(config.Errf("token_file", "cannot be read: %v", err))
		} else {
			c.Token = strings.TrimSpace(string(b))
		}
	}
	if c.Token == "" {
		add(config.Errf("token", "a delegate token is required (token, token_file or SMD_TOKEN)"))
	}
	if strings.TrimSpace(c.Name) == "" {
		add(config.Errf("name", "must not be empty"))
	}
	for i, t := range c.Tags {
		if strings.TrimSpace(t) == "" {
			add(config.Errf(fmt.Sprintf("tags[%d]", i), "must not be empty"))
		}
	}
	if c.Concurrency < 1 || c.Concurrency > 10000 {
		add(config.Errf("concurrency", "must be between 1 and 10000"))
	}
	if c.DrainTimeout.D() < 0 {
		add(config.Errf("drain_timeout", "must not be negative"))
	}
	if c.Reconnect.Initial.D() <= 0 || c.Reconnect.Max.D() < c.Reconnect.Initial.D() {
		add(config.Errf("reconnect.initial", "must be positive and not above reconnect.max"))
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		add(config.Errf("tls.cert_file", "tls.cert_file and tls.key_file go together"))
	}
	if c.TLS.Insecure && (c.TLS.CAFile != "" || c.TLS.CertFile != "") {
		add(config.Errf("tls.insecure", "cannot be combined with tls.ca_file or tls.cert_file"))
	}
	switch c.AWS.RetryMode {
	case "standard", "adaptive":
	default:
		add(config.Errf("aws.retry_mode", "must be standard or adaptive"))
	}
	if c.AWS.MaxAttempts < 1 || c.AWS.MaxAttempts > 20 {
		add(config.Errf("aws.max_attempts", "must be between 1 and 20"))
	}
	if c.AWS.ClientPoolSize < 1 {
		add(config.Errf("aws.client_pool_size", "must be at least 1"))
	}
	if c.AWS.ClientTTL.D() <= 0 {
		add(config.Errf("aws.client_ttl", "must be positive"))
	}
	for i, p := range c.References.AllowEnv {
		if err := allowlist.CheckEnvPattern(p); err != nil {
			add(config.Errf(fmt.Sprintf("references.allow_env[%d]", i), "%v", err))
		} else if strings.HasPrefix(strings.ToUpper(p), "SMD_") {
			add(config.Errf(fmt.Sprintf("references.allow_env[%d]", i), "SMD_* variables configure the agent itself and are never read for a connector"))
		}
	}
	for i, g := range c.References.AllowFiles {
		if err := allowlist.CheckFileGlob(g); err != nil {
			add(config.Errf(fmt.Sprintf("references.allow_files[%d]", i), "%v", err))
		}
	}
	for i, e := range c.Endpoints.Allow {
		if _, err := allowlist.ParseEndpoint(e); err != nil {
			add(config.Errf(fmt.Sprintf("endpoints.allow[%d]", i), "%v", err))
		}
	}
	return errors.Join(errs...)
}

// UnmarshalYAML decodes the agent's YAML file: every key as the generic
// decoder does (unknown keys refused, through the same strict decoder),
// and manager, which is one address, several separated by commas, or a
// list of addresses.
func (c *Config) UnmarshalYAML(unmarshal func(any) error) error {
	type plain Config // Config's fields without this method
	w := struct {
		plain   `yaml:",inline"`
		Manager managerKey `yaml:"manager"`
	}{plain: plain(*c), Manager: managerKey{value: c.Manager}}
	if err := unmarshal(&w); err != nil {
		return err
	}
	*c = Config(w.plain)
	c.Manager = w.Manager.value
	return nil
}

// managerKey is the manager key of the YAML file, held as Config.Manager
// holds it: the addresses separated by commas.
type managerKey struct{ value string }

// UnmarshalYAML takes a string or a list of strings, one address each.
func (k *managerKey) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		k.value = n.Value
		return nil
	case yaml.SequenceNode:
		addrs := make([]string, 0, len(n.Content))
		for i, item := range n.Content {
			if item.Kind != yaml.ScalarNode || strings.Contains(item.Value, ",") {
				return fmt.Errorf("line %d: manager[%d]: must be one host:port address", item.Line, i)
			}
			addrs = append(addrs, item.Value)
		}
		k.value = strings.Join(addrs, ",")
		return nil
	}
	return fmt.Errorf("line %d: manager: must be a host:port address or a list of them", n.Line)
}
