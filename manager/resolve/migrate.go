package resolve

import (
	"context"
	"errors"
	"fmt"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/smdelegate/smdelegate/manager/connector"
	"github.com/smdelegate/smdelegate/manager/scopes"
	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

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
