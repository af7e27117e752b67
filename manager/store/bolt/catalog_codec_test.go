package bolt

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/smdelegate/smdelegate/manager/store"
)

var (
	codecCreated = time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)
	codecUpdated = time.Date(1960, 1, 2, 3, 4, 5, 1, time.UTC) // before the epoch
)

// catalogRecords returns one encoded record of each kind, with its decoder.
func catalogRecords() map[string]struct {
	v      []byte
	decode func([]byte) (any, error)
} {
	scope := store.Scope{Account: "a", Org: "b"}
	conn := &store.Connector{Scope: scope, ID: "c", Default: true, Data: []byte{0, 1, 0xff}}
	cred := &store.Credential{Scope: scope, Name: "n", Sealed: []byte("sealed")}
	key := &store.SigningKey{ID: "k", Private: []byte("priv"), Public: []byte("{}"),
		RetiredAt: codecUpdated, Expires: codecCreated}
	type rec = struct {
		v      []byte
		decode func([]byte) (any, error)
	}
	return map[string]rec{
		"connector": {encodeConnector(conn, codecCreated, codecUpdated), func(v []byte) (any, error) {
			return decodeConnector(v, scope, "c")
		}},
		"credential": {encodeCredential(cred, codecCreated, codecUpdated), func(v []byte) (any, error) {
			return decodeCredential(v, scope, "n", true)
		}},
		"signing key": {encodeSigningKey(key, codecCreated), func(v []byte) (any, error) {
			return decodeSigningKey(v, "k")
		}},
		"tags": {encodeTags([]string{"x", "", "ünïcode"}), func(v []byte) (any, error) {
			return decodeTags(v, "d")
		}},
	}
}

func TestCatalogCodecRoundTrip(t *testing.T) {
	scope := store.Scope{Account: "a", Org: "b"}
	want := map[string]any{
		"connector": &store.Connector{Scope: scope, ID: "c", Default: true, Data: []byte{0, 1, 0xff},
			CreatedAt: codecCreated, UpdatedAt: codecUpdated},
		"credential": &store.Credential{Scope: scope, Name: "n", Sealed: []byte("sealed"),
			CreatedAt: codecCreated, UpdatedAt: codecUpdated},
		"signing key": &store.SigningKey{ID: "k", Private: []byte("priv"), Public: []byte("{}"),
			CreatedAt: codecCreated, RetiredAt: codecUpdated, Expires: codecCreated},
		"tags": []string{"x", "", "ünïcode"},
	}
	for name, r := range catalogRecords() {
		got, err := r.decode(r.v)
		if err != nil {
			t.Fatalf("decode %s = %v", name, err)
		}
		// Exact equality: bolt keeps nanoseconds.
		if diff := cmp.Diff(want[name], got); diff != "" {
			t.Errorf("%s round trip (-want +got):\n%s", name, diff)
		}
	}

	// Zero times stay zero, and a credential decoded for a list has no value.
	v := encodeConnector(&store.Connector{}, time.Time{}, time.Time{})
	if c, err := decodeConnector(v, store.Scope{}, "z"); err != nil || !c.CreatedAt.IsZero() || c.Default || c.Data != nil {
		t.Errorf("decodeConnector(zero) = %+v, %v, want zero times, no data", c, err)
	}
	v = encodeCredential(&store.Credential{Sealed: []byte("secret")}, codecCreated, codecUpdated)
	if c, err := decodeCredential(v, store.Scope{}, "n", false); err != nil || c.Sealed != nil || !c.CreatedAt.Equal(codecCreated) {
		t.Errorf("decodeCredential(sealed false) = %+v, %v, want timestamps and no Sealed", c, err)
	}
}

func TestCatalogCodecCorrupt(t *testing.T) {
	for name, r := range catalogRecords() {
		// Every truncation fails cleanly, and so do a trailing byte and an
		// unknown version.
		for n := range len(r.v) {
			if _, err := r.decode(r.v[:n]); !errors.Is(err, errCorrupt) {
				t.Errorf("decode %s (first %d of %d bytes) = %v, want %v", name, n, len(r.v), err, errCorrupt)
			}
		}
		if _, err := r.decode(append(bytes.Clone(r.v), 0)); !errors.Is(err, errCorrupt) {
			t.Errorf("decode %s (trailing byte) = %v, want %v", name, err, errCorrupt)
		}
		if _, err := r.decode(append([]byte{catalogVersion + 1}, r.v[1:]...)); !errors.Is(err, errCorrupt) {
			t.Errorf("decode %s (unknown version) = %v, want %v", name, err, errCorrupt)
		}
	}
	huge := []byte{catalogVersion, 0xff, 0xff, 0xff, 0xff, 0x0f}
	if _, err := decodeTags(huge, "d"); !errors.Is(err, errCorrupt) {
		t.Errorf("decodeTags(huge count) = %v, want %v", err, errCorrupt)
	}
}

// TestScopeKeyPrefixFree checks what ListConnectors and ListCredentials rely
// on: the keys with scope a's prefix are exactly a's items.
func TestScopeKeyPrefixFree(t *testing.T) {
	scopes := []store.Scope{
		{}, {Account: "a"}, {Account: "ab"}, {Account: "a", Org: "b"}, {Account: "ab", Org: "c"},
		{Account: "a", Org: "bc"}, {Account: "a", Org: "b", Project: "c"}, {Account: "a", Org: "b", Project: "cd"},
		{Account: "a\x00b"}, {Account: "a", Org: "\x00b"}, {Account: string(make([]byte, 200))},
		{Account: string(make([]byte, 200)), Org: "x"},
	}
	names := []string{"x", "bx", "cx", "\x00", "\x01\x00", string(make([]byte, 300))}
	for _, a := range scopes {
		prefix := scopeKey(a)
		for _, b := range scopes {
			for _, name := range names {
				k := itemKey(scopeKey(b), name)
				if got := bytes.HasPrefix(k, prefix); got != (a == b) {
					t.Errorf("item %q of %+v has the prefix of %+v: %v, want %v", name, b, a, got, a == b)
				}
			}
		}
	}
}

func FuzzDecodeCatalog(f *testing.F) {
	for _, r := range catalogRecords() {
		f.Add(r.v)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		// None may panic.
		_, _ = decodeConnector(b, store.Scope{}, "c")
		_, _ = decodeCredential(b, store.Scope{}, "n", true)
		_, _ = decodeCredential(b, store.Scope{}, "n", false)
		_, _ = decodeSigningKey(b, "k")
		_, _ = decodeTags(b, "d")
	})
}
