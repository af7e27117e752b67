package manager

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/smdelegate/smdelegate/manager/connector"
	"github.com/smdelegate/smdelegate/manager/identity"
	"github.com/smdelegate/smdelegate/manager/scopes"
)

type hashedToken struct {
	sum [32]byte
	id  identity.Identity
}

// authenticator checks bearer tokens against the configured SHA-256 hashes.
type authenticator struct {
	tokens []hashedToken
}

func newAuthenticator(c AuthConfig) *authenticator {
	a := &authenticator{}
	add := func(kind identity.Kind, ts []TokenConfig) {
		for _, t := range ts {
			var h hashedToken
			b, _ := hex.DecodeString(t.SHA256) // checked by Validate
			copy(h.sum[:], b)
			h.id = identity.Identity{Kind: kind, Name: t.Name, AllowedTags: t.AllowedTags}
			if t.Scope != "" {
				sc, _ := connector.ParseScope(t.Scope) // checked by Validate
				h.id.Scope = scopes.FromProto(sc)
			}
			a.tokens = append(a.tokens, h)
		}
	}
	add(identity.Delegate, c.DelegateTokens)
	add(identity.Operator, c.OperatorTokens)
	return a
}

// HashToken returns the hex SHA-256 of a token, as the config stores it.
func HashToken(token string) string {
	s := sha256.Sum256([]byte(token))
	return hex.EncodeToString(s[:])
}

// check returns the identity for the request's bearer token. Messages name
// the problem, never the token.
func (a *authenticator) check(ctx context.Context, want identity.Kind) (identity.Identity, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return identity.Identity{}, status.Error(codes.Unauthenticated, "no token: send an 'authorization: Bearer <token>' header")
	}
	tok, ok := strings.CutPrefix(vals[0], "Bearer ")
	if !ok || tok == "" {
		return identity.Identity{}, status.Error(codes.Unauthenticated, "malformed authorization header: want 'Bearer <token>'")
	}
	sum := sha256.Sum256([]byte(tok))
	var found *identity.Identity
	for i := range a.tokens {
		if subtle.ConstantTimeCompare(sum[:], a.tokens[i].sum[:]) == 1 {
			found = &a.tokens[i].id
		}
	}
	switch {
	case found == nil:
		return identity.Identity{}, status.Error(codes.Unauthenticated, "token not recognized by the manager")
	case found.Kind != want && want == identity.Delegate:
		return identity.Identity{}, status.Error(codes.PermissionDenied, "an operator token cannot connect as a delegate; use a delegate token")
	case found.Kind != want:
		return identity.Identity{}, status.Error(codes.PermissionDenied, "a delegate token cannot call the operator API; use an operator token")
	}
	return *found, nil
}

// kindFor says which token a method needs; 0 means none (health checks).
func kindFor(method string) identity.Kind {
	switch {
	case strings.HasPrefix(method, "/delegate.v1.DelegateService/"):
		return identity.Delegate
	case strings.HasPrefix(method, "/delegate.v1.ManagerService/"):
		return identity.Operator
	}
	return 0
}

func (a *authenticator) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	k := kindFor(info.FullMethod)
	if k == 0 {
		return h(ctx, req)
	}
	id, err := a.check(ctx, k)
	if err != nil {
		return nil, err
	}
	return h(identity.With(ctx, id), req)
}

type wrappedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (w wrappedStream) Context() context.Context { return w.ctx }

func (a *authenticator) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	k := kindFor(info.FullMethod)
	if k == 0 {
		return h(srv, ss)
	}
	id, err := a.check(ss.Context(), k)
	if err != nil {
		return err
	}
	return h(srv, wrappedStream{ss, identity.With(ss.Context(), id)})
}
