package resolve

import (
	"context"
	"errors"
	"fmt"

	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/manager/connector"
	"github.com/smdelegate/smdelegate/manager/identity"
	"github.com/smdelegate/smdelegate/manager/scopes"
	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// Builtin credential references are bound, not looked up. A connector's
// builtin:NAME (in access_key_id or secret_access_key) is bound when the
// connector is created or updated to one stored credential, by scope and
// name: the credential NAME of the connector's own scope or of the nearest
// scope above it that holds one, never above the scope of the operator
// token making the change (findCredential, the one place of that rule).
// The binding is kept in the stored connector (credential_bindings,
// written only by Bind and MigrateBindings, each with a MAC that
// only this manager can make) and every task of the connector uses
// exactly that credential (boundCredential): deleting it fails the
// connector's tasks CREDENTIALS until a credential of that scope and name
// is put again; a credential of the same name appearing nearer changes
// nothing until the connector is updated. So what a scoped token's
// connector reaches is decided while the token is checked, never later
// by what happens to exist.

// builtinRef is one builtin:NAME reference of a connector.
type builtinRef struct {
	field, name string
}

// builtinRefs returns c's builtin references, access_key_id first. The
// credential type decides which fields are used: only access_key
// connectors send keys (connector.Settings).
func builtinRefs(c *delegatev1.Connector) []builtinRef {
	if c.GetCredentialType() != delegatev1.CredentialType_ACCESS_KEY {
		return nil
	}
	var out []builtinRef
	for _, f := range []struct{ field, v string }{
		{"access_key_id", c.GetAccessKeyId()},
		{"secret_access_key", c.GetSecretAccessKey()},
	} {
		if r, err := connector.ParseRef(f.v); err == nil && r.Kind == connector.KindBuiltin {
			out = append(out, builtinRef{f.field, r.Value})
		}
	}
	return out
}

// findCredential returns the scope of the credential a builtin:name
// reference of a connector of scope sc binds to: sc itself or the nearest
// scope above it holding a credential of that name, going no higher than
// what limit sees (visible). limit is the scope of the operator token
// creating or updating the connector; the zero limit (an unscoped token,
// or the migration) goes up to the account. store.ErrNotFound if there
// is none.
func (s *Resolver) findCredential(ctx context.Context, limit, sc store.Scope, name string) (store.Scope, error) {
	for more := true; more && scopes.Visible(limit, sc); sc, more = sc.Parent() {
		_, err := s.cat.GetCredential(ctx, sc, name)
		if err == nil {
			return sc, nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return store.Scope{}, err
		}
	}
	return store.Scope{}, store.ErrNotFound
}

// Bind replaces c.CredentialBindings (whatever the client sent)
// with one binding per builtin reference, found by findCredential under
// the request's token. A reference with no credential in reach is an
// *config.FieldError naming its field (the API answers it InvalidArgument). c must be normalized, valid and
// within the token's scope.
func (s *Resolver) Bind(ctx context.Context, c *delegatev1.Connector) error {
	c.CredentialBindings = nil
	sc, tok := scopes.FromProto(c.GetScope()), identity.From(ctx).Scope
	for _, r := range builtinRefs(c) {
		found, err := s.findCredential(ctx, tok, sc, r.name)
		if errors.Is(err, store.ErrNotFound) {
			reach := ""
			if !tok.IsZero() {
				reach = " up to this operator token's scope " + tok.String()
			}
			return (config.Errf(r.field, "builtin credential %q does not exist in scope %s or above%s (add it with smd credential put)",
				r.name, sc.String(), reach))
		}
		if err != nil {
			return err
		}
		c.CredentialBindings = append(c.CredentialBindings, s.newBinding(c, r, found))
	}
	return nil
}

// is no fallback to another scope. Its errors (a task's CREDENTIALS
// outcome, after "FIELD: builtin credential NAME: ") say where the
// reference points and how to restore it; none carries a value.
func (s *Resolver) boundCredential(ctx context.Context, c *delegatev1.Connector, field, name string) (string, error) {
	b := s.binding(c, field, name)
	if b == nil {
		return "", errors.New("is not bound to a stored credential: update the connector to bind it")
	}
	bs := scopes.FromProto(b.GetScope())
	if bs.IsZero() || !bs.Contains(scopes.FromProto(c.GetScope())) {
		// Not made by Bind or the migration, whatever its MAC.
		return "", fmt.Errorf("is bound to scope %s, not the connector's scope or one above it: update the connector to bind it anew", scopes.Text(bs))
	}
	cred, err := s.cat.GetCredential(ctx, bs, name)
	if errors.Is(err, store.ErrNotFound) {
		return "", fmt.Errorf("is bound to the credential %s of scope %s, which no longer exists: put it there again (smd credential put %s --scope %s) or update the connector to bind it anew",
			name, bs.String(), name, bs.String())
	}
	if store.IsUnavailable(err) {
		return "", err // transient: the caller retries (Payload)
	}
	if err != nil {
		s.log.Error().Err(err).Str("connector", c.GetIdentifier()).Str("credential", name).Str("credential_scope", bs.String()).Msg("read builtin credential")
		return "", errors.New("cannot be read from the store (see the manager log)")
	}
	v, err := s.sealer.Open(cred.Sealed, CredentialAAD(cred.Scope, cred.Name))
	if err != nil {
		s.log.Error().Err(err).Str("connector", c.GetIdentifier()).Str("credential", name).Str("credential_scope", bs.String()).Msg("open builtin credential")
		return "", errors.New("cannot be decrypted (see the manager log)")
	}
	return string(v), nil
}
