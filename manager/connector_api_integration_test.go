package manager_test

import (
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/smdelegate/smdelegate/manager/connector"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// fieldViolations returns the BadRequest field names of an
// InvalidArgument status, failing the test for any other error.
func fieldViolations(t *testing.T, call string, err error) (string, []string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.InvalidArgument {
		t.Fatalf("%s = %v, want InvalidArgument", call, err)
	}
	var fields []string
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				fields = append(fields, v.GetField())
			}
		}
	}
	return st.Message(), fields
}

func wantCode(t *testing.T, call string, err error, code codes.Code) {
	t.Helper()
	if got := status.Code(err); got != code {
		t.Fatalf("%s = %v, want %v", call, err, code)
	}
}

// TestConnectorAPI drives connector CRUD over gRPC (design §5): create,
// get with the scope fallback from project to org to account, list by
// visibility, update, delete; at most one default per scope, refused
// naming the default field and the connector that holds it; and invalid
// connectors refused with InvalidArgument naming each field and rule,
// with nothing stored.
func TestConnectorAPI(t *testing.T) {
	t.Parallel()
	srv := mustManager(t, nil)
	c, ctx := operator(t, srv.Addr())

	account := &delegatev1.Scope{Account: "acme"}
	project := &delegatev1.Scope{Account: "acme", Org: "payments", Project: "checkout"}
	mainConn := &delegatev1.Connector{
		Identifier: "aws_main", Name: " Main ", Scope: account, Default: true,
		CredentialType: delegatev1.CredentialType_ACCESS_KEY,
		AccessKeyId:    "AKIAEXAMPLE", SecretAccessKey: "env:AWS_SECRET_ACCESS_KEY",
		Region: "eu-west-1", SecretNamePrefix: "/devops/", DelegateSelectors: []string{" AWS ", "aws", "Prod"},
	}
	created, err := c.CreateConnector(ctx, &delegatev1.CreateConnectorRequest{Connector: mainConn})
	if err != nil {
		t.Fatalf("CreateConnector(aws_main): %v", err)
	}
	if created.GetName() != "Main" || created.GetSecretNamePrefix() != "devops" ||
		strings.Join(created.GetDelegateSelectors(), ",") != "aws,prod" || created.GetCreatedAt() == nil {
		t.Errorf("CreateConnector(aws_main) = %v, want it normalized (name trimmed, prefix devops, selectors [aws prod]) with created_at", created)
	}
	_, err = c.CreateConnector(ctx, &delegatev1.CreateConnectorRequest{Connector: mainConn})
	wantCode(t, "CreateConnector(aws_main again)", err, codes.AlreadyExists)

	t.Run("get falls back from project to account", func(t *testing.T) {
		for _, ref := range []*delegatev1.ConnectorRef{
			{Scope: project, Identifier: "aws_main"},
			{Scope: &delegatev1.Scope{Account: "acme", Org: "payments"}, Identifier: "aws_main"},
			{Scope: project}, // the default connector
		} {
			got, err := c.GetConnector(ctx, &delegatev1.GetConnectorRequest{Ref: ref})
			if err != nil {
				t.Fatalf("GetConnector(%v): %v", ref, err)
			}
			if !proto.Equal(got, created) {
				t.Errorf("GetConnector(%v) = %v, want %v", ref, got, created)
			}
		}
		_, err := c.GetConnector(ctx, &delegatev1.GetConnectorRequest{Ref: &delegatev1.ConnectorRef{
			Scope: &delegatev1.Scope{Account: "other"}, Identifier: "aws_main"}})
		wantCode(t, "GetConnector(other account)", err, codes.NotFound)
	})

	// A project connector with the same identifier shadows the account's.
	projConn := proto.Clone(mainConn).(*delegatev1.Connector)
	projConn.Scope, projConn.Default, projConn.Description = project, false, "project copy"
	if _, err := c.CreateConnector(ctx, &delegatev1.CreateConnectorRequest{Connector: projConn}); err != nil {
		t.Fatalf("CreateConnector(aws_main in project): %v", err)
	}

	t.Run("list by visibility", func(t *testing.T) {
		for _, tc := range []struct {
			scope *delegatev1.Scope
			want  []string
		}{
			{project, []string{"acme/payments/checkout/aws_main", "acme/aws_main"}},
			{&delegatev1.Scope{Account: "acme", Org: "payments"}, []string{"acme/aws_main"}},
			{account, []string{"acme/aws_main"}},
			{&delegatev1.Scope{Account: "other"}, nil},
		} {
			r, err := c.ListConnectors(ctx, &delegatev1.ListConnectorsRequest{Scope: tc.scope})
			if err != nil {
				t.Fatalf("ListConnectors(%v): %v", tc.scope, err)
			}
			var got []string
			for _, x := range r.GetConnectors() {
				s := x.GetScope()
				key := strings.Join(strings.Fields(s.GetAccount()+" "+s.GetOrg()+" "+s.GetProject()), "/")
				got = append(got, key+"/"+x.GetIdentifier())
			}
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Errorf("ListConnectors(%v) = %q, want %q", tc.scope, got, tc.want)
			}
		}
		got, err := c.GetConnector(ctx, &delegatev1.GetConnectorRequest{Ref: &delegatev1.ConnectorRef{Scope: project, Identifier: "aws_main"}})
		if err != nil || got.GetDescription() != "project copy" {
			t.Errorf("GetConnector(project, aws_main) = %v, %v; want the project's own connector", got, err)
		}
	})

	t.Run("update", func(t *testing.T) {
		upd := proto.Clone(created).(*delegatev1.Connector)
		upd.Description = "updated"
		upd.CreatedAt, upd.UpdatedAt = nil, nil
		got, err := c.UpdateConnector(ctx, &delegatev1.UpdateConnectorRequest{Connector: upd})
		if err != nil {
			t.Fatalf("UpdateConnector: %v", err)
		}
		if !got.GetCreatedAt().AsTime().Equal(created.GetCreatedAt().AsTime()) {
			t.Errorf("UpdateConnector created_at = %v, want %v (kept)", got.GetCreatedAt().AsTime(), created.GetCreatedAt().AsTime())
		}
		if got.GetUpdatedAt().AsTime().Before(created.GetUpdatedAt().AsTime()) {
			t.Errorf("UpdateConnector updated_at = %v, before the create's %v", got.GetUpdatedAt().AsTime(), created.GetUpdatedAt().AsTime())
		}
		read, err := c.GetConnector(ctx, &delegatev1.GetConnectorRequest{Ref: &delegatev1.ConnectorRef{Scope: account, Identifier: "aws_main"}})
		if err != nil || read.GetDescription() != "updated" {
			t.Errorf("GetConnector after update = %v, %v; want description updated", read, err)
		}
		missing := proto.Clone(upd).(*delegatev1.Connector)
		missing.Identifier, missing.Default = "aws_missing", false
		_, err = c.UpdateConnector(ctx, &delegatev1.UpdateConnectorRequest{Connector: missing})
		wantCode(t, "UpdateConnector(aws_missing)", err, codes.NotFound)
	})

	t.Run("one default per scope", func(t *testing.T) {
		other := proto.Clone(mainConn).(*delegatev1.Connector)
		other.Identifier = "aws_other"
		_, err := c.CreateConnector(ctx, &delegatev1.CreateConnectorRequest{Connector: other})
		msg, fields := fieldViolations(t, "CreateConnector(second default)", err)
		if !strings.HasPrefix(msg, "default: ") || !strings.Contains(msg, `"aws_main"`) {
			t.Errorf("CreateConnector(second default) message = %q, want it to start with default: and name aws_main", msg)
		}
		if strings.Join(fields, ",") != "default" {
			t.Errorf("CreateConnector(second default) field violations = %q, want [default]", fields)
		}
		_, err = c.GetConnector(ctx, &delegatev1.GetConnectorRequest{Ref: &delegatev1.ConnectorRef{Scope: account, Identifier: "aws_other"}})
		wantCode(t, "GetConnector(aws_other) after the refused create", err, codes.NotFound)

		// A default in another scope is fine: at most one per scope.
		projDefault := proto.Clone(other).(*delegatev1.Connector)
		projDefault.Scope = project
		if _, err := c.CreateConnector(ctx, &delegatev1.CreateConnectorRequest{Connector: projDefault}); err != nil {
			t.Fatalf("CreateConnector(default in the project): %v", err)
		}
		got, err := c.GetConnector(ctx, &delegatev1.GetConnectorRequest{Ref: &delegatev1.ConnectorRef{Scope: project}})
		if err != nil || got.GetIdentifier() != "aws_other" {
			t.Errorf("GetConnector(project default) = %v, %v; want the project's own default aws_other", got, err)
		}
		// Making another connector the default by update is refused too.
		notDefault := proto.Clone(projConn).(*delegatev1.Connector)
		notDefault.Default = true
		_, err = c.UpdateConnector(ctx, &delegatev1.UpdateConnectorRequest{Connector: notDefault})
		if _, fields := fieldViolations(t, "UpdateConnector(second default)", err); strings.Join(fields, ",") != "default" {
			t.Errorf("UpdateConnector(second default) field violations = %q, want [default]", fields)
		}
	})

	t.Run("invalid connectors", func(t *testing.T) {
		base := func() *delegatev1.Connector {
			return &delegatev1.Connector{
				Identifier: "aws_bad", Name: "bad", Scope: account,
				CredentialType: delegatev1.CredentialType_ACCESS_KEY,
				AccessKeyId:    "AKIAEXAMPLE", SecretAccessKey: "env:AWS_SECRET_ACCESS_KEY",
			}
		}
		const plantedKey = "wJalrXUtnFEMIK7MDENGbPxRfiCYPLANTED"
		tests := []struct {
			name   string
			change func(*delegatev1.Connector)
			want   []string // "field: rule" prefixes expected in the message, in order
		}{
			{"identifier", func(c *delegatev1.Connector) { c.Identifier = "1bad" },
				[]string{"identifier: must start with a letter or _"}},
			{"plaintext secret key", func(c *delegatev1.Connector) { c.SecretAccessKey = plantedKey },
				[]string{"secret_access_key: a plaintext value is not allowed"}},
			{"unknown builtin credential", func(c *delegatev1.Connector) { c.SecretAccessKey = "builtin:nope" },
				[]string{`secret_access_key: builtin credential "nope" does not exist`}},
			{"role arn on access keys", func(c *delegatev1.Connector) { c.RoleArn = "arn:aws:iam::123456789012:role/x" },
				[]string{"role_arn: only used with assume_role or oidc credentials"}},
			{"recovery window", func(c *delegatev1.Connector) { c.RecoveryWindowDays = 3 },
				[]string{"recovery_window_days: must be between 7 and 30"}},
			{"reserved selector", func(c *delegatev1.Connector) { c.DelegateSelectors = []string{"smd:platform"} },
				[]string{"delegate_selectors[0]: must not start with smd:"}},
			{"platform with selectors", func(c *delegatev1.Connector) {
				c.CredentialType, c.AccessKeyId, c.SecretAccessKey = delegatev1.CredentialType_OIDC, "", ""
				c.RoleArn, c.OidcConnectivity = "arn:aws:iam::123456789012:role/x", delegatev1.OIDCConnectivity_PLATFORM
				c.DelegateSelectors = []string{"aws"}
			}, []string{"delegate_selectors: are not used when oidc_connectivity is platform"}},
			{"several problems", func(c *delegatev1.Connector) {
				c.Name, c.Region, c.EndpointUrl = "", "Europe", "ftp://x"
			}, []string{"name: is required", "region: must be an AWS region", "endpoint_url: must be an absolute http or https URL"}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				bad := base()
				tc.change(bad)
				_, err := c.CreateConnector(ctx, &delegatev1.CreateConnectorRequest{Connector: bad})
				msg, fields := fieldViolations(t, "CreateConnector("+tc.name+")", err)
				if len(fields) != len(tc.want) {
					t.Fatalf("CreateConnector(%s) = %q (field violations %q), want %d problems %q", tc.name, msg, fields, len(tc.want), tc.want)
				}
				rest := msg
				for i, w := range tc.want {
					// Problems are joined with "; ", in the order given.
					at := strings.Index(rest, w)
					if at < 0 || (at > 0 && !strings.HasSuffix(rest[:at], "; ")) {
						t.Errorf("CreateConnector(%s) message = %q, want problem %q (in order)", tc.name, msg, w)
						continue
					}
					rest = rest[at+len(w):]
					if field, _, _ := strings.Cut(w, ": "); fields[i] != field {
						t.Errorf("CreateConnector(%s) field violation %d = %q, want %q", tc.name, i, fields[i], field)
					}
				}
				if strings.Contains(msg, plantedKey) {
					t.Errorf("CreateConnector(%s) message %q echoes the secret key", tc.name, msg)
				}
				_, err = c.GetConnector(ctx, &delegatev1.GetConnectorRequest{Ref: &delegatev1.ConnectorRef{Scope: account, Identifier: bad.GetIdentifier()}})
				want := codes.NotFound
				if !connector.ValidIdentifier(bad.GetIdentifier()) {
					want = codes.InvalidArgument // refused before any lookup; ListConnectors below shows nothing was stored
				}
				wantCode(t, "GetConnector after the refused create", err, want)
			})
		}
		r, err := c.ListConnectors(ctx, &delegatev1.ListConnectorsRequest{Scope: account})
		if err != nil || len(r.GetConnectors()) != 1 {
			t.Errorf("ListConnectors(acme) after refused creates = %d connectors, %v; want only aws_main", len(r.GetConnectors()), err)
		}
	})

	t.Run("delete", func(t *testing.T) {
		ref := &delegatev1.ConnectorRef{Scope: account, Identifier: "aws_main"}
		if _, err := c.DeleteConnector(ctx, &delegatev1.DeleteConnectorRequest{Ref: ref}); err != nil {
			t.Fatalf("DeleteConnector(aws_main): %v", err)
		}
		_, err := c.GetConnector(ctx, &delegatev1.GetConnectorRequest{Ref: ref})
		wantCode(t, "GetConnector(aws_main) after delete", err, codes.NotFound)
		_, err = c.DeleteConnector(ctx, &delegatev1.DeleteConnectorRequest{Ref: ref})
		wantCode(t, "DeleteConnector(aws_main) again", err, codes.NotFound)
		// The project's connector of the same name is untouched.
		got, err := c.GetConnector(ctx, &delegatev1.GetConnectorRequest{Ref: &delegatev1.ConnectorRef{Scope: project, Identifier: "aws_main"}})
		if err != nil || got.GetScope().GetProject() != "checkout" {
			t.Errorf("GetConnector(project, aws_main) after deleting the account's = %v, %v; want the project's", got, err)
		}
		// With the account's default gone, its scope has none.
		_, err = c.GetConnector(ctx, &delegatev1.GetConnectorRequest{Ref: &delegatev1.ConnectorRef{Scope: account}})
		wantCode(t, "GetConnector(account default) after delete", err, codes.NotFound)
		_, err = c.DeleteConnector(ctx, &delegatev1.DeleteConnectorRequest{Ref: &delegatev1.ConnectorRef{Scope: account}})
		wantCode(t, "DeleteConnector(no identifier)", err, codes.InvalidArgument)
	})
}
