package storetest

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/smdelegate/smdelegate/manager/store"
)

func testCredentialPutGet(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)

	binary := make([]byte, 256)
	for i := range binary {
		binary[i] = byte(255 - i)
	}
	tests := []struct {
		name string
		cred *store.Credential
	}{
		{"account", newCredential(acct, "aws_secret_key")},
		{"org", newCredential(org, "aws_secret_key")},
		{"project", newCredential(proj, "aws_secret_key")},
		{"binary", &store.Credential{Scope: other, Name: "binary", Sealed: binary}},
		{"empty", &store.Credential{Scope: other, Name: "empty"}},
		{"given timestamps are ignored", func() *store.Credential {
			c := newCredential(other, "stamped")
			c.CreatedAt = base
			c.UpdatedAt = base
			return c
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sc, name := tt.cred.Scope, tt.cred.Name
			before := time.Now()
			mustPutCredential(t, s, tt.cred)
			after := time.Now()
			got := mustGetCredential(t, s, sc, name)
			if diff := cmp.Diff(tt.cred, got, catalogCmp, ignoreCredentialStamps); diff != "" {
				t.Errorf("GetCredential(%q, %q) mismatch (-want +got):\n%s", sc, name, diff)
			}
			checkRecent(t, "CreatedAt", got.CreatedAt, before, after)
			checkRecent(t, "UpdatedAt", got.UpdatedAt, before, after)
		})
	}
}

func testCredentialReplace(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)
	mustPutCredential(t, s, newCredential(acct, "token"))
	orig := mustGetCredential(t, s, acct, "token")
	time.Sleep(2 * time.Millisecond) // so that UpdatedAt moves at millisecond precision

	repl := &store.Credential{Scope: acct, Name: "token", Sealed: []byte("rotated"), CreatedAt: base}
	before := time.Now()
	mustPutCredential(t, s, repl)
	after := time.Now()
	got := mustGetCredential(t, s, acct, "token")
	if diff := cmp.Diff(repl, got, catalogCmp, ignoreCredentialStamps); diff != "" {
		t.Errorf("GetCredential(%q, %q) after replace (-want +got):\n%s", acct, "token", diff)
	}
	if !got.CreatedAt.Equal(orig.CreatedAt) {
		t.Errorf("CreatedAt after replace = %v, want it kept at %v", got.CreatedAt, orig.CreatedAt)
	}
	checkRecent(t, "UpdatedAt", got.UpdatedAt, before, after)
	if got.UpdatedAt.Before(orig.UpdatedAt) {
		t.Errorf("UpdatedAt after replace = %v, before the first put's %v", got.UpdatedAt, orig.UpdatedAt)
	}

	// A credential deleted and put again is new.
	if err := s.DeleteCredential(t.Context(), acct, "token"); err != nil {
		t.Fatalf("DeleteCredential(%q, %q) = %v, want nil", acct, "token", err)
	}
	before = time.Now()
	mustPutCredential(t, s, newCredential(acct, "token"))
	after = time.Now()
	checkRecent(t, "CreatedAt after deleting and putting again", mustGetCredential(t, s, acct, "token").CreatedAt, before, after)
}

func testCredentialNotRetained(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)
	c := newCredential(acct, "aliasing")
	want := newCredential(acct, "aliasing")
	mustPutCredential(t, s, c)
	c.Sealed[0] = 'X'
	got := mustGetCredential(t, s, acct, "aliasing")
	if diff := cmp.Diff(want, got, catalogCmp, ignoreCredentialStamps); diff != "" {
		t.Errorf("GetCredential(%q, %q) after changing the put credential (-want +got):\n%s", acct, "aliasing", diff)
	}
	got.Sealed[0] = 'Y'
	if diff := cmp.Diff(want, mustGetCredential(t, s, acct, "aliasing"), catalogCmp, ignoreCredentialStamps); diff != "" {
		t.Errorf("GetCredential(%q, %q) after changing a returned credential (-want +got):\n%s", acct, "aliasing", diff)
	}
}

func testCredentialNotFound(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)
	ctx := t.Context()
	mustPutCredential(t, s, newCredential(acct, "token"))
	orig := mustGetCredential(t, s, acct, "token")

	getErr := func(sc store.Scope, name string) error {
		_, err := s.GetCredential(ctx, sc, name)
		return err
	}
	tests := []struct {
		call string
		err  error
	}{
		// No fallback to the parent scope.
		{call("GetCredential", org, "token"), getErr(org, "token")},
		{call("GetCredential", proj, "token"), getErr(proj, "token")},
		{call("GetCredential", other, "token"), getErr(other, "token")},
		{call("GetCredential", acct, "toke"), getErr(acct, "toke")},
		{call("GetCredential", acct, "TOKEN"), getErr(acct, "TOKEN")},
		{call("DeleteCredential", org, "token"), s.DeleteCredential(ctx, org, "token")},
		{call("DeleteCredential", acct, "missing"), s.DeleteCredential(ctx, acct, "missing")},
	}
	for _, tt := range tests {
		checkErr(t, tt.call, tt.err, store.ErrNotFound)
	}
	if diff := cmp.Diff(orig, mustGetCredential(t, s, acct, "token"), catalogCmp); diff != "" {
		t.Errorf("GetCredential(%q, %q) after failed calls changed (-want +got):\n%s", acct, "token", diff)
	}

	if err := s.DeleteCredential(ctx, acct, "token"); err != nil {
		t.Fatalf("DeleteCredential(%q, %q) = %v, want nil", acct, "token", err)
	}
	checkErr(t, call("GetCredential", acct, "token")+" after delete", getErr(acct, "token"), store.ErrNotFound)
	checkErr(t, call("DeleteCredential", acct, "token")+" again", s.DeleteCredential(ctx, acct, "token"), store.ErrNotFound)
}

func testCredentialList(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)
	// Every scope of scopeFixture gets the same names, inserted out of
	// order; each lists exactly its own, by name, without values.
	names := []string{"zeta", "Alpha", "beta_2", "beta", "_under", "beta_10", "bx"}
	sorted := []string{"Alpha", "_under", "beta", "beta_10", "beta_2", "bx", "zeta"}
	for _, sc := range scopeFixture {
		for _, name := range names {
			mustPutCredential(t, s, newCredential(sc, name))
		}
	}
	for _, sc := range scopeFixture {
		var want []*store.Credential
		for _, name := range sorted {
			c := mustGetCredential(t, s, sc, name) // with its timestamps
			c.Sealed = nil
			want = append(want, c)
		}
		got := mustListCredentials(t, s, sc)
		if diff := cmp.Diff(want, got, catalogCmp); diff != "" {
			t.Errorf("ListCredentials(%q) (-want +got):\n%s", sc, diff)
		}
		for _, c := range got {
			if len(c.Sealed) != 0 {
				t.Errorf("ListCredentials(%q): %q has Sealed set, want it empty", sc, c.Name)
			}
		}
	}
	for _, sc := range []store.Scope{other, {Account: "a", Org: "c"}, {Account: "a", Org: "b", Project: "e"}} {
		if got := mustListCredentials(t, s, sc); len(got) != 0 {
			t.Errorf("ListCredentials(%q) = %d credentials, want none", sc, len(got))
		}
	}
}
