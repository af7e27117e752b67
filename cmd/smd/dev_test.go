package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestDevMasterKeyCreatesDataDir: smd dev --data-dir D works when D does
// not exist yet, and a second start on D reads the same master key.
func TestDevMasterKeyCreatesDataDir(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "not", "yet")
	k1, err := devMasterKey(dir)
	if err != nil {
		t.Fatalf("devMasterKey(%s) on a missing directory: %v", dir, err)
	}
	if len(k1) != 32 {
		t.Errorf("devMasterKey = %d bytes, want 32", len(k1))
	}
	if fi, err := os.Stat(dir); err != nil {
		t.Errorf("data dir: %v", err)
	} else if !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Errorf("data dir mode = %v, want a 0700 directory", fi.Mode())
	}
	k2, err := devMasterKey(dir)
	if err != nil || !bytes.Equal(k1, k2) {
		t.Errorf("devMasterKey again = %v (same key: %v), want the key written the first time", err, bytes.Equal(k1, k2))
	}
}
