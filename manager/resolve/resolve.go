// Package resolve turns a secret task's connector reference into what
// its delegate needs, each time the task is sent (Resolver.Payload, the
// dispatcher's Resolver): the connector as stored now, the builtin
// credentials it is bound to (bindings.go; their MAC in bindingmac.go;
// connectors stored before bindings in migrate.go) and an OIDC token.
package resolve

import (
	"context"
	"errors"
	"fmt"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/smdelegate/smdelegate/internal/seal"
	"github.com/smdelegate/smdelegate/manager/connector"
	"github.com/smdelegate/smdelegate/manager/dispatch"
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

// DecodeConnector is the connector a store record holds.
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
