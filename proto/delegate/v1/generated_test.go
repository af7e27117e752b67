package delegatev1_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGeneratedCodeIsFresh regenerates the Go code from the .proto files
// into a temporary directory and fails if it differs from what is
// committed. Fix: run scripts/gen-proto.sh and commit the result.
func TestGeneratedCodeIsFresh(t *testing.T) {
	for _, tool := range []string{"protoc", "protoc-gen-go", "protoc-gen-go-grpc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not on PATH: run scripts/tools.sh (and put $(go env GOPATH)/bin on PATH)", tool)
		}
	}
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	cmd := exec.Command(filepath.Join(root, "scripts", "gen-proto.sh"), out)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/gen-proto.sh: %v\n%s", err, b)
	}
	gen, err := filepath.Glob(filepath.Join(out, "proto", "delegate", "v1", "*.go"))
	if err != nil || len(gen) == 0 {
		t.Fatalf("no generated files in %s (%v)", out, err)
	}
	committed, _ := filepath.Glob("*.pb.go")
	if len(committed) != len(gen) {
		t.Errorf("generated %d files, %d committed: run scripts/gen-proto.sh", len(gen), len(committed))
	}
	for _, g := range gen {
		want, err := os.ReadFile(g)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Base(g))
		if err != nil {
			t.Errorf("%s is not committed: run scripts/gen-proto.sh", filepath.Base(g))
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale: run scripts/gen-proto.sh and commit the result", filepath.Base(g))
		}
	}
}
