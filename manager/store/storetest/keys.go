package storetest

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/smdelegate/smdelegate/manager/store"
)

func testSigningKeys(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)
	ctx := t.Context()

	if got := mustListSigningKeys(t, s); len(got) != 0 {
		t.Errorf("ListSigningKeys() of an empty store = %d keys, want none", len(got))
	}

	// Inserted out of order, with ids that sort against CreatedAt; the
	// tie on CreatedAt is broken by ID.
	k1 := newSigningKey("k-zulu", base)
	k2 := newSigningKey("k-yankee", base.Add(time.Second))
	k3 := newSigningKey("k-xray", base.Add(2*time.Second))
	tieA := newSigningKey("k-tie-a", base.Add(3*time.Second))
	tieB := newSigningKey("k-tie-b", base.Add(3*time.Second))
	for _, k := range []*store.SigningKey{k3, tieB, k1, tieA, k2} {
		mustPutSigningKey(t, s, k)
	}
	want := []*store.SigningKey{k1, k2, k3, tieA, tieB}
	if diff := cmp.Diff(want, mustListSigningKeys(t, s), catalogCmp); diff != "" {
		t.Fatalf("ListSigningKeys() (-want +got):\n%s", diff)
	}

	// Retiring the oldest key replaces it without moving it, whatever
	// CreatedAt the replacement says.
	retired := newSigningKey(k1.ID, base.Add(time.Hour))
	retired.RetiredAt = base.Add(10 * time.Second)
	retired.Expires = base.Add(10*time.Second + time.Hour)
	mustPutSigningKey(t, s, retired)
	retiredWant := *retired
	retiredWant.CreatedAt = k1.CreatedAt
	want[0] = &retiredWant
	if diff := cmp.Diff(want, mustListSigningKeys(t, s), catalogCmp); diff != "" {
		t.Errorf("ListSigningKeys() after retiring %q (-want +got):\n%s", k1.ID, diff)
	}

	// A zero CreatedAt is now, so a key created now sorts last.
	fresh := newSigningKey("k-alpha", time.Time{})
	before := time.Now()
	mustPutSigningKey(t, s, fresh)
	after := time.Now()
	got := mustListSigningKeys(t, s)
	if len(got) != len(want)+1 || got[len(got)-1].ID != fresh.ID {
		t.Fatalf("ListSigningKeys() = %q, want %q last", signingKeyIDs(got), fresh.ID)
	}
	checkRecent(t, "CreatedAt of a key put with none", got[len(got)-1].CreatedAt, before, after)

	// Delete.
	if err := s.DeleteSigningKey(ctx, k2.ID); err != nil {
		t.Fatalf("DeleteSigningKey(%q) = %v, want nil", k2.ID, err)
	}
	checkErr(t, call("DeleteSigningKey", k2.ID)+" again", s.DeleteSigningKey(ctx, k2.ID), store.ErrNotFound)
	checkErr(t, call("DeleteSigningKey", "missing"), s.DeleteSigningKey(ctx, "missing"), store.ErrNotFound)
	wantIDs := []string{k1.ID, k3.ID, tieA.ID, tieB.ID, fresh.ID}
	if diff := cmp.Diff(wantIDs, signingKeyIDs(mustListSigningKeys(t, s))); diff != "" {
		t.Errorf("ListSigningKeys() after delete (-want +got):\n%s", diff)
	}
}

func testSigningKeyNotRetained(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)
	k := newSigningKey("aliasing", base)
	want := newSigningKey("aliasing", base)
	mustPutSigningKey(t, s, k)
	k.Private[0] = 'X'
	k.Public[0] = 'X'
	got := mustListSigningKeys(t, s)
	if diff := cmp.Diff([]*store.SigningKey{want}, got, catalogCmp); diff != "" {
		t.Errorf("ListSigningKeys() after changing the put key (-want +got):\n%s", diff)
	}
	got[0].Private[0] = 'Y'
	if diff := cmp.Diff([]*store.SigningKey{want}, mustListSigningKeys(t, s), catalogCmp); diff != "" {
		t.Errorf("ListSigningKeys() after changing a returned key (-want +got):\n%s", diff)
	}
}

func signingKeyIDs(keys []*store.SigningKey) []string {
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, k.ID)
	}
	return out
}

func testDelegateTags(t *testing.T, open OpenFunc) {
	s := mustOpen(t, open)
	if got := mustDelegateTags(t, s); len(got) != 0 {
		t.Errorf("DelegateTags() of an empty store = %q, want none", got)
	}

	steps := []struct {
		name     string
		delegate string
		tags     []string
		want     map[string][]string
	}{
		{"set", "d1", []string{"prod", "eu-west-1"}, map[string][]string{"d1": {"prod", "eu-west-1"}}},
		{"set another", "d2", []string{"gpu"}, map[string][]string{"d1": {"prod", "eu-west-1"}, "d2": {"gpu"}}},
		{"replace", "d1", []string{"staging"}, map[string][]string{"d1": {"staging"}, "d2": {"gpu"}}},
		{"remove with empty", "d2", []string{}, map[string][]string{"d1": {"staging"}}},
		{"remove a missing entry", "d3", nil, map[string][]string{"d1": {"staging"}}},
		{"set again", "d2", []string{"a", "b", "c"}, map[string][]string{"d1": {"staging"}, "d2": {"a", "b", "c"}}},
		{"remove with nil", "d1", nil, map[string][]string{"d2": {"a", "b", "c"}}},
	}
	for _, st := range steps {
		mustSetDelegateTags(t, s, st.delegate, st.tags)
		if diff := cmp.Diff(st.want, mustDelegateTags(t, s), catalogCmp, sortedTags); diff != "" {
			t.Errorf("%s: DelegateTags() after SetDelegateTags(%q, %q) (-want +got):\n%s", st.name, st.delegate, st.tags, diff)
		}
	}

	// Not retained, either way.
	tags := []string{"x", "y"}
	mustSetDelegateTags(t, s, "d4", tags)
	tags[0] = "changed"
	got := mustDelegateTags(t, s)
	got["d4"][1] = "changed"
	got["d5"] = []string{"invented"}
	want := map[string][]string{"d2": {"a", "b", "c"}, "d4": {"x", "y"}}
	if diff := cmp.Diff(want, mustDelegateTags(t, s), catalogCmp, sortedTags); diff != "" {
		t.Errorf("DelegateTags() after changing the set and returned tags (-want +got):\n%s", diff)
	}
}
