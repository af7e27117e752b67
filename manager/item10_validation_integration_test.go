package manager_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/smdelegate/smdelegate/manager/store"
	"github.com/smdelegate/smdelegate/manager/store/bolt"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// wantInvalid fails t unless err is InvalidArgument whose message starts
// with field (and the BadRequest detail names it).
func wantInvalid(t *testing.T, err error, field string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.InvalidArgument {
		t.Fatalf("error = %v, want InvalidArgument naming %s", err, field)
	}
	if !strings.HasPrefix(st.Message(), field+": ") {
		t.Errorf("message = %q, want it to start with %q", st.Message(), field+": ")
	}
	named := false
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				named = named || v.GetField() == field
			}
		}
	}
	if !named {
		t.Errorf("the BadRequest detail of %q does not name %s", st.Message(), field)
	}
}

// TestItem10ValidationAtTheEdge sends, over real gRPC, each malformed
// request of item 10 and its siblings (malformed scopes in every RPC that
// names one, credential names and values, secret names, values, tags and
// the other fields of every operation, connector references) and checks
// that the manager answers InvalidArgument naming the field as the request
// (and the operator's YAML) spells it, and that nothing changed: the
// lists before and after are equal, no task was stored, and the store,
// opened directly afterwards, holds no credential under a malformed scope.
func TestItem10ValidationAtTheEdge(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	log, _ := bufferLogger(t)
	srv := mustManagerAt(t, dir, log, nil)
	c, ctx := operator(t, srv.Addr())
	if _, err := c.PutCredential(ctx, &delegatev1.PutCredentialRequest{Scope: &delegatev1.Scope{Account: "acme"}, Name: "k", Value: []byte("secret")}); err != nil {
		t.Fatalf("PutCredential: %v", err)
	}
	if _, err := c.CreateConnector(ctx, &delegatev1.CreateConnectorRequest{Connector: &delegatev1.Connector{
		Identifier: "c", Name: "c", CredentialType: delegatev1.CredentialType_INSTANCE_ROLE,
		SecretNamePrefix: strings.Repeat("p", 256), ManagedByTagKey: "owner", DelegateSelectors: []string{"nobody"},
	}}); err != nil {
		t.Fatalf("CreateConnector: %v", err)
	}

	snapshot := func() string {
		var b strings.Builder
		for _, m := range []func() (proto.Message, error){
			func() (proto.Message, error) { return c.ListConnectors(ctx, &delegatev1.ListConnectorsRequest{}) },
			func() (proto.Message, error) { return c.ListCredentials(ctx, &delegatev1.ListCredentialsRequest{}) },
			func() (proto.Message, error) {
				return c.ListCredentials(ctx, &delegatev1.ListCredentialsRequest{Scope: &delegatev1.Scope{Account: "acme"}})
			},
			func() (proto.Message, error) { return c.ListTasks(ctx, &delegatev1.ListTasksRequest{}) },
		} {
			msg, err := m()
			if err != nil {
				t.Fatalf("list: %v", err)
			}
			b.WriteString(protojson.Format(msg))
		}
		return b.String()
	}
	before := snapshot()

	v := func(s string) *delegatev1.SecretValue {
		return &delegatev1.SecretValue{Value: &delegatev1.SecretValue_StringValue{StringValue: s}}
	}
	ref := &delegatev1.ConnectorRef{Identifier: "c"}
	secret := func(req *delegatev1.SecretRequest) func() error {
		return func() error {
			if req.Connector == nil {
				req.Connector = ref
			}
			_, err := c.Secret(ctx, req)
			return err
		}
	}
	badOrg := &delegatev1.Scope{Account: "acme", Org: "pay/ments"}
	noOrg := &delegatev1.Scope{Account: "acme", Project: "web"}
	tests := []struct {
		name  string
		call  func() error
		field string
	}{
		// PutCredential, as reported, and its siblings.
		{"credential scope org with a slash", func() error {
			_, err := c.PutCredential(ctx, &delegatev1.PutCredentialRequest{Scope: badOrg, Name: "k2", Value: []byte("x")})
			return err
		}, "scope.org"},
		{"credential scope project without org", func() error {
			_, err := c.PutCredential(ctx, &delegatev1.PutCredentialRequest{Scope: noOrg, Name: "k2", Value: []byte("x")})
			return err
		}, "scope.org"},
		{"credential name", func() error {
			_, err := c.PutCredential(ctx, &delegatev1.PutCredentialRequest{Name: "bad name", Value: []byte("x")})
			return err
		}, "name"},
		{"credential value not UTF-8", func() error {
			_, err := c.PutCredential(ctx, &delegatev1.PutCredentialRequest{Name: "k2", Value: []byte{0xff, 0xfe}})
			return err
		}, "value"},
		{"credential value empty", func() error {
			_, err := c.PutCredential(ctx, &delegatev1.PutCredentialRequest{Name: "k2"})
			return err
		}, "value"},
		{"list credentials scope", func() error {
			_, err := c.ListCredentials(ctx, &delegatev1.ListCredentialsRequest{Scope: badOrg})
			return err
		}, "scope.org"},
		{"delete credential name", func() error {
			_, err := c.DeleteCredential(ctx, &delegatev1.DeleteCredentialRequest{Scope: &delegatev1.Scope{Account: "acme"}, Name: "../k"})
			return err
		}, "name"},
		{"delete credential scope", func() error {
			_, err := c.DeleteCredential(ctx, &delegatev1.DeleteCredentialRequest{Scope: noOrg, Name: "k"})
			return err
		}, "scope.org"},
		// Connector references (a malformed scope was Internal).
		{"get connector scope", func() error {
			_, err := c.GetConnector(ctx, &delegatev1.GetConnectorRequest{Ref: &delegatev1.ConnectorRef{Scope: badOrg, Identifier: "c"}})
			return err
		}, "ref.scope.org"},
		{"get connector identifier", func() error {
			_, err := c.GetConnector(ctx, &delegatev1.GetConnectorRequest{Ref: &delegatev1.ConnectorRef{Identifier: "bad-id"}})
			return err
		}, "ref.identifier"},
		{"list connectors scope", func() error {
			_, err := c.ListConnectors(ctx, &delegatev1.ListConnectorsRequest{Scope: noOrg})
			return err
		}, "scope.org"},
		{"delete connector without identifier", func() error {
			_, err := c.DeleteConnector(ctx, &delegatev1.DeleteConnectorRequest{Ref: &delegatev1.ConnectorRef{}})
			return err
		}, "ref.identifier"},
		{"test connector scope", func() error {
			_, err := c.TestConnector(ctx, &delegatev1.TestConnectorRequest{Ref: &delegatev1.ConnectorRef{Scope: noOrg}})
			return err
		}, "ref.scope.org"},
		{"secret connector scope", secret(&delegatev1.SecretRequest{Connector: &delegatev1.ConnectorRef{Scope: badOrg},
			Op: &delegatev1.SecretRequest_Describe{Describe: &delegatev1.DescribeSecretOp{Name: "db"}}}), "connector.scope.org"},
		{"secret connector identifier", secret(&delegatev1.SecretRequest{Connector: &delegatev1.ConnectorRef{Identifier: "c d"},
			Op: &delegatev1.SecretRequest_Describe{Describe: &delegatev1.DescribeSecretOp{Name: "db"}}}), "connector.identifier"},
		// Secret operations: the delegate's rules, before anything is stored.
		{"create name", secret(&delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Create{Create: &delegatev1.CreateSecretOp{Name: "pay ments", Value: v("x")}}}), "create.name"},
		{"create name too long with the connector's prefix", secret(&delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Create{Create: &delegatev1.CreateSecretOp{Name: strings.Repeat("n", 256), Value: v("x")}}}), "create.name"},
		{"create value missing", secret(&delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Create{Create: &delegatev1.CreateSecretOp{Name: "db"}}}), "create.value"},
		{"create value too big", secret(&delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Create{Create: &delegatev1.CreateSecretOp{Name: "db", Value: v(strings.Repeat("v", 65537))}}}), "create.value"},
		{"create binary value empty", secret(&delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Create{Create: &delegatev1.CreateSecretOp{Name: "db",
			Value: &delegatev1.SecretValue{Value: &delegatev1.SecretValue_BinaryValue{}}}}}), "create.value"},
		{"create description", secret(&delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Create{Create: &delegatev1.CreateSecretOp{Name: "db", Value: v("x"), Description: strings.Repeat("d", 2049)}}}), "create.description"},
		{"create tag key", secret(&delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Create{Create: &delegatev1.CreateSecretOp{Name: "db", Value: v("x"), Tags: map[string]string{"aws:x": "1"}}}}), `create.tags["aws:x"]`},
		{"create tag value", secret(&delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Create{Create: &delegatev1.CreateSecretOp{Name: "db", Value: v("x"), Tags: map[string]string{"team": strings.Repeat("t", 256)}}}}), `create.tags["team"]`},
		{"create the connector's managed-by tag", secret(&delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Create{Create: &delegatev1.CreateSecretOp{Name: "db", Value: v("x"), Tags: map[string]string{"owner": "me"}}}}), `create.tags["owner"]`},
		{"create generate length", secret(&delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Create{Create: &delegatev1.CreateSecretOp{Name: "db", Generate: &delegatev1.GeneratePassword{Length: 9999}}}}), "create.generate.length"},
		{"upsert kms_key_id", secret(&delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Upsert{Upsert: &delegatev1.UpsertSecretOp{Name: "db", Value: v("x"), KmsKeyId: strings.Repeat("k", 2049)}}}), "upsert.kms_key_id"},
		{"upsert unmanaged", secret(&delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Upsert{Upsert: &delegatev1.UpsertSecretOp{Name: "db", Value: v("x"), Unmanaged: 7}}}), "upsert.unmanaged"},
		{"update without a change", secret(&delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Update{Update: &delegatev1.UpdateSecretOp{Name: "db"}}}), "update.value"},
		{"delete recovery window", secret(&delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Delete{Delete: &delegatev1.DeleteSecretOp{Name: "db", RecoveryWindowDays: 3}}}), "delete.recovery_window_days"},
		{"restore name", secret(&delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Restore{Restore: &delegatev1.RestoreSecretOp{Name: "a#b"}}}), "restore.name"},
		{"tag nothing", secret(&delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Tag{Tag: &delegatev1.TagSecretOp{Name: "db"}}}), "tag.add"},
		{"get version id", secret(&delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Get{Get: &delegatev1.GetSecretOp{Name: "db", VersionId: "v1"}}}), "get.version_id"},
		{"list max_results", secret(&delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_List{List: &delegatev1.ListSecretsOp{MaxResults: 500}}}), "list.max_results"},
		{"versions name", secret(&delegatev1.SecretRequest{Op: &delegatev1.SecretRequest_Versions{Versions: &delegatev1.ListSecretVersionsOp{}}}), "versions.name"},
		{"request id", secret(&delegatev1.SecretRequest{RequestId: "no spaces please",
			Op: &delegatev1.SecretRequest_Create{Create: &delegatev1.CreateSecretOp{Name: "db", Value: v("x")}}}), "request_id"},
		{"ping scope", func() error {
			_, err := c.Ping(ctx, &delegatev1.PingRequest{Scope: badOrg, Async: true})
			return err
		}, "scope.org"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantInvalid(t, tt.call(), tt.field)
			if after := snapshot(); after != before {
				t.Errorf("the manager's lists changed:\nbefore: %s\nafter: %s", before, after)
			}
		})
	}

	srv.Close(context.Background())
	db, err := bolt.Open(filepath.Join(dir, bolt.FileName), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, sc := range []store.Scope{{Account: "acme", Org: "pay/ments"}, {Account: "acme", Project: "web"}, {Account: "default"}} {
		if cs, err := db.ListCredentials(t.Context(), sc); err != nil || len(cs) != 0 {
			t.Errorf("store credentials in %+v = %d, %v; want none", sc, len(cs), err)
		}
		if _, err := db.GetCredential(t.Context(), sc, "k2"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("store credential k2 in %+v: %v, want not found", sc, err)
		}
	}
	if ts, err := db.ListTasks(t.Context(), store.Filter{}); err != nil || len(ts) != 0 {
		t.Errorf("the store holds %d tasks (%v), want none", len(ts), err)
	}
}

// rawCodec sends and receives bytes as they are: a hand-written client
// that can put what no protobuf library would marshal on the wire.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

// field encodes one length-delimited field.
func field(num protowire.Number, b []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), b)
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// TestItem10TextThatIsNotUTF8 sends, from a client that writes the wire
// format by hand, requests whose strings are not UTF-8 (which gRPC
// answered Internal, and the CLI could not even send): each is
// InvalidArgument naming the field, unary and streaming alike, and
// nothing changed.
func TestItem10TextThatIsNotUTF8(t *testing.T) {
	t.Parallel()
	srv := mustManager(t, nil)
	c, ctx := operator(t, srv.Addr())
	conn, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	list := func() string {
		var b strings.Builder
		cs, err := c.ListCredentials(ctx, &delegatev1.ListCredentialsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		ts, err := c.ListTasks(ctx, &delegatev1.ListTasksRequest{})
		if err != nil {
			t.Fatal(err)
		}
		cn, err := c.ListConnectors(ctx, &delegatev1.ListConnectorsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range []proto.Message{cs, ts, cn} {
			b.WriteString(protojson.Format(m))
		}
		return b.String()
	}
	before := list()
	bad := []byte("pay\xffments")
	create := func(op []byte) []byte {
		return cat(field(1, field(2, []byte("c"))), field(10, op)) // connector {identifier: c}, create {...}
	}
	tests := []struct {
		name, method string
		req          []byte
		field        string
	}{
		{"credential name", "PutCredential", cat(field(2, bad), field(3, []byte("v"))), "name"},
		{"credential scope", "PutCredential", cat(field(1, field(1, bad)), field(2, []byte("k")), field(3, []byte("v"))), "scope.account"},
		{"secret value", "Secret", create(cat(field(1, []byte("db")), field(2, field(1, bad)))), "create.value.string_value"},
		{"secret name", "Secret", create(cat(field(1, bad), field(2, field(1, []byte("v"))))), "create.name"},
		{"secret tag value", "Secret", create(cat(field(1, []byte("db")), field(2, field(1, []byte("v"))),
			field(4, cat(field(1, []byte("team")), field(2, bad))))), `create.tags["team"]`},
		{"secret tag key", "Secret", create(cat(field(1, []byte("db")), field(2, field(1, []byte("v"))),
			field(4, cat(field(1, bad), field(2, []byte("x")))))), "create.tags (a key)"},
		{"connector description", "CreateConnector", field(1, cat(field(1, []byte("cx")), field(2, []byte("n")), field(3, bad))), "connector.description"},
		{"delegate tag", "TagDelegate", cat(field(1, []byte("d")), field(2, []byte("ok")), field(2, bad)), "add[1]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out []byte
			err := conn.Invoke(ctx, "/delegate.v1.ManagerService/"+tt.method, &tt.req, &out)
			wantInvalid(t, err, tt.field)
			if after := list(); after != before {
				t.Errorf("the manager's lists changed:\nbefore: %s\nafter: %s", before, after)
			}
		})
	}
	t.Run("stream", func(t *testing.T) {
		desc := &grpc.StreamDesc{StreamName: "WatchTask", ServerStreams: true}
		s, err := conn.NewStream(ctx, desc, "/delegate.v1.ManagerService/WatchTask")
		if err != nil {
			t.Fatal(err)
		}
		req := field(1, bad)
		if err := s.SendMsg(&req); err != nil {
			t.Fatal(err)
		}
		if err := s.CloseSend(); err != nil {
			t.Fatal(err)
		}
		var out []byte
		wantInvalid(t, s.RecvMsg(&out), "id")
	})
}
