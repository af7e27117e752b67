package agent_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smdelegate/smdelegate/agent"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	valid := func() agent.Config {
		c := agent.DefaultConfig()
		c.Token = "t"
		c.Name = "n"
		c.TLS.Insecure = true
		return c
	}
	if c := valid(); c.Validate() != nil {
		t.Fatalf("valid config: %v", c.Validate())
	}
	for _, tc := range []struct {
		name  string
		tweak func(*agent.Config)
		want  string
	}{
		{"no token", func(c *agent.Config) { c.Token = "" }, "token: a delegate token is required"},
		{"issue11 no manager", func(c *agent.Config) { c.Manager = " " }, "manager: must not be empty"},
		{"issue11 one manager without port", func(c *agent.Config) { c.Manager = "smd.example" }, `manager: "smd.example" must be host:port`},
		{"issue11 second manager without port", func(c *agent.Config) { c.Manager = "a.example:7070,b.example" },
			`manager[1]: "b.example" must be host:port`},
		{"issue11 manager repeated", func(c *agent.Config) { c.Manager = "a.example:7070,a.example:7070" },
			"manager[1]: a.example:7070 repeats manager[0]"},
		{"empty tag", func(c *agent.Config) { c.Tags = []string{"a", " "} }, "tags[1]: must not be empty"},
		{"zero concurrency", func(c *agent.Config) { c.Concurrency = 0 }, "concurrency: must be between 1 and 10000"},
		{"bad retry mode", func(c *agent.Config) { c.AWS.RetryMode = "fast" }, "aws.retry_mode: must be standard or adaptive"},
		{"cert without key", func(c *agent.Config) { c.TLS.Insecure = false; c.TLS.CertFile = "x" }, "tls.cert_file: tls.cert_file and tls.key_file go together"},
		{"missing token file", func(c *agent.Config) { c.Token = ""; c.TokenFile = "/nonexistent/token" }, "token_file: cannot be read"},
		{"item2 relative file glob", func(c *agent.Config) { c.References.AllowFiles = []string{"/etc/smd/*.key", "keys/*"} },
			"references.allow_files[1]: must be an absolute path or path glob"},
		{"item2 file glob with ..", func(c *agent.Config) { c.References.AllowFiles = []string{"/etc/smd/keys/../*"} },
			"references.allow_files[0]: must not hold"},
		{"item2 SMD_ variable", func(c *agent.Config) { c.References.AllowEnv = []string{"AWS_KEY_*", "SMD_TOKEN"} },
			"references.allow_env[1]: SMD_* variables configure the agent itself"},
		{"item2 variable with a space", func(c *agent.Config) { c.References.AllowEnv = []string{"AWS KEY"} },
			"references.allow_env[0]: must be a variable name"},
		{"item2 endpoint without scheme", func(c *agent.Config) { c.Endpoints.Allow = []string{"127.0.0.1:4566"} },
			"endpoints.allow[0]: must be scheme://host[:port][/path]"},
		{"item2 endpoint with user", func(c *agent.Config) { c.Endpoints.Allow = []string{"https://u@vpce.example.com"} },
			"endpoints.allow[0]: must be scheme://host[:port][/path]"},
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

func TestTokenFileIsReadAndNeverEchoed(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "token")
	os.WriteFile(p, []byte("  s3cr3t-token\n"), 0o600)
	c := agent.DefaultConfig()
	c.TokenFile = p
	c.Concurrency = 0 // make Validate fail for another reason
	err := c.Validate()
	if c.Token != "s3cr3t-token" {
		t.Errorf("Token = %q, want the trimmed file content", c.Token)
	}
	if err == nil || strings.Contains(err.Error(), "s3cr3t") {
		t.Errorf("Validate() = %v; want an error that does not contain the token", err)
	}
}

// TestIssue11LoadConfigManagers: the file's manager list is kept as the
// addresses separated by commas; SMD_MANAGER, comma-separated, wins over
// the file.
func TestIssue11LoadConfigManagers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(path, []byte("manager:\n  - a.example:7070\n  - b.example:7070\ntoken: t\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := agent.LoadConfig(path)
	if err != nil {
		t.Fatalf("LoadConfig(%q) = %v", path, err)
	}
	if want := "a.example:7070,b.example:7070"; c.Manager != want {
		t.Errorf("LoadConfig(%q).Manager = %q, want %q", path, c.Manager, want)
	}
	t.Setenv("SMD_MANAGER", "c.example:7070, d.example:7070")
	if c, err = agent.LoadConfig(path); err != nil {
		t.Fatalf("LoadConfig(%q) with SMD_MANAGER = %v", path, err)
	}
	if want := "c.example:7070, d.example:7070"; c.Manager != want {
		t.Errorf("LoadConfig(%q).Manager with SMD_MANAGER = %q, want %q", path, c.Manager, want)
	}
	c.Name = "n"
	if err := c.Validate(); err != nil {
		t.Errorf("Validate() of SMD_MANAGER's two addresses = %v", err)
	}
}
