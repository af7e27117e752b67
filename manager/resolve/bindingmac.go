package resolve

import (
	"crypto/hmac"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/smdelegate/smdelegate/manager/connector"
	"github.com/smdelegate/smdelegate/manager/scopes"
	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

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
