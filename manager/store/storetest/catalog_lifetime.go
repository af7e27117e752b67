package storetest

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/smdelegate/smdelegate/manager/store"
)

// testCatalogDurable closes a store and opens its directory again: the whole
// catalog must be there, the default index included, and still enforced.
func testCatalogDurable(t *testing.T, open OpenFunc) {
	ctx := t.Context()
	dir := t.TempDir()
	s := mustOpenDir(t, open, dir)

	scopes := []store.Scope{acct, org, proj, other}
	conns := make(map[store.Scope][]*store.Connector)
	creds := make(map[store.Scope][]*store.Credential)
	for _, sc := range scopes {
		mustCreateConnector(t, s, newConnector(sc, "aws", true))
		mustCreateConnector(t, s, newConnector(sc, "backup", false))
		mustPutCredential(t, s, newCredential(sc, "key"))
		mustPutCredential(t, s, newCredential(sc, "token"))
	}
	// Changes after the creates, so that reopening must keep the latest.
	mustCreateConnector(t, s, newConnector(acct, "gone", false))
	if err := s.DeleteConnector(ctx, acct, "gone"); err != nil {
		t.Fatalf("DeleteConnector(%q, %q) = %v, want nil", acct, "gone", err)
	}
	for _, c := range []*store.Connector{newConnector(org, "aws", false), newConnector(org, "backup", true)} {
		if err := s.UpdateConnector(ctx, c); err != nil {
			t.Fatalf("UpdateConnector(%q, %q) = %v, want nil", c.Scope, c.ID, err)
		}
	}
	mustPutCredential(t, s, &store.Credential{Scope: proj, Name: "token", Sealed: []byte("rotated")})
	for _, sc := range scopes {
		conns[sc] = mustListConnectors(t, s, sc)
		for _, c := range mustListCredentials(t, s, sc) {
			creds[sc] = append(creds[sc], mustGetCredential(t, s, sc, c.Name))
		}
	}
	retired := newSigningKey("old", base)
	retired.RetiredAt = base.Add(time.Hour)
	retired.Expires = base.Add(2 * time.Hour)
	mustPutSigningKey(t, s, retired)
	mustPutSigningKey(t, s, newSigningKey("new", base.Add(time.Hour)))
	keys := mustListSigningKeys(t, s)
	mustSetDelegateTags(t, s, "d1", []string{"prod", "gpu"})
	mustSetDelegateTags(t, s, "d2", []string{"staging"})
	mustSetDelegateTags(t, s, "d2", nil)
	tags := mustDelegateTags(t, s)

	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v, want nil", err)
	}
	s = mustOpenDir(t, open, dir)

	for _, sc := range scopes {
		if diff := cmp.Diff(conns[sc], mustListConnectors(t, s, sc), catalogCmp); diff != "" {
			t.Errorf("ListConnectors(%q) after reopening (-want +got):\n%s", sc, diff)
		}
		for _, want := range creds[sc] {
			if diff := cmp.Diff(want, mustGetCredential(t, s, sc, want.Name), catalogCmp); diff != "" {
				t.Errorf("GetCredential(%q, %q) after reopening (-want +got):\n%s", sc, want.Name, diff)
			}
		}
		wantDefault := "aws"
		if sc == org {
			wantDefault = "backup"
		}
		checkDefault(t, s, sc, wantDefault)
	}
	if diff := cmp.Diff(keys, mustListSigningKeys(t, s), catalogCmp); diff != "" {
		t.Errorf("ListSigningKeys() after reopening (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(tags, mustDelegateTags(t, s), catalogCmp, sortedTags); diff != "" {
		t.Errorf("DelegateTags() after reopening (-want +got):\n%s", diff)
	}

	// The reopened store goes on enforcing its rules.
	checkErr(t, call("CreateConnector", acct, "aws"), s.CreateConnector(ctx, newConnector(acct, "aws", false)), store.ErrExists)
	checkErr(t, call("CreateConnector", acct, "second", true), s.CreateConnector(ctx, newConnector(acct, "second", true)), store.ErrDefaultTaken)
	checkErr(t, call("UpdateConnector", org, "aws", true), s.UpdateConnector(ctx, newConnector(org, "aws", true)), store.ErrDefaultTaken)
	checkErr(t, call("CreateConnector", acct, "gone"), s.CreateConnector(ctx, newConnector(acct, "gone", false)), nil)
}
