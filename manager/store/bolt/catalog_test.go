package bolt_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	bbolt "go.etcd.io/bbolt"

	"github.com/smdelegate/smdelegate/manager/store"
	"github.com/smdelegate/smdelegate/manager/store/bolt"
)

// isSentinel reports whether err is one of the store's sentinels, which an
// invalid argument must not be mistaken for.
func isSentinel(err error) bool {
	for _, s := range []error{store.ErrNotFound, store.ErrExists, store.ErrConflict, store.ErrClosed, store.ErrDefaultTaken} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

func TestCatalogInvalidArguments(t *testing.T) {
	t.Parallel()
	db := mustOpenClosed(t, t.TempDir(), bolt.Options{})
	ctx := t.Context()
	acct := store.Scope{Account: "a"}
	tests := []struct {
		call string
		err  error
	}{
		{"CreateConnector(nil)", db.CreateConnector(ctx, nil)},
		{"CreateConnector(empty id)", db.CreateConnector(ctx, &store.Connector{Scope: acct})},
		{"CreateConnector(org without account)", db.CreateConnector(ctx, &store.Connector{Scope: store.Scope{Org: "o"}, ID: "c"})},
		{"CreateConnector(project without org)", db.CreateConnector(ctx, &store.Connector{Scope: store.Scope{Account: "a", Project: "p"}, ID: "c"})},
		{"UpdateConnector(nil)", db.UpdateConnector(ctx, nil)},
		{"UpdateConnector(empty id)", db.UpdateConnector(ctx, &store.Connector{Scope: acct})},
		{"UpdateConnector(project without org)", db.UpdateConnector(ctx, &store.Connector{Scope: store.Scope{Account: "a", Project: "p"}, ID: "c"})},
		{"PutCredential(nil)", db.PutCredential(ctx, nil)},
		{"PutCredential(empty name)", db.PutCredential(ctx, &store.Credential{Scope: acct})},
		{"PutCredential(org without account)", db.PutCredential(ctx, &store.Credential{Scope: store.Scope{Org: "o"}, Name: "n"})},
		{"PutSigningKey(nil)", db.PutSigningKey(ctx, nil)},
		{"PutSigningKey(empty id)", db.PutSigningKey(ctx, &store.SigningKey{})},
		{"SetDelegateTags(empty name)", db.SetDelegateTags(ctx, "", []string{"x"})},
	}
	for _, tt := range tests {
		if tt.err == nil || isSentinel(tt.err) {
			t.Errorf("%s = %v, want an invalid-argument error", tt.call, tt.err)
		}
	}
	for _, sc := range []store.Scope{acct, {Org: "o"}, {Account: "a", Project: "p"}} {
		if got, err := db.ListConnectors(ctx, sc); err != nil || len(got) != 0 {
			t.Errorf("ListConnectors(%q) = %d connectors, %v, want none stored", sc, len(got), err)
		}
		if got, err := db.ListCredentials(ctx, sc); err != nil || len(got) != 0 {
			t.Errorf("ListCredentials(%q) = %d credentials, %v, want none stored", sc, len(got), err)
		}
	}
	if got, err := db.ListSigningKeys(ctx); err != nil || len(got) != 0 {
		t.Errorf("ListSigningKeys() = %d keys, %v, want none stored", len(got), err)
	}
	// Lookups of the empty id find nothing rather than failing oddly.
	if _, err := db.GetConnector(ctx, acct, ""); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetConnector(empty id) = %v, want %v", err, store.ErrNotFound)
	}
	if err := db.DeleteSigningKey(ctx, ""); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeleteSigningKey(empty id) = %v, want %v", err, store.ErrNotFound)
	}
}

func TestCatalogContextDone(t *testing.T) {
	t.Parallel()
	db := mustOpenClosed(t, t.TempDir(), bolt.Options{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	acct := store.Scope{Account: "a"}
	if err := db.CreateConnector(ctx, &store.Connector{Scope: acct, ID: "c", Default: true}); !errors.Is(err, context.Canceled) {
		t.Errorf("CreateConnector(cancelled ctx) = %v, want %v", err, context.Canceled)
	}
	if err := db.PutCredential(ctx, &store.Credential{Scope: acct, Name: "n"}); !errors.Is(err, context.Canceled) {
		t.Errorf("PutCredential(cancelled ctx) = %v, want %v", err, context.Canceled)
	}
	if _, err := db.DelegateTags(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("DelegateTags(cancelled ctx) = %v, want %v", err, context.Canceled)
	}
	if _, err := db.DefaultConnector(t.Context(), acct); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DefaultConnector() = %v, want %v: a cancelled create must not persist", err, store.ErrNotFound)
	}
}

// TestCatalogErrorsHoldNoSecrets plants values in credentials and signing
// keys and drives every failing path that has them at hand: no error may
// repeat them.
func TestCatalogErrorsHoldNoSecrets(t *testing.T) {
	t.Parallel()
	const planted = "PLANTED-SECRET-VALUE"
	db := MustOpen(t, t.TempDir(), bolt.Options{})
	ctx := t.Context()
	cred := func(sc store.Scope) *store.Credential {
		return &store.Credential{Scope: sc, Name: "n", Sealed: []byte(planted)}
	}
	key := func(id string) *store.SigningKey {
		return &store.SigningKey{ID: id, Private: []byte(planted), Public: []byte(planted)}
	}
	errs := []error{
		db.PutCredential(ctx, cred(store.Scope{Org: "o"})),
		db.PutCredential(ctx, &store.Credential{Scope: store.Scope{Account: "a"}, Sealed: []byte(planted)}),
		db.PutSigningKey(ctx, key("")),
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	errs = append(errs, db.PutCredential(cancelled, cred(store.Scope{Account: "a"})), db.PutSigningKey(cancelled, key("k")))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	errs = append(errs, db.PutCredential(ctx, cred(store.Scope{Account: "a"})), db.PutSigningKey(ctx, key("k")))
	for i, err := range errs {
		if err == nil {
			t.Errorf("call %d = nil, want an error", i)
		} else if strings.Contains(err.Error(), planted) {
			t.Errorf("call %d error %q holds the planted value", i, err)
		}
	}
}

// TestOpenAddsCatalogBuckets opens a file written before the catalog
// existed, holding only the task buckets.
func TestOpenAddsCatalogBuckets(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), bolt.FileName)
	old, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = old.Update(func(tx *bbolt.Tx) error {
		for _, name := range []string{"tasks", "created", "unfinished"} {
			if _, err := tx.CreateBucket([]byte(name)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	db, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatalf("Open(%q) = %v", path, err)
	}
	defer db.Close()
	ctx := t.Context()
	acct := store.Scope{Account: "a"}
	if err := db.CreateConnector(ctx, &store.Connector{Scope: acct, ID: "c", Default: true}); err != nil {
		t.Errorf("CreateConnector() = %v, want nil", err)
	}
	if err := db.PutCredential(ctx, &store.Credential{Scope: acct, Name: "n"}); err != nil {
		t.Errorf("PutCredential() = %v, want nil", err)
	}
	if err := db.PutSigningKey(ctx, &store.SigningKey{ID: "k"}); err != nil {
		t.Errorf("PutSigningKey() = %v, want nil", err)
	}
	if err := db.SetDelegateTags(ctx, "d", []string{"t"}); err != nil {
		t.Errorf("SetDelegateTags() = %v, want nil", err)
	}
}
