package storetest

import (
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/smdelegate/smdelegate/manager/store"
)

// The one-default-per-scope rule of connectors, through every sequence of
// creates, updates and deletes that can break it.

// connOp is one step of a default-slot scenario.
type connOp struct {
	op   string // "create", "update" or "delete"
	conn *store.Connector
	want error
}

func create(sc store.Scope, id string, def bool, want error) connOp {
	return connOp{"create", newConnector(sc, id, def), want}
}

func update(sc store.Scope, id string, def bool, want error) connOp {
	c := newConnector(sc, id, def)
	c.Data = append(c.Data, " (updated)"...)
	return connOp{"update", c, want}
}

func remove(sc store.Scope, id string, want error) connOp {
	return connOp{"delete", &store.Connector{Scope: sc, ID: id}, want}
}

// testConnectorDefault checks the one-default-per-scope rule through
// sequences of calls. After every failed call the scope is as it was; at the
// end each scope holds exactly the connectors in conns and its default is
// defaults[scope] ("" for none).
func testConnectorDefault(t *testing.T, open OpenFunc) {
	tests := []struct {
		name     string
		ops      []connOp
		conns    map[store.Scope][]string
		defaults map[store.Scope]string
	}{
		{
			name: "second default in a scope is refused",
			ops: []connOp{
				create(acct, "a", true, nil),
				create(acct, "b", true, store.ErrDefaultTaken),
			},
			conns:    map[store.Scope][]string{acct: {"a"}},
			defaults: map[store.Scope]string{acct: "a"},
		},
		{
			name: "non-default beside the default",
			ops: []connOp{
				create(acct, "b", false, nil),
				create(acct, "a", true, nil),
				create(acct, "c", false, nil),
			},
			conns:    map[store.Scope][]string{acct: {"a", "b", "c"}},
			defaults: map[store.Scope]string{acct: "a"},
		},
		{
			name: "one default in each scope",
			ops: []connOp{
				create(acct, "a", true, nil),
				create(org, "a", true, nil),
				create(proj, "a", true, nil),
				create(other, "a", true, nil),
				create(org, "b", true, store.ErrDefaultTaken),
			},
			conns:    map[store.Scope][]string{acct: {"a"}, org: {"a"}, proj: {"a"}, other: {"a"}},
			defaults: map[store.Scope]string{acct: "a", org: "a", proj: "a", other: "a"},
		},
		{
			name: "the default stays default on update",
			ops: []connOp{
				create(acct, "a", true, nil),
				update(acct, "a", true, nil),
				update(acct, "a", true, nil),
			},
			conns:    map[store.Scope][]string{acct: {"a"}},
			defaults: map[store.Scope]string{acct: "a"},
		},
		{
			name: "update to default when taken",
			ops: []connOp{
				create(acct, "a", true, nil),
				create(acct, "b", false, nil),
				update(acct, "b", true, store.ErrDefaultTaken),
			},
			conns:    map[store.Scope][]string{acct: {"a", "b"}},
			defaults: map[store.Scope]string{acct: "a"},
		},
		{
			name: "update clearing default frees the slot",
			ops: []connOp{
				create(acct, "a", true, nil),
				update(acct, "a", false, nil),
				create(acct, "b", true, nil),
				update(acct, "a", true, store.ErrDefaultTaken),
			},
			conns:    map[store.Scope][]string{acct: {"a", "b"}},
			defaults: map[store.Scope]string{acct: "b"},
		},
		{
			name: "update clearing default leaves none",
			ops: []connOp{
				create(acct, "a", true, nil),
				update(acct, "a", false, nil),
			},
			conns:    map[store.Scope][]string{acct: {"a"}},
			defaults: map[store.Scope]string{acct: ""},
		},
		{
			name: "update to default when free",
			ops: []connOp{
				create(acct, "a", false, nil),
				create(acct, "b", false, nil),
				update(acct, "b", true, nil),
			},
			conns:    map[store.Scope][]string{acct: {"a", "b"}},
			defaults: map[store.Scope]string{acct: "b"},
		},
		{
			name: "moving the default",
			ops: []connOp{
				create(acct, "a", true, nil),
				create(acct, "b", false, nil),
				update(acct, "a", false, nil),
				update(acct, "b", true, nil),
			},
			conns:    map[store.Scope][]string{acct: {"a", "b"}},
			defaults: map[store.Scope]string{acct: "b"},
		},
		{
			name: "deleting the default frees the slot",
			ops: []connOp{
				create(acct, "a", true, nil),
				remove(acct, "a", nil),
				create(acct, "b", true, nil),
			},
			conns:    map[store.Scope][]string{acct: {"b"}},
			defaults: map[store.Scope]string{acct: "b"},
		},
		{
			name: "deleting the default leaves none",
			ops: []connOp{
				create(acct, "a", true, nil),
				create(acct, "b", false, nil),
				remove(acct, "a", nil),
			},
			conns:    map[store.Scope][]string{acct: {"b"}},
			defaults: map[store.Scope]string{acct: ""},
		},
		{
			name: "deleting another connector keeps the default",
			ops: []connOp{
				create(acct, "a", true, nil),
				create(acct, "b", false, nil),
				remove(acct, "b", nil),
			},
			conns:    map[store.Scope][]string{acct: {"a"}},
			defaults: map[store.Scope]string{acct: "a"},
		},
		{
			name: "recreating the deleted default",
			ops: []connOp{
				create(acct, "a", true, nil),
				remove(acct, "a", nil),
				create(acct, "a", true, nil),
			},
			conns:    map[store.Scope][]string{acct: {"a"}},
			defaults: map[store.Scope]string{acct: "a"},
		},
		{
			name: "a default in another scope does not count",
			ops: []connOp{
				create(org, "a", true, nil),
				create(acct, "b", false, nil),
				update(acct, "b", true, nil),
				remove(org, "a", nil),
			},
			conns:    map[store.Scope][]string{acct: {"b"}, org: nil},
			defaults: map[store.Scope]string{acct: "b", org: ""},
		},
		{
			name: "failed update of a missing connector takes no slot",
			ops: []connOp{
				update(acct, "a", true, store.ErrNotFound),
				create(acct, "b", true, nil),
			},
			conns:    map[store.Scope][]string{acct: {"b"}},
			defaults: map[store.Scope]string{acct: "b"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := mustOpen(t, open)
			ctx := t.Context()
			for i, op := range tt.ops {
				sc, id := op.conn.Scope, op.conn.ID
				before := mustListConnectors(t, s, sc)
				var err error
				switch op.op {
				case "create":
					err = s.CreateConnector(ctx, op.conn)
				case "update":
					err = s.UpdateConnector(ctx, op.conn)
				case "delete":
					err = s.DeleteConnector(ctx, sc, id)
				}
				checkErr(t, fmt.Sprintf("step %d: %s", i, call(op.op+"Connector", sc, id, op.conn.Default)), err, op.want)
				if op.want != nil {
					if diff := cmp.Diff(before, mustListConnectors(t, s, sc), catalogCmp); diff != "" {
						t.Errorf("step %d: ListConnectors(%q) after a failed %s changed (-want +got):\n%s", i, sc, op.op, diff)
					}
				}
			}
			for sc, want := range tt.conns {
				if diff := cmp.Diff(want, connectorIDs(mustListConnectors(t, s, sc)), catalogCmp); diff != "" {
					t.Errorf("ListConnectors(%q) ids (-want +got):\n%s", sc, diff)
				}
			}
			for sc, want := range tt.defaults {
				checkDefault(t, s, sc, want)
			}
		})
	}
}

// checkDefault checks that the default connector of sc is want ("" for
// none), both as DefaultConnector reports it and as the Default flags of
// ListConnectors say.
func checkDefault(t *testing.T, s store.Store, sc store.Scope, want string) {
	t.Helper()
	got, err := s.DefaultConnector(t.Context(), sc)
	switch {
	case want == "" && !errors.Is(err, store.ErrNotFound):
		t.Errorf("DefaultConnector(%q) = %v, %v, want %v", sc, got, err, store.ErrNotFound)
	case want == "":
	case err != nil:
		t.Errorf("DefaultConnector(%q) = %v, want %q", sc, err, want)
	default:
		if diff := cmp.Diff(mustGetConnector(t, s, sc, want), got, catalogCmp); diff != "" {
			t.Errorf("DefaultConnector(%q) mismatch with GetConnector(%q, %q) (-want +got):\n%s", sc, sc, want, diff)
		}
	}
	var flagged []string
	for _, c := range mustListConnectors(t, s, sc) {
		if c.Default {
			flagged = append(flagged, c.ID)
		}
	}
	wantFlagged := []string{want}
	if want == "" {
		wantFlagged = nil
	}
	if diff := cmp.Diff(wantFlagged, flagged, catalogCmp); diff != "" {
		t.Errorf("ListConnectors(%q) connectors with Default set (-want +got):\n%s", sc, diff)
	}
}
