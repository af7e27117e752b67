package storetest

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/smdelegate/smdelegate/manager/store"
)

// Scopes of the catalog tests: one of each depth, and a second account.
var (
	acct  = store.Scope{Account: "acme"}
	org   = store.Scope{Account: "acme", Org: "eng"}
	proj  = store.Scope{Account: "acme", Org: "eng", Project: "web"}
	other = store.Scope{Account: "globex"}
)

// catalogCmp compares catalog values as the contract promises them: empty
// and nil slices alike, times equal to the millisecond whatever their
// location.
var catalogCmp = taskCmp

// Timestamps the store sets from its clock, which checkRecent checks on its
// own.
var (
	ignoreConnectorStamps  = cmpopts.IgnoreFields(store.Connector{}, "CreatedAt", "UpdatedAt")
	ignoreCredentialStamps = cmpopts.IgnoreFields(store.Credential{}, "CreatedAt", "UpdatedAt")
)

// newConnector returns a connector whose Data names it, so that a connector
// read back from the wrong scope is noticed.
func newConnector(sc store.Scope, id string, def bool) *store.Connector {
	return &store.Connector{Scope: sc, ID: id, Default: def, Data: []byte("connector " + id + " in " + sc.String())}
}

func mustCreateConnector(t *testing.T, s store.Store, c *store.Connector) {
	t.Helper()
	if err := s.CreateConnector(t.Context(), c); err != nil {
		t.Fatalf("CreateConnector(%q, %q) = %v, want nil", c.Scope, c.ID, err)
	}
}

func mustGetConnector(t *testing.T, s store.Store, sc store.Scope, id string) *store.Connector {
	t.Helper()
	got, err := s.GetConnector(t.Context(), sc, id)
	if err != nil {
		t.Fatalf("GetConnector(%q, %q) = %v, want nil", sc, id, err)
	}
	if got == nil {
		t.Fatalf("GetConnector(%q, %q) = nil connector, nil error", sc, id)
	}
	return got
}

func mustListConnectors(t *testing.T, s store.Store, sc store.Scope) []*store.Connector {
	t.Helper()
	got, err := s.ListConnectors(t.Context(), sc)
	if err != nil {
		t.Fatalf("ListConnectors(%q) = %v, want nil", sc, err)
	}
	return got
}

// connectorIDs returns the ids of cs, in order.
func connectorIDs(cs []*store.Connector) []string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.ID)
	}
	return out
}

// newCredential returns a credential whose sealed value names it.
func newCredential(sc store.Scope, name string) *store.Credential {
	return &store.Credential{Scope: sc, Name: name, Sealed: []byte("sealed " + name + " in " + sc.String())}
}

func mustPutCredential(t *testing.T, s store.Store, c *store.Credential) {
	t.Helper()
	if err := s.PutCredential(t.Context(), c); err != nil {
		t.Fatalf("PutCredential(%q, %q) = %v, want nil", c.Scope, c.Name, err)
	}
}

func mustGetCredential(t *testing.T, s store.Store, sc store.Scope, name string) *store.Credential {
	t.Helper()
	got, err := s.GetCredential(t.Context(), sc, name)
	if err != nil {
		t.Fatalf("GetCredential(%q, %q) = %v, want nil", sc, name, err)
	}
	if got == nil {
		t.Fatalf("GetCredential(%q, %q) = nil credential, nil error", sc, name)
	}
	return got
}

func mustListCredentials(t *testing.T, s store.Store, sc store.Scope) []*store.Credential {
	t.Helper()
	got, err := s.ListCredentials(t.Context(), sc)
	if err != nil {
		t.Fatalf("ListCredentials(%q) = %v, want nil", sc, err)
	}
	return got
}

// newSigningKey returns an active key created at created.
func newSigningKey(id string, created time.Time) *store.SigningKey {
	return &store.SigningKey{
		ID:        id,
		Private:   []byte("sealed private key " + id),
		Public:    []byte(`{"kty":"EC","kid":"` + id + `"}`),
		CreatedAt: created,
	}
}

func mustPutSigningKey(t *testing.T, s store.Store, k *store.SigningKey) {
	t.Helper()
	if err := s.PutSigningKey(t.Context(), k); err != nil {
		t.Fatalf("PutSigningKey(%q) = %v, want nil", k.ID, err)
	}
}

func mustListSigningKeys(t *testing.T, s store.Store) []*store.SigningKey {
	t.Helper()
	got, err := s.ListSigningKeys(t.Context())
	if err != nil {
		t.Fatalf("ListSigningKeys() = %v, want nil", err)
	}
	return got
}

func mustSetDelegateTags(t *testing.T, s store.Store, name string, tags []string) {
	t.Helper()
	if err := s.SetDelegateTags(t.Context(), name, tags); err != nil {
		t.Fatalf("SetDelegateTags(%q, %q) = %v, want nil", name, tags, err)
	}
}

func mustDelegateTags(t *testing.T, s store.Store) map[string][]string {
	t.Helper()
	got, err := s.DelegateTags(t.Context())
	if err != nil {
		t.Fatalf("DelegateTags() = %v, want nil", err)
	}
	return got
}

// sortedTags compares tag lists whatever their order, which the contract
// does not promise.
var sortedTags = cmpopts.SortSlices(func(a, b string) bool { return a < b })
