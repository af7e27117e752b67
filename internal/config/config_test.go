package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/smdelegate/smdelegate/internal/config"
)

type sample struct {
	Name  string          `yaml:"name"`
	Tags  []string        `yaml:"tags"`
	Count int             `yaml:"count"`
	On    bool            `yaml:"on"`
	Wait  config.Duration `yaml:"wait"`
	Inner struct {
		Lease config.Duration `yaml:"lease_duration"`
	} `yaml:"inner"`
}

func TestLoadFileAndEnv(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(path, []byte("name: file\ncount: 3\nwait: 5s\ninner:\n  lease_duration: 1m\n"), 0o600)
	var got sample
	if err := config.LoadFile(path, &got); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"SMD_TAGS": "a, b,,c", "SMD_ON": "true", "SMD_INNER_LEASE_DURATION": "2s", "SMD_COUNT": "7"}
	if err := config.ApplyEnv("SMD", &got, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	want := sample{Name: "file", Tags: []string{"a", "b", "c"}, Count: 7, On: true, Wait: config.Duration(5 * time.Second)}
	want.Inner.Lease = config.Duration(2 * time.Second)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
}

func TestLoadFileErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o600)
		return p
	}
	for _, tc := range []struct{ name, path, want string }{
		{"missing file", filepath.Join(dir, "nope.yaml"), "no such file"},
		{"unknown key", write("u.yaml", "nmae: x\n"), "field nmae not found"},
		{"bad duration", write("d.yaml", "wait: soon\n"), `"soon" is not a duration`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s sample
			err := config.LoadFile(tc.path, &s)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("LoadFile(%s) = %v, want error containing %q", tc.name, err, tc.want)
			}
		})
	}
	var s sample
	if err := config.LoadFile(write("empty.yaml", ""), &s); err != nil {
		t.Errorf("LoadFile(empty) = %v, want nil", err)
	}
	if err := config.ApplyEnv("SMD", &s, func(k string) (string, bool) { return "x", k == "SMD_COUNT" }); err == nil ||
		!strings.Contains(err.Error(), "SMD_COUNT") {
		t.Errorf("ApplyEnv(SMD_COUNT=x) = %v, want an error naming SMD_COUNT", err)
	}
}

// TestLoadDefaultsFileEnv: Load keeps a default no layer sets, the file
// overrides a default, and the environment overrides the file.
func TestLoadDefaultsFileEnv(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte("name: file\ncount: 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SMD_COUNT", "7")
	got, err := config.Load(path, sample{Name: "default", Count: 1, Wait: config.Duration(time.Second)})
	if err != nil {
		t.Fatalf("Load(%q) = %v", path, err)
	}
	want := sample{Name: "file", Count: 7, Wait: config.Duration(time.Second)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Load(%q) mismatch (-want +got):\n%s", path, diff)
	}
	if _, err := config.Load(filepath.Join(t.TempDir(), "missing.yaml"), sample{}); err == nil {
		t.Errorf("Load(missing file) = nil error, want one")
	}
	t.Setenv("SMD_COUNT", "many")
	if _, err := config.Load("", sample{}); err == nil || !strings.Contains(err.Error(), "SMD_COUNT") {
		t.Errorf("Load with SMD_COUNT=many = %v, want an error naming SMD_COUNT", err)
	}
}
