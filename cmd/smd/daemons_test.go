package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/smdelegate/smdelegate/agent"
	"github.com/smdelegate/smdelegate/manager"
)

// TestAgentConfigLayers: the config file, then SMD_* variables, then the
// flags given, each winning over the one before (design §9).
func TestAgentConfigLayers(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.yaml")
	file := "manager: file.example:7070\ntoken: file-token\nname: from-file\ntags: [file]\nconcurrency: 3\ntls: {insecure: true}\n"
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SMD_MANAGER", "env.example:7070")
	t.Setenv("SMD_NAME", "from-env")
	t.Setenv("SMD_CONCURRENCY", "5")

	var o agentFlags
	fs := pflag.NewFlagSet("agent", pflag.ContinueOnError)
	o.register(fs)
	if err := fs.Parse([]string{"-c", path, "--name", "from-flag", "--tags", "x,y"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := o.config(fs)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	for _, tt := range []struct{ field, got, want string }{
		{"manager (file < env)", cfg.Manager, "env.example:7070"},
		{"name (env < flag)", cfg.Name, "from-flag"},
		{"token (file only)", cfg.Token, "file-token"},
		{"tags (file < flag)", strings.Join(cfg.Tags, ","), "x,y"},
	} {
		if tt.got != tt.want {
			t.Errorf("%s = %q, want %q", tt.field, tt.got, tt.want)
		}
	}
	if cfg.Concurrency != 5 {
		t.Errorf("concurrency (file < env) = %d, want 5", cfg.Concurrency)
	}
}

// TestShippedConfigsLoad loads configs/agent.yaml and configs/manager.yaml
// as shipped (unknown keys are an error) and validates them with only the
// host files they name (token, CA, master key) replaced.
func TestShippedConfigsLoad(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "agent.token")
	if err := os.WriteFile(tokenFile, []byte("smdd_shipped_config_test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := agent.LoadConfig(filepath.Join("..", "..", "configs", "agent.yaml"))
	if err != nil {
		t.Fatalf("configs/agent.yaml: %v", err)
	}
	a.TokenFile = tokenFile
	a.TLS.CAFile = ""
	if err := a.Validate(); err != nil {
		t.Errorf("configs/agent.yaml does not validate: %v", err)
	}

	m, err := manager.LoadConfig(filepath.Join("..", "..", "configs", "manager.yaml"))
	if err != nil {
		t.Fatalf("configs/manager.yaml: %v", err)
	}
	if m.MasterKeyFile == "" {
		t.Errorf("configs/manager.yaml: master_key_file is not set")
	}
	m.MasterKey = make([]byte, 32) // what LoadMasterKey would read from master_key_file
	if err := m.Validate(); err != nil {
		t.Errorf("configs/manager.yaml does not validate: %v", err)
	}
}
