package seal_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smdelegate/smdelegate/internal/seal"
)

func mustSealer(t *testing.T) *seal.Sealer {
	t.Helper()
	key, err := seal.LoadKey("", seal.GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	s, err := seal.New(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSealOpen(t *testing.T) {
	t.Parallel()
	s := mustSealer(t)
	plain := []byte("AKIA-super-secret")
	sealed := s.Seal(plain, []byte("cred/a"))
	if bytes.Contains(sealed, plain) {
		t.Fatal("sealed value contains the plaintext")
	}
	got, err := s.Open(sealed, []byte("cred/a"))
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("Open = %q, %v; want %q", got, err, plain)
	}
	if _, err := s.Open(sealed, []byte("cred/b")); !errors.Is(err, seal.ErrOpen) {
		t.Errorf("Open with other aad = %v, want ErrOpen", err)
	}
	if _, err := mustSealer(t).Open(sealed, []byte("cred/a")); !errors.Is(err, seal.ErrOpen) {
		t.Errorf("Open with another key = %v, want ErrOpen", err)
	}
	sealed[len(sealed)-1] ^= 1
	if _, err := s.Open(sealed, []byte("cred/a")); !errors.Is(err, seal.ErrOpen) {
		t.Errorf("Open of altered value = %v, want ErrOpen", err)
	}
}

func TestLoadKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := filepath.Join(dir, "key")
	os.WriteFile(good, []byte(seal.GenerateKey()+"\n"), 0o600)
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("c2hvcnQ="), 0o600)
	if k, err := seal.LoadKey(good, ""); err != nil || len(k) != seal.KeySize {
		t.Errorf("LoadKey(file) = %d bytes, %v", len(k), err)
	}
	for _, tc := range []struct{ name, path, env, want string }{
		{"none", "", "", "master_key_file: no master key"},
		{"missing file", filepath.Join(dir, "nope"), "", "master_key_file: open"},
		{"short key in file", bad, "", "must hold a base64-encoded 32-byte key"},
		{"bad env", good, "not base64!", "SMD_MASTER_KEY: must hold"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := seal.LoadKey(tc.path, tc.env)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("LoadKey = %v, want error containing %q", err, tc.want)
			}
			if err != nil && tc.env != "" && strings.Contains(err.Error(), tc.env) {
				t.Errorf("error %q echoes the key material", err)
			}
		})
	}
}

func TestMAC(t *testing.T) {
	t.Parallel()
	s := mustSealer(t)
	value := []byte("request holding s3cr3t")
	sum := s.MAC(value, []byte("Secret"))
	if len(sum) != 32 || bytes.Contains(sum, value) {
		t.Fatalf("MAC = %x: want 32 bytes without the data", sum)
	}
	if again := s.MAC(value, []byte("Secret")); !bytes.Equal(again, sum) {
		t.Errorf("MAC is not stable: %x, then %x", sum, again)
	}
	// Context and data are not concatenated blindly.
	others := map[string][]byte{
		"other data":            s.MAC([]byte("request holding s3cr3T"), []byte("Secret")),
		"other context":         s.MAC(value, []byte("Ping")),
		"bytes moved to data":   s.MAC(append([]byte("t"), value...), []byte("Secre")),
		"another master key":    mustSealer(t).MAC(value, []byte("Secret")),
		"unkeyed SHA-256 alike": func() []byte { h := sha256.Sum256(value); return h[:] }(),
	}
	for name, other := range others {
		if bytes.Equal(other, sum) {
			t.Errorf("MAC with %s = the same digest", name)
		}
	}
}
