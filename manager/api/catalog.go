package api

import (
	"context"
	"errors"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/manager/connector"
	"github.com/smdelegate/smdelegate/manager/dispatch"
	"github.com/smdelegate/smdelegate/manager/resolve"
	"github.com/smdelegate/smdelegate/manager/scopes"
	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// DefaultAccount is the account of requests that name no scope, from an
// unscoped token (requestScope).
const DefaultAccount = "default"

// errOutsideScope: the connector's scope is outside the token's.
var errOutsideScope = errors.New("outside the token's scope")

// prepareConnector normalizes and validates c and binds its builtin
// credential references (bindConnector: at its scope or above, as far up
// as the token sees). A valid connector outside the token's scope is
// errOutsideScope, for the caller to answer.
func (s *Service) prepareConnector(ctx context.Context, c *delegatev1.Connector) error {
	if c == nil {
		return Invalid(config.Errf("connector", "is required"))
	}
	c.Scope = requestScope(ctx, c.Scope)
	// Fields this manager does not know are not stored: a later version
	// might give them a meaning their sender chose (as bindings would
	// have had, but for their MACs).
	if raw, err := proto.Marshal(c); err == nil {
		proto.Reset(c)
		if err := (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(raw, c); err != nil {
			return s.toStatus(err)
		}
	}
	// Validate sees the other fields normalized but the selectors as
	// given: Normalize drops empty selectors, and an operator who wrote
	// one should hear about it, by its index, rather than have it vanish.
	given := c.GetDelegateSelectors()
	connector.Normalize(c)
	check := proto.Clone(c).(*delegatev1.Connector)
	check.DelegateSelectors = given
	if err := connector.Validate(check); err != nil {
		return Invalid(err)
	}
	if !canSee(ctx, c.GetScope()) {
		return errOutsideScope
	}
	return s.bindConnector(ctx, c)
}

func (s *Service) CreateConnector(ctx context.Context, req *delegatev1.CreateConnectorRequest) (*delegatev1.Connector, error) {
	c := proto.Clone(req.GetConnector()).(*delegatev1.Connector)
	if err := s.prepareConnector(ctx, c); errors.Is(err, errOutsideScope) {
		return nil, outsideScope(ctx, "create a connector in", c.GetScope())
	} else if err != nil {
		return nil, err
	}
	now := timestamppb.Now()
	c.CreatedAt, c.UpdatedAt = now, now
	data, _ := proto.Marshal(c)
	sc := &store.Connector{Scope: scopes.FromProto(c.GetScope()), ID: c.GetIdentifier(), Default: c.GetDefault(), Data: data}
	if err := s.cat.CreateConnector(ctx, sc); err != nil {
		return nil, s.connectorErr(ctx, c, err)
	}
	s.log.Info().Str("connector", c.GetIdentifier()).Str("scope", connector.ScopeKey(c.GetScope())).Msg("connector created")
	return resolve.OperatorView(c), nil
}

func (s *Service) UpdateConnector(ctx context.Context, req *delegatev1.UpdateConnectorRequest) (*delegatev1.Connector, error) {
	c := proto.Clone(req.GetConnector()).(*delegatev1.Connector)
	if err := s.prepareConnector(ctx, c); errors.Is(err, errOutsideScope) {
		return nil, s.connectorErr(ctx, c, store.ErrNotFound) // invisible: as if absent
	} else if err != nil {
		return nil, err
	}
	old, err := s.cat.GetConnector(ctx, scopes.FromProto(c.GetScope()), c.GetIdentifier())
	if err != nil {
		return nil, s.connectorErr(ctx, c, err)
	}
	// Keep the created_at the API reported at creation: the store's own
	// timestamp is taken a moment later (or on another clock).
	prev, err := resolve.DecodeConnector(old)
	if err != nil {
		return nil, s.toStatus(err)
	}
	c.CreatedAt = prev.GetCreatedAt()
	if c.CreatedAt == nil {
		c.CreatedAt = timestamppb.New(old.CreatedAt)
	}
	c.UpdatedAt = timestamppb.Now()
	data, _ := proto.Marshal(c)
	sc := &store.Connector{Scope: scopes.FromProto(c.GetScope()), ID: c.GetIdentifier(), Default: c.GetDefault(), Data: data}
	if err := s.cat.UpdateConnector(ctx, sc); err != nil {
		return nil, s.connectorErr(ctx, c, err)
	}
	return resolve.OperatorView(c), nil
}

func (s *Service) GetConnector(ctx context.Context, req *delegatev1.GetConnectorRequest) (*delegatev1.Connector, error) {
	if err := validRef("ref", req.GetRef(), false); err != nil {
		return nil, Invalid(err)
	}
	c, err := s.lookupConnector(ctx, req.GetRef())
	if err != nil {
		return nil, err
	}
	return resolve.OperatorView(c), nil
}

// lookupConnector finds the named connector (or the default one) from the
// ref's scope upward, as far up as the token's scope: what lies outside
// it is not found.
func (s *Service) lookupConnector(ctx context.Context, ref *delegatev1.ConnectorRef) (*delegatev1.Connector, error) {
	scope := requestScope(ctx, ref.GetScope())
	id := ref.GetIdentifier()
	get := func(ctx context.Context, sc *delegatev1.Scope) (*delegatev1.Connector, error) {
		if !canSee(ctx, sc) {
			return nil, store.ErrNotFound
		}
		var c *store.Connector
		var err error
		if id == "" {
			c, err = s.cat.DefaultConnector(ctx, scopes.FromProto(sc))
		} else {
			c, err = s.cat.GetConnector(ctx, scopes.FromProto(sc), id)
		}
		if err != nil {
			return nil, err
		}
		return resolve.DecodeConnector(c)
	}
	c, err := connector.Lookup(ctx, scope, get, func(err error) bool { return errors.Is(err, store.ErrNotFound) })
	switch {
	case errors.Is(err, store.ErrNotFound) && id == "":
		return nil, notFound("no default connector in scope %s or above: name one with --connector, or mark one default: true", connector.ScopeKey(scope))
	case errors.Is(err, store.ErrNotFound):
		return nil, notFound("connector %q not found in scope %s or above", id, connector.ScopeKey(scope))
	case err != nil:
		return nil, s.toStatus(err)
	}
	return c, nil
}

func (s *Service) ListConnectors(ctx context.Context, req *delegatev1.ListConnectorsRequest) (*delegatev1.ListConnectorsResponse, error) {
	if err := validScope("scope", req.GetScope()); err != nil {
		return nil, Invalid(err)
	}
	out := &delegatev1.ListConnectorsResponse{}
	tok := tokenScope(ctx)
	sc, more := scopes.FromProto(requestScope(ctx, req.GetScope())), true
	// Above a scope the token does not see, none is seen: stop there.
	for ; more && scopes.Visible(tok, sc); sc, more = sc.Parent() {
		cs, err := s.cat.ListConnectors(ctx, sc)
		if err != nil {
			return nil, s.toStatus(err)
		}
		for _, c := range cs {
			pc, err := resolve.DecodeConnector(c)
			if err != nil {
				return nil, s.toStatus(err)
			}
			out.Connectors = append(out.Connectors, resolve.OperatorView(pc))
		}
	}
	return out, nil
}

func (s *Service) DeleteConnector(ctx context.Context, req *delegatev1.DeleteConnectorRequest) (*delegatev1.DeleteConnectorResponse, error) {
	ref := req.GetRef()
	if err := validRef("ref", ref, true); err != nil {
		return nil, Invalid(err)
	}
	scope := requestScope(ctx, ref.GetScope())
	err := store.ErrNotFound // outside the token's scope: as if absent
	if canSee(ctx, scope) {
		err = s.cat.DeleteConnector(ctx, scopes.FromProto(scope), ref.GetIdentifier())
	}
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, notFound("connector %q does not exist in scope %s", ref.GetIdentifier(), connector.ScopeKey(scope))
		}
		return nil, s.toStatus(err)
	}
	return &delegatev1.DeleteConnectorResponse{}, nil
}

func (s *Service) PutCredential(ctx context.Context, req *delegatev1.PutCredentialRequest) (*delegatev1.Credential, error) {
	if err := validCredential(req.GetScope(), req.GetName(), req.GetValue(), true); err != nil {
		return nil, Invalid(err)
	}
	scope := requestScope(ctx, req.GetScope())
	if !canSee(ctx, scope) {
		return nil, outsideScope(ctx, "store a credential in", scope)
	}
	sc := scopes.FromProto(scope)
	c := &store.Credential{Scope: sc, Name: req.GetName(), Sealed: s.sealer.Seal(req.GetValue(), resolve.CredentialAAD(sc, req.GetName()))}
	if err := s.cat.PutCredential(ctx, c); err != nil {
		return nil, s.toStatus(err)
	}
	got, err := s.cat.GetCredential(ctx, sc, req.GetName())
	if err != nil {
		return nil, s.toStatus(err)
	}
	return &delegatev1.Credential{Scope: scope, Name: got.Name, CreatedAt: timestamppb.New(got.CreatedAt), UpdatedAt: timestamppb.New(got.UpdatedAt)}, nil
}

func (s *Service) ListCredentials(ctx context.Context, req *delegatev1.ListCredentialsRequest) (*delegatev1.ListCredentialsResponse, error) {
	if err := validScope("scope", req.GetScope()); err != nil {
		return nil, Invalid(err)
	}
	out := &delegatev1.ListCredentialsResponse{}
	scope := requestScope(ctx, req.GetScope())
	if !canSee(ctx, scope) {
		return out, nil // none that this token may see
	}
	cs, err := s.cat.ListCredentials(ctx, scopes.FromProto(scope))
	if err != nil {
		return nil, s.toStatus(err)
	}
	for _, c := range cs {
		out.Credentials = append(out.Credentials, &delegatev1.Credential{Scope: scopes.ToProto(c.Scope), Name: c.Name,
			CreatedAt: timestamppb.New(c.CreatedAt), UpdatedAt: timestamppb.New(c.UpdatedAt)})
	}
	return out, nil
}

func (s *Service) DeleteCredential(ctx context.Context, req *delegatev1.DeleteCredentialRequest) (*delegatev1.DeleteCredentialResponse, error) {
	if err := validCredential(req.GetScope(), req.GetName(), nil, false); err != nil {
		return nil, Invalid(err)
	}
	scope := requestScope(ctx, req.GetScope())
	err := store.ErrNotFound // outside the token's scope: as if absent
	if canSee(ctx, scope) {
		err = s.cat.DeleteCredential(ctx, scopes.FromProto(scope), req.GetName())
	}
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, notFound("credential %q does not exist in scope %s", req.GetName(), connector.ScopeKey(scope))
		}
		return nil, s.toStatus(err)
	}
	return &delegatev1.DeleteCredentialResponse{}, nil
}

// TagDelegate changes a delegate's operator tags. They belong to the
// name within a scope: the request's, else the connected delegate's, else
// the token's. A scoped token may tag only a connected delegate at its
// scope or below: others it does not see are not found; those it sees
// but that also serve other scopes (above it, or unscoped) it may not
// retag, and a name not connected it may not claim ahead of the delegate
// that will use it.
func (s *Service) TagDelegate(ctx context.Context, req *delegatev1.TagDelegateRequest) (*delegatev1.TagDelegateResponse, error) {
	tok := tokenScope(ctx)
	sc, connected := s.d.DelegateScope(req.GetName())
	if rs := req.GetScope(); !scopes.FromProto(rs).IsZero() {
		if err := connector.ValidateScope(rs); err != nil {
			return nil, Invalid(err)
		}
		connected = connected && sc == scopes.FromProto(rs)
		sc = scopes.FromProto(rs)
	} else if !connected {
		sc = tok
	}
	if !tok.IsZero() {
		switch {
		case !connected || !scopes.Overlaps(tok, sc):
			return nil, notFound("delegate %q is not connected", req.GetName())
		case !scopes.Visible(tok, sc):
			return nil, denied(
				"cannot tag delegate %q: it serves scope %s, beyond this operator token's scope %s; a scoped token tags only delegates at its scope or below it",
				req.GetName(), scopes.Text(sc), tok.String())
		}
	}
	tags, token, err := s.d.TagDelegate(ctx, dispatch.TagChange{
		Scope: sc, Name: req.GetName(), Add: req.GetAdd(), Remove: req.GetRemove(), Confirm: req.GetConfirm(),
	})
	if err != nil {
		return nil, s.toStatus(err)
	}
	return &delegatev1.TagDelegateResponse{OperatorTags: tags, TokenName: token}, nil
}
