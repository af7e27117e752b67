// Package scopes is the rule by which scopes confine tokens, delegates and
// tasks, and the conversions of a scope between the store and the API.
package scopes

import (
	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// Scopes confine tokens. A delegate token's scope (never what the agent
// declares) decides which tasks its delegates may run; an operator
// token's scope decides what its holder sees and uses. The zero
// store.Scope is "no scope": an unscoped token is unrestricted, and a
// task without a scope (a ping from an unscoped operator) may run on any
// delegate. Serves, Visible and Overlaps are the whole rule; everything else
// calls them.

// Serves reports whether a delegate of scope dg may run a task of scope
// t: an unscoped delegate runs every task, a task without a scope may run
// on any delegate, and otherwise dg must contain t (an account delegate
// runs its projects' tasks; a project delegate only its project's).
func Serves(dg, t store.Scope) bool {
	return dg.IsZero() || t.IsZero() || dg.Contains(t)
}

// Visible reports whether an operator token of scope op may see or use
// something of scope s: an unscoped token everything, a scoped one only
// what lies at its scope or below (never what has no scope).
func Visible(op, s store.Scope) bool {
	return op.IsZero() || op.Contains(s)
}

// Overlaps reports whether one of a and b contains the other (or either
// is unscoped): the delegates an operator sees, and the delegates a
// NO_ELIGIBLE_DELEGATE message names, are those overlapping its scope.
func Overlaps(a, b store.Scope) bool {
	return a.IsZero() || b.IsZero() || a.Contains(b) || b.Contains(a)
}

// Proto is s for the API, nil for no scope (omitted in JSON).
func Proto(s store.Scope) *delegatev1.Scope {
	if s.IsZero() {
		return nil
	}
	return ToProto(s)
}

// FromProto is the scope the API names (the zero Scope for nil).
func FromProto(s *delegatev1.Scope) store.Scope {
	return store.Scope{Account: s.GetAccount(), Org: s.GetOrg(), Project: s.GetProject()}
}

// ToProto is s for the API, always a message (an empty one for no scope).
func ToProto(s store.Scope) *delegatev1.Scope {
	return &delegatev1.Scope{Account: s.Account, Org: s.Org, Project: s.Project}
}

// Text is s for messages: "account/org/project", or "any scope".
func Text(s store.Scope) string {
	if s.IsZero() {
		return "any scope"
	}
	return s.String()
}
