package manager_test

import (
	"strings"
	"testing"

	"github.com/smdelegate/smdelegate/manager"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// TestItem2PlatformEndpointsOnlyWhereManagerAllows performs issue 9 item
// 2 against the manager's own runner: an operator writes a platform OIDC
// connector whose sts_endpoint_url (or endpoint_url) is a listener of
// the attacker's, hoping the manager posts the ID token it signs there
// (a token AWS would accept for the role). The manager allows only
// http://localhost:* (the emulator, reached by that name) beside AWS's
// own endpoints: the listener at 127.0.0.1 receives no token, the task
// fails INVALID_ARGUMENT naming platform.endpoints.allow, and a
// connector on the allowed endpoint works.
func TestItem2PlatformEndpointsOnlyWhereManagerAllows(t *testing.T) {
	t.Parallel()
	e := mustOIDCEnv(t, func(c *manager.Config) { c.Platform.Endpoints.Allow = []string{"http://localhost:*"} })
	e.emu.PutSecretDirect("platform/db", "platform-value", nil)
	allowed := strings.Replace(e.emuURL, "127.0.0.1", "localhost", 1)
	listener, tokens := recordingSTS(t, e.emuURL)
	c, ctx := operator(t, e.srv.Addr())
	scope := &delegatev1.Scope{Account: "acme"}

	for _, tc := range []struct {
		id, sm, sts string
		field       string
	}{
		{"aws_sts_elsewhere", allowed, listener, "connector.sts_endpoint_url: "},
		{"aws_sm_elsewhere", listener, allowed, "connector.endpoint_url: "},
		{"aws_both_elsewhere", listener, listener, "connector.endpoint_url: "},
	} {
		t.Run(tc.id, func(t *testing.T) {
			conn := e.oidcConnector(scope, tc.id, delegatev1.OIDCConnectivity_PLATFORM)
			conn.EndpointUrl, conn.StsEndpointUrl = tc.sm, tc.sts
			if _, err := c.CreateConnector(ctx, &delegatev1.CreateConnectorRequest{Connector: conn}); err != nil {
				t.Fatalf("CreateConnector: %v", err)
			}
			info := secretGet(t, c, ctx, &delegatev1.ConnectorRef{Scope: scope, Identifier: tc.id}, "platform/db")
			o := info.GetOutcome()
			if info.GetDelegate() != manager.PlatformTag || o.GetCode() != delegatev1.Code_INVALID_ARGUMENT ||
				!strings.Contains(o.GetMessage(), tc.field) ||
				!strings.Contains(o.GetMessage(), "the manager's config does not allow it (platform.endpoints.allow)") {
				t.Errorf("Secret(get) on %s = %v on %q: %q; want INVALID_ARGUMENT from the platform naming %s and platform.endpoints.allow",
					tc.id, o.GetCode(), info.GetDelegate(), o.GetMessage(), tc.field)
			}
		})
	}
	if got := tokens(); len(got) != 0 {
		t.Errorf("the listener received %d manager-signed tokens, want none", len(got))
	}
	if got := stsRequests(e.emu); len(got) != 0 {
		t.Errorf("STS received %d AssumeRoleWithWebIdentity calls from refused connectors, want none", len(got))
	}

	// On the allowed endpoint the same connector works.
	conn := e.oidcConnector(scope, "aws_allowed", delegatev1.OIDCConnectivity_PLATFORM)
	conn.EndpointUrl, conn.StsEndpointUrl = allowed, allowed
	if _, err := c.CreateConnector(ctx, &delegatev1.CreateConnectorRequest{Connector: conn}); err != nil {
		t.Fatalf("CreateConnector: %v", err)
	}
	info := secretGet(t, c, ctx, &delegatev1.ConnectorRef{Scope: scope, Identifier: "aws_allowed"}, "platform/db")
	if o := info.GetOutcome(); o.GetCode() != delegatev1.Code_OK || o.GetSecret().GetValue().GetStringValue() != "platform-value" {
		t.Errorf("Secret(get) on the allowed endpoint = %v (%s), want OK and the value", o.GetCode(), o.GetMessage())
	}
	if got := len(stsRequests(e.emu)); got != 1 {
		t.Errorf("AssumeRoleWithWebIdentity calls = %d, want 1 (the allowed connector's)", got)
	}
}
