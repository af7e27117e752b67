package scopes

import (
	"testing"

	"github.com/smdelegate/smdelegate/manager/store"
)

func TestScopeRules(t *testing.T) {
	t.Parallel()
	var (
		none  = store.Scope{}
		a     = store.Scope{Account: "a"}
		ao    = store.Scope{Account: "a", Org: "o"}
		aop   = store.Scope{Account: "a", Org: "o", Project: "p"}
		aoq   = store.Scope{Account: "a", Org: "o", Project: "q"}
		ax    = store.Scope{Account: "a", Org: "x"}
		ab    = store.Scope{Account: "ab"}
		b     = store.Scope{Account: "b"}
		bop   = store.Scope{Account: "b", Org: "o", Project: "p"}
		tests = []struct {
			x, y                     store.Scope
			serves, visible, overlap bool // Serves(x, y), Visible(x, y), Overlaps(x, y)
		}{
			{none, none, true, true, true},
			{none, aop, true, true, true},
			{aop, none, true, false, true}, // a task without a scope runs anywhere; a scoped token sees nothing unscoped
			{a, a, true, true, true},
			{a, ao, true, true, true},
			{a, aop, true, true, true},
			{ao, aop, true, true, true},
			{aop, aop, true, true, true},
			{aop, ao, false, false, true},
			{aop, a, false, false, true},
			{aop, aoq, false, false, false},
			{ao, ax, false, false, false},
			{a, ab, false, false, false}, // not a prefix match
			{ab, a, false, false, false},
			{a, b, false, false, false},
			{a, bop, false, false, false},
			{bop, aop, false, false, false},
		}
	)
	for _, tt := range tests {
		if got := Serves(tt.x, tt.y); got != tt.serves {
			t.Errorf("Serves(%q, %q) = %v, want %v", tt.x, tt.y, got, tt.serves)
		}
		if got := Visible(tt.x, tt.y); got != tt.visible {
			t.Errorf("Visible(%q, %q) = %v, want %v", tt.x, tt.y, got, tt.visible)
		}
		if got := Overlaps(tt.x, tt.y); got != tt.overlap {
			t.Errorf("Overlaps(%q, %q) = %v, want %v", tt.x, tt.y, got, tt.overlap)
		}
		if got := Overlaps(tt.y, tt.x); got != tt.overlap {
			t.Errorf("Overlaps(%q, %q) = %v, want %v (symmetric)", tt.y, tt.x, got, tt.overlap)
		}
	}
}

// TestResumeNeedsAServingScope: a task's lease is kept on a reconnect or
// renewed by a heartbeat only for a delegate serving the task's scope. A
// delegate of another scope that connects under the holder's name (free
// once the holder disconnected) and names the lease is told to cancel,
// and the task stays with no delegate until its lease expires.
