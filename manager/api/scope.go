package api

import (
	"context"

	"github.com/smdelegate/smdelegate/manager/identity"
	"github.com/smdelegate/smdelegate/manager/scopes"
	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// How an operator token's scope confines the API (scope.go has the rule):
//
//   - A request that names no scope gets the token's scope (the default
//     account for an unscoped token).
//   - What lies outside the token's scope (connectors, credentials, tasks,
//     delegates) is not found, exactly as if it did not exist, so a
//     scoped token cannot learn what other scopes hold. Connector lookups
//     fall back upward only as far as the token's scope.
//   - Creating something outside the scope (a connector, a credential, a
//     ping of another scope's delegates) is PermissionDenied, naming the
//     rule: refusing it reveals nothing about what exists there.

// tokenScope is the scope of the request's token; zero: unrestricted.
func tokenScope(ctx context.Context) store.Scope {
	return identity.From(ctx).Scope
}

// requestScope is the scope a request works in: the one it names, else
// the token's, else the default account.
func requestScope(ctx context.Context, s *delegatev1.Scope) *delegatev1.Scope {
	if !scopes.FromProto(s).IsZero() {
		return s
	}
	if tok := tokenScope(ctx); !tok.IsZero() {
		return scopes.ToProto(tok)
	}
	return &delegatev1.Scope{Account: DefaultAccount}
}

// canSee reports whether the request's token may see what lives in s.
func canSee(ctx context.Context, s *delegatev1.Scope) bool {
	return scopes.Visible(tokenScope(ctx), scopes.FromProto(s))
}
