// Package identity is who presented a token, as a request's context
// carries it: set by the manager's token check (auth.go), read by the API,
// the limits and the dispatcher's registry.
package identity

import (
	"context"

	"github.com/smdelegate/smdelegate/manager/store"
)

// Kind separates delegate tokens from operator tokens: one cannot be used
// as the other.
type Kind int

const (
	// Delegate is an agent's token (DelegateService).
	Delegate Kind = iota + 1
	// Operator is an operator's token (ManagerService).
	Operator
)

// Identity is who presented a token.
type Identity struct {
	Kind        Kind
	Name        string
	AllowedTags []string
	// Scope confines the token (TokenConfig.Scope); zero: unrestricted.
	Scope store.Scope
}

type key struct{}

// With returns ctx carrying id.
func With(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, key{}, id)
}

// From returns the identity ctx carries, the zero Identity if none.
func From(ctx context.Context) Identity {
	id, _ := ctx.Value(key{}).(Identity)
	return id
}
