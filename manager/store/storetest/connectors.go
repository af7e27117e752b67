package storetest

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/smdelegate/smdelegate/manager/store"
)

func testConnectorCreateGet(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)

	binary := make([]byte, 256)
	for i := range binary {
		binary[i] = byte(i)
	}
	tests := []struct {
		name string
		conn *store.Connector
	}{
		{"account", newConnector(acct, "aws_prod", false)},
		{"org default", newConnector(org, "aws_eng", true)},
		{"project", newConnector(proj, "aws_web", false)},
		{"binary data", &store.Connector{Scope: other, ID: "binary", Data: binary}},
		{"empty data", &store.Connector{Scope: other, ID: "empty"}},
		{"given timestamps are ignored", func() *store.Connector {
			c := newConnector(other, "stamped", false)
			c.CreatedAt = base
			c.UpdatedAt = base.Add(time.Hour)
			return c
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			before := time.Now()
			mustCreateConnector(t, s, tt.conn)
			after := time.Now()
			got := mustGetConnector(t, s, tt.conn.Scope, tt.conn.ID)
			if diff := cmp.Diff(tt.conn, got, catalogCmp, ignoreConnectorStamps); diff != "" {
				t.Errorf("GetConnector(%q, %q) mismatch (-want +got):\n%s", tt.conn.Scope, tt.conn.ID, diff)
			}
			checkRecent(t, "CreatedAt", got.CreatedAt, before, after)
			checkRecent(t, "UpdatedAt", got.UpdatedAt, before, after)
		})
	}
}

func testConnectorNotRetained(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)
	c := newConnector(acct, "aliasing", true)
	want := newConnector(acct, "aliasing", true)
	mustCreateConnector(t, s, c)
	c.Data[0] = 'X'
	c.Default = false

	got := mustGetConnector(t, s, acct, want.ID)
	if diff := cmp.Diff(want, got, catalogCmp, ignoreConnectorStamps); diff != "" {
		t.Errorf("GetConnector(%q, %q) after changing the created connector (-want +got):\n%s", acct, want.ID, diff)
	}
	got.Data[0] = 'Y'
	if diff := cmp.Diff(want, mustGetConnector(t, s, acct, want.ID), catalogCmp, ignoreConnectorStamps); diff != "" {
		t.Errorf("GetConnector(%q, %q) after changing a returned connector (-want +got):\n%s", acct, want.ID, diff)
	}

	upd := newConnector(acct, "aliasing", true)
	upd.Data = []byte("updated")
	if err := s.UpdateConnector(t.Context(), upd); err != nil {
		t.Fatalf("UpdateConnector(%q, %q) = %v, want nil", acct, upd.ID, err)
	}
	upd.Data[0] = 'Z'
	if got := mustGetConnector(t, s, acct, want.ID); string(got.Data) != "updated" {
		t.Errorf("GetConnector(%q, %q).Data = %q after changing the update's, want %q", acct, want.ID, got.Data, "updated")
	}
}

func testConnectorExists(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)
	tests := []struct {
		name string
		def  bool // of the duplicate; the original is the scope's default
	}{
		{"not default", false},
		// ErrExists is checked before the default slot.
		{"default", true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sc := store.Scope{Account: fmt.Sprintf("exists-%d", i)}
			mustCreateConnector(t, s, newConnector(sc, "aws", true))
			orig := mustGetConnector(t, s, sc, "aws")
			dup := &store.Connector{Scope: sc, ID: "aws", Default: tt.def, Data: []byte("duplicate")}
			checkErr(t, call("CreateConnector", sc, dup.ID), s.CreateConnector(t.Context(), dup), store.ErrExists)
			if diff := cmp.Diff(orig, mustGetConnector(t, s, sc, "aws"), catalogCmp); diff != "" {
				t.Errorf("GetConnector(%q, %q) after a failed create changed (-want +got):\n%s", sc, "aws", diff)
			}
		})
	}
}

func testConnectorNotFound(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)
	ctx := t.Context()
	mustCreateConnector(t, s, newConnector(acct, "aws", true))
	orig := mustGetConnector(t, s, acct, "aws")

	getErr := func(sc store.Scope, id string) error {
		_, err := s.GetConnector(ctx, sc, id)
		return err
	}
	defaultErr := func(sc store.Scope) error {
		_, err := s.DefaultConnector(ctx, sc)
		return err
	}
	tests := []struct {
		call string
		err  error
	}{
		// No fallback: callers walk Scope.Parent themselves.
		{call("GetConnector", org, "aws"), getErr(org, "aws")},
		{call("GetConnector", proj, "aws"), getErr(proj, "aws")},
		{call("GetConnector", other, "aws"), getErr(other, "aws")},
		{call("GetConnector", acct, "aw"), getErr(acct, "aw")},
		{call("GetConnector", acct, "aws_"), getErr(acct, "aws_")},
		{call("GetConnector", acct, "AWS"), getErr(acct, "AWS")},
		{call("DefaultConnector", org), defaultErr(org)},
		{call("DefaultConnector", other), defaultErr(other)},
		{call("UpdateConnector", org, "aws"), s.UpdateConnector(ctx, newConnector(org, "aws", true))},
		{call("UpdateConnector", acct, "missing"), s.UpdateConnector(ctx, newConnector(acct, "missing", false))},
		{call("DeleteConnector", org, "aws"), s.DeleteConnector(ctx, org, "aws")},
		{call("DeleteConnector", acct, "missing"), s.DeleteConnector(ctx, acct, "missing")},
	}
	for _, tt := range tests {
		checkErr(t, tt.call, tt.err, store.ErrNotFound)
	}
	// The failed updates created nothing and took no default slot.
	for sc, want := range map[store.Scope][]string{acct: {"aws"}, org: nil} {
		if diff := cmp.Diff(want, connectorIDs(mustListConnectors(t, s, sc)), catalogCmp); diff != "" {
			t.Errorf("ListConnectors(%q) ids after failed calls (-want +got):\n%s", sc, diff)
		}
	}
	checkErr(t, call("DefaultConnector", org), defaultErr(org), store.ErrNotFound)
	if diff := cmp.Diff(orig, mustGetConnector(t, s, acct, "aws"), catalogCmp); diff != "" {
		t.Errorf("GetConnector(%q, %q) after failed calls changed (-want +got):\n%s", acct, "aws", diff)
	}
}

func testConnectorUpdate(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)
	mustCreateConnector(t, s, newConnector(acct, "aws", false))
	orig := mustGetConnector(t, s, acct, "aws")
	time.Sleep(2 * time.Millisecond) // so that UpdatedAt moves at millisecond precision

	upd := &store.Connector{Scope: acct, ID: "aws", Default: true, Data: []byte("version 2"),
		CreatedAt: base, UpdatedAt: base} // both ignored
	before := time.Now()
	if err := s.UpdateConnector(t.Context(), upd); err != nil {
		t.Fatalf("UpdateConnector(%q, %q) = %v, want nil", acct, upd.ID, err)
	}
	after := time.Now()
	got := mustGetConnector(t, s, acct, "aws")
	if diff := cmp.Diff(upd, got, catalogCmp, ignoreConnectorStamps); diff != "" {
		t.Errorf("GetConnector(%q, %q) after update (-want +got):\n%s", acct, "aws", diff)
	}
	if !got.CreatedAt.Equal(orig.CreatedAt) {
		t.Errorf("CreatedAt after update = %v, want it kept at %v", got.CreatedAt, orig.CreatedAt)
	}
	checkRecent(t, "UpdatedAt", got.UpdatedAt, before, after)
	if got.UpdatedAt.Before(orig.UpdatedAt) {
		t.Errorf("UpdatedAt after update = %v, before the create's %v", got.UpdatedAt, orig.UpdatedAt)
	}
}

// scopeFixture are scopes whose parts would collide in a key that simply
// concatenated them, and scopes nested in each other.
var scopeFixture = []store.Scope{
	{Account: "a"},
	{Account: "ab"},
	{Account: "b"},
	{Account: "a", Org: "b"},
	{Account: "a", Org: "bc"},
	{Account: "ab", Org: "c"},
	{Account: "a", Org: "b", Project: "c"},
	{Account: "a", Org: "b", Project: "cd"},
	{Account: "a", Org: "bc", Project: "d"},
}

// testConnectorScopes puts connectors with the same ids in every scope of
// scopeFixture, plus ids that would collide with another scope's in a
// concatenated key, and checks that every scope sees exactly its own.
func testConnectorScopes(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)
	ctx := t.Context()
	want := make(map[store.Scope][]*store.Connector)
	for _, sc := range scopeFixture {
		for _, c := range []*store.Connector{
			// By ID, as ListConnectors returns them.
			newConnector(sc, "bx", false), // "a"+"bx" is "ab"+"x"
			newConnector(sc, "x", true),
			newConnector(sc, "y", false),
		} {
			mustCreateConnector(t, s, c)
			want[sc] = append(want[sc], c)
		}
	}
	check := func(when string) {
		t.Helper()
		for _, sc := range scopeFixture {
			if diff := cmp.Diff(want[sc], mustListConnectors(t, s, sc), catalogCmp, ignoreConnectorStamps); diff != "" {
				t.Errorf("%s: ListConnectors(%q) (-want +got):\n%s", when, sc, diff)
			}
			for _, c := range want[sc] {
				if diff := cmp.Diff(c, mustGetConnector(t, s, sc, c.ID), catalogCmp, ignoreConnectorStamps); diff != "" {
					t.Errorf("%s: GetConnector(%q, %q) (-want +got):\n%s", when, sc, c.ID, diff)
				}
			}
			wantDefault := ""
			for _, c := range want[sc] {
				if c.Default {
					wantDefault = c.ID
				}
			}
			checkDefault(t, s, sc, wantDefault)
		}
	}
	check("after creating")

	// Deleting and updating in one scope leaves the others alone.
	victim := store.Scope{Account: "a", Org: "b"}
	if err := s.DeleteConnector(ctx, victim, "x"); err != nil {
		t.Fatalf("DeleteConnector(%q, %q) = %v, want nil", victim, "x", err)
	}
	want[victim] = []*store.Connector{want[victim][0], want[victim][2]} // bx, y
	upd := newConnector(victim, "y", true)
	upd.Data = []byte("updated")
	if err := s.UpdateConnector(ctx, upd); err != nil {
		t.Fatalf("UpdateConnector(%q, %q) = %v, want nil", victim, "y", err)
	}
	want[victim][1] = upd
	check("after changing one scope")
}

func testConnectorList(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)
	// Inserted out of order; listed by ID, byte-wise.
	var want []*store.Connector
	for _, id := range []string{"zeta", "Alpha", "beta_2", "beta", "_under", "beta_10"} {
		c := newConnector(org, id, id == "beta")
		mustCreateConnector(t, s, c)
		mustCreateConnector(t, s, newConnector(acct, id, false))
		mustCreateConnector(t, s, newConnector(proj, id+"_p", false))
		want = append(want, c)
	}
	byID := []int{1, 4, 3, 5, 2, 0} // Alpha, _under, beta, beta_10, beta_2, zeta
	sorted := make([]*store.Connector, len(byID))
	for i, j := range byID {
		sorted[i] = want[j]
	}
	if diff := cmp.Diff(sorted, mustListConnectors(t, s, org), catalogCmp, ignoreConnectorStamps); diff != "" {
		t.Errorf("ListConnectors(%q) (-want +got):\n%s", org, diff)
	}
	for _, sc := range []store.Scope{other, {Account: "acme", Org: "other"}, {Account: "acme", Org: "eng", Project: "other"}} {
		if got := mustListConnectors(t, s, sc); len(got) != 0 {
			t.Errorf("ListConnectors(%q) = %d connectors %q, want none", sc, len(got), connectorIDs(got))
		}
	}
}

// testAllConnectors lists the connectors of every scope of scopeFixture,
// created out of order: by account, org, project and ID, each byte-wise
// (not by the length of the parts), and nothing else.
func testAllConnectors(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)
	if got, err := s.AllConnectors(t.Context()); err != nil || len(got) != 0 {
		t.Fatalf("AllConnectors() on an empty store = %q, %v; want none", connectorIDs(got), err)
	}
	var want []*store.Connector
	for _, sc := range scopeFixture {
		for _, id := range []string{"y", "bx", "B"} {
			want = append(want, newConnector(sc, id, id == "y"))
		}
	}
	for i := len(want) - 1; i >= 0; i-- {
		mustCreateConnector(t, s, want[i])
	}
	slices.SortFunc(want, func(a, b *store.Connector) int {
		return strings.Compare(strings.Join([]string{a.Scope.Account, a.Scope.Org, a.Scope.Project, a.ID}, "\x00"),
			strings.Join([]string{b.Scope.Account, b.Scope.Org, b.Scope.Project, b.ID}, "\x00"))
	})
	got, err := s.AllConnectors(t.Context())
	if err != nil {
		t.Fatalf("AllConnectors() = %v, want nil", err)
	}
	if diff := cmp.Diff(want, got, catalogCmp, ignoreConnectorStamps); diff != "" {
		t.Errorf("AllConnectors() (-want +got):\n%s", diff)
	}
}

func testConcurrentCreateConnector(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)
	ctx := t.Context()

	t.Run("same id", func(t *testing.T) {
		t.Parallel()
		sc := store.Scope{Account: "race-id"}
		data := func(i int) []byte { return fmt.Appendf(nil, "racer %d", i) }
		errs := race(racers, func(i int) error {
			return s.CreateConnector(ctx, &store.Connector{Scope: sc, ID: "same", Default: i%2 == 0, Data: data(i)})
		})
		if w := oneWinner(t, call("CreateConnector", sc, "same"), errs, store.ErrExists); w >= 0 {
			if got := mustGetConnector(t, s, sc, "same"); string(got.Data) != string(data(w)) {
				t.Errorf("GetConnector(%q, %q).Data = %q, want the winner's %q", sc, "same", got.Data, data(w))
			}
			if len(mustListConnectors(t, s, sc)) != 1 {
				t.Errorf("ListConnectors(%q) has more than the winner", sc)
			}
		}
	})
	t.Run("defaults in one scope", func(t *testing.T) {
		t.Parallel()
		sc := store.Scope{Account: "race-default"}
		errs := race(racers, func(i int) error {
			return s.CreateConnector(ctx, newConnector(sc, fmt.Sprintf("c%02d", i), true))
		})
		if w := oneWinner(t, fmt.Sprintf("CreateConnector(%q, default)", sc), errs, store.ErrDefaultTaken); w >= 0 {
			checkDefault(t, s, sc, fmt.Sprintf("c%02d", w))
			if got := mustListConnectors(t, s, sc); len(got) != 1 {
				t.Errorf("ListConnectors(%q) = %q, want only the winner", sc, connectorIDs(got))
			}
		}
	})
	t.Run("defaults in distinct scopes", func(t *testing.T) {
		t.Parallel()
		scope := func(i int) store.Scope { return store.Scope{Account: "race-scopes", Org: fmt.Sprintf("o%02d", i)} }
		errs := race(racers, func(i int) error {
			return s.CreateConnector(ctx, newConnector(scope(i), "aws", true))
		})
		for i, err := range errs {
			checkErr(t, call("CreateConnector", scope(i), "aws"), err, nil)
			checkDefault(t, s, scope(i), "aws")
		}
	})
}
