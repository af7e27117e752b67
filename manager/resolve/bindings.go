package resolve

import (
	"context"
	"crypto/hmac"
	"errors"
	"fmt"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/internal/seal"
	"github.com/smdelegate/smdelegate/manager/connector"
	"github.com/smdelegate/smdelegate/manager/dispatch"
	"github.com/smdelegate/smdelegate/manager/identity"
	"github.com/smdelegate/smdelegate/manager/oidc"
	"github.com/smdelegate/smdelegate/manager/scopes"
	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// Resolver turns a task's connector reference into the settings the
// delegate uses: the connector as stored now, its builtin credentials
// through their bindings, an OIDC token. The dispatcher calls Payload each
// time it sends a secret task; the API binds connectors (Bind) as they are
// written.
type Resolver struct {
	cat    store.Catalog
	sealer *seal.Sealer
	issuer *oidc.Issuer
	log    zerolog.Logger
}

// New is a Resolver over the catalog cat, the sealer of credentials and
// the OIDC issuer.
func New(cat store.Catalog, sealer *seal.Sealer, issuer *oidc.Issuer, log zerolog.Logger) *Resolver {
	return &Resolver{cat: cat, sealer: sealer, issuer: issuer, log: log}
}

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

// newBinding is the binding of r to the credential of scope to, with its
// MAC for connector c.
func (s *Resolver) newBinding(c *delegatev1.Connector, r builtinRef, to store.Scope) *delegatev1.CredentialBinding {
	b := &delegatev1.CredentialBinding{Field: r.field, Name: r.name, Scope: scopes.ToProto(to)}
	b.Mac = s.bindingMAC(c, b)
	return b
}

// bindingMAC is the MAC of binding b of connector c: it covers the
// connector's scope and identifier, the field, the name and the bound
// scope, so a binding can be neither made nor moved without the master
// key.
func (s *Resolver) bindingMAC(c *delegatev1.Connector, b *delegatev1.CredentialBinding) []byte {
	data := fmt.Appendf(nil, "%s\x00%s\x00%s\x00%s\x00%s", connector.ScopeKey(c.GetScope()), c.GetIdentifier(),
		b.GetField(), b.GetName(), connector.ScopeKey(b.GetScope()))
	return s.sealer.MAC(data, []byte("credential-binding"))
}

// binding returns c's binding of the builtin reference name in field if
// this manager made it (its MAC verifies), else nil.
func (s *Resolver) binding(c *delegatev1.Connector, field, name string) *delegatev1.CredentialBinding {
	for _, b := range c.GetCredentialBindings() {
		if b.GetField() == field && b.GetName() == name && hmac.Equal(b.GetMac(), s.bindingMAC(c, b)) {
			return b
		}
	}
	return nil
}

// boundCredential returns the value of the credential that c's
// builtin:name reference in field is bound to, and nothing else: there
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

// OperatorView is c as the API returns it: the bindings without their
// MACs (c itself is left alone).
func OperatorView(c *delegatev1.Connector) *delegatev1.Connector {
	if len(c.GetCredentialBindings()) == 0 {
		return c
	}
	out := proto.Clone(c).(*delegatev1.Connector)
	for _, b := range out.GetCredentialBindings() {
		b.Mac = nil
	}
	return out
}

// MigrateBindings binds, once, the builtin references of connectors
// stored before bindings existed: every reference without a binding this
// manager made is bound by migrateBinding, bindings it did not make are
// dropped (logged at warn), and the connector is stored again. A
// connector whose references are all bound is never visited again. It
// runs in Start before anything is served, so no API call races it. It
// returns how many connectors it stored.
func (s *Resolver) MigrateBindings(ctx context.Context) (int, error) {
	all, err := s.cat.AllConnectors(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, sc := range all {
		c, err := DecodeConnector(sc)
		if err != nil {
			// Unusable anyway: its tasks fail, and so does every API call
			// that reads it. Do not keep the manager from starting.
			s.log.Error().Err(err).Str("scope", sc.Scope.String()).Msg("cannot migrate the credential bindings of a connector")
			continue
		}
		refs := builtinRefs(c)
		var bindings []*delegatev1.CredentialBinding
		kept := 0
		for _, r := range refs {
			b := s.binding(c, r.field, r.name)
			if b != nil {
				kept++
			} else if b, err = s.migrateBinding(ctx, c, r); err != nil {
				return n, err
			}
			bindings = append(bindings, b)
		}
		if kept == len(refs) && kept == len(c.GetCredentialBindings()) {
			continue
		}
		if other := len(c.GetCredentialBindings()) - kept; other > 0 {
			s.log.Warn().Str("connector", c.GetIdentifier()).Str("scope", connector.ScopeKey(c.GetScope())).Int("bindings", other).
				Msg("migration: dropped credential bindings this manager did not make")
		}
		c.CredentialBindings = bindings
		if sc.Data, err = proto.Marshal(c); err == nil {
			err = s.cat.UpdateConnector(ctx, sc)
		}
		if err != nil {
			return n, fmt.Errorf("connector %s in %s: %w", c.GetIdentifier(), sc.Scope.String(), err)
		}
		n++
	}
	return n, nil
}

// migrateBinding binds reference r of connector c, stored before
// bindings existed, from c's own scope upward (findCredential with no
// limit: the token that made the connector is not known). A binding
// above c's scope is logged at warn, for an operator to review; a
// reference whose credential exists nowhere is bound to c's own scope
// (putting it there makes the connector work) and logged at warn too.
func (s *Resolver) migrateBinding(ctx context.Context, c *delegatev1.Connector, r builtinRef) (*delegatev1.CredentialBinding, error) {
	own := scopes.FromProto(c.GetScope())
	found, err := s.findCredential(ctx, store.Scope{}, own, r.name)
	warn := func() *zerolog.Event {
		return s.log.Warn().Str("connector", c.GetIdentifier()).Str("scope", own.String()).
			Str("field", r.field).Str("reference", "builtin:"+r.name)
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		found = own
		warn().Str("credential_scope", own.String()).
			Msg("migration: the builtin credential exists in no scope of the connector; bound to the connector's own scope, where it must be put")
	case err != nil:
		return nil, fmt.Errorf("connector %s in %s: %s: %w", c.GetIdentifier(), own.String(), r.field, err)
	case found != own:
		warn().Str("credential_scope", found.String()).
			Msg("migration: builtin credential bound above the connector's scope; check that the connector's operators may use it, or put one in its scope and update the connector")
	}
	return s.newBinding(c, r, found), nil
}

// Payload fills a secret task's connector settings: the connector
// as stored now, the builtin credentials it is bound to decrypted
// (boundCredential), and a fresh OIDC token.
// It runs each time a task is sent, never for the store.
func (s *Resolver) Payload(ctx context.Context, taskID string, p *delegatev1.TaskPayload) (*delegatev1.TaskPayload, error) {
	ref := p.GetConnector()
	sc, err := s.cat.GetConnector(ctx, scopes.FromProto(ref.GetScope()), ref.GetIdentifier())
	if errors.Is(err, store.ErrNotFound) {
		return nil, &dispatch.TaskError{Code: delegatev1.Code_NOT_FOUND, Msg: "connector " + ref.GetIdentifier() + " was deleted before the task ran"}
	}
	if err != nil {
		return nil, err
	}
	c, err := DecodeConnector(sc)
	if err != nil {
		return nil, err
	}
	token := ""
	if c.GetCredentialType() == delegatev1.CredentialType_OIDC {
		connectivity := oidc.ConnectivityDelegate
		if c.GetOidcConnectivity() == delegatev1.OIDCConnectivity_PLATFORM {
			connectivity = oidc.ConnectivityPlatform
		}
		token, err = s.issuer.Mint(oidc.Claims{
			Account: c.GetScope().GetAccount(), Org: c.GetScope().GetOrg(), Project: c.GetScope().GetProject(),
			Connector: c.GetIdentifier(), TaskID: taskID,
			Context: map[string]string{
				oidc.ContextOperation:    SecretKind(p.GetSecret()),
				oidc.ContextConnectivity: connectivity,
			},
		})
		if err != nil {
			return nil, err
		}
	}
	settings, err := connector.Settings(c, func(field, name string) (string, error) {
		return s.boundCredential(ctx, c, field, name)
	}, token)
	if store.IsUnavailable(err) {
		return nil, err // transient: the dispatch is tried again
	}
	if err != nil {
		return nil, &dispatch.TaskError{Code: delegatev1.Code_CREDENTIALS, Msg: err.Error()}
	}
	out := proto.Clone(p).(*delegatev1.TaskPayload)
	out.GetSecret().Connector = settings
	return out, nil
}

// SecretKind is the task kind of a secret task ("secret.get", ...,
// "secret.test"): the kind tasks are listed and counted under, and the
// operation in a task token's context claim.
func SecretKind(st *delegatev1.SecretTask) string {
	switch st.GetOp().(type) {
	case *delegatev1.SecretTask_Create:
		return "secret.create"
	case *delegatev1.SecretTask_Upsert:
		return "secret.upsert"
	case *delegatev1.SecretTask_Update:
		return "secret.update"
	case *delegatev1.SecretTask_Delete:
		return "secret.delete"
	case *delegatev1.SecretTask_Restore:
		return "secret.restore"
	case *delegatev1.SecretTask_Get:
		return "secret.get"
	case *delegatev1.SecretTask_List:
		return "secret.list"
	case *delegatev1.SecretTask_Describe:
		return "secret.describe"
	case *delegatev1.SecretTask_TestConnection:
		return "secret.test"
	case *delegatev1.SecretTask_Tag:
		return "secret.tag"
	case *delegatev1.SecretTask_Versions:
		return "secret.versions"
	}
	return "secret"
}

func DecodeConnector(c *store.Connector) (*delegatev1.Connector, error) {
	out := &delegatev1.Connector{}
	if err := proto.Unmarshal(c.Data, out); err != nil {
		return nil, fmt.Errorf("decode connector %s: %w", c.ID, err)
	}
	return out, nil
}

// CredentialAAD binds a sealed credential to its scope and name.
func CredentialAAD(s store.Scope, name string) []byte {
	return []byte("cred/" + s.String() + "/" + name)
}
