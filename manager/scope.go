package manager

import (
	"strconv"
	"strings"

	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// Scopes confine tokens. A delegate token's scope (never what the agent
// declares) decides which tasks its delegates may run; an operator
// token's scope decides what its holder sees and uses. The zero
// store.Scope is "no scope": an unscoped token is unrestricted, and a
// task without a scope (a ping from an unscoped operator) may run on any
// delegate. These four functions are the whole rule; everything else
// calls them.

// serves reports whether a delegate of scope dg may run a task of scope
// t: an unscoped delegate runs every task, a task without a scope may run
// on any delegate, and otherwise dg must contain t (an account delegate
// runs its projects' tasks; a project delegate only its project's).
func serves(dg, t store.Scope) bool {
	return dg.IsZero() || t.IsZero() || dg.Contains(t)
}

// visible reports whether an operator token of scope op may see or use
// something of scope s: an unscoped token everything, a scoped one only
// what lies at its scope or below (never what has no scope).
func visible(op, s store.Scope) bool {
	return op.IsZero() || op.Contains(s)
}

// overlaps reports whether one of a and b contains the other (or either
// is unscoped): the delegates an operator sees, and the delegates a
// NO_ELIGIBLE_DELEGATE message names, are those overlapping its scope.
func overlaps(a, b store.Scope) bool {
	return a.IsZero() || b.IsZero() || a.Contains(b) || b.Contains(a)
}

// matchKey keys the queues and pools: one per scope and selector set.
// Each part is length-prefixed, so two different selector lists never
// share a key whatever characters they hold (["a\x00b"] and ["a", "b"]
// once did): the key does not depend on the tag rule being enforced.
func matchKey(scope store.Scope, selectors []string) string {
	var b strings.Builder
	part := func(s string) {
		b.WriteString(strconv.Itoa(len(s)))
		b.WriteByte(':')
		b.WriteString(s)
	}
	part(scope.String())
	for _, s := range selectors {
		part(s)
	}
	return b.String()
}

// scopeProto is s for the API, nil for no scope (omitted in JSON).
func scopeProto(s store.Scope) *delegatev1.Scope {
	if s.IsZero() {
		return nil
	}
	return protoScope(s)
}

// scopeText is s for messages: "account/org/project", or "any scope".
func scopeText(s store.Scope) string {
	if s.IsZero() {
		return "any scope"
	}
	return s.String()
}
