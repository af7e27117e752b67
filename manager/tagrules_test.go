package manager_test

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/smdelegate/smdelegate/manager"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// helloCase is a Hello that breaks the tag rule, and the field the
// refusal must name.
type helloCase struct {
	name   string
	change func(h *delegatev1.Hello)
	field  string
}

// refuseHellos connects a hand-written delegate with each Hello and
// checks it is refused InvalidArgument naming the field and the rule,
// and that no delegate got connected.
func refuseHellos(t *testing.T, cases []helloCase, rule string) {
	t.Helper()
	srv := mustManager(t, nil)
	c, ctx := operator(t, srv.Addr())
	for _, tc := range cases {
		h := hello("attacker", "attacker-process")
		h.Hostname = "host"
		tc.change(h)
		w, welcome, err := dialWire(t, srv.Addr(), delegateToken, h)
		if err == nil {
			w.cancel()
			t.Errorf("%s: Connect = Welcome with tags %q, want InvalidArgument", tc.name, welcome.GetTags())
			continue
		}
		st := status.Convert(err)
		if st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), tc.field+": ") || !strings.Contains(st.Message(), rule) {
			t.Errorf("%s: Connect = %v, want InvalidArgument %q naming %s", tc.name, err, rule, tc.field)
		}
	}
	if ds := delegateNames(t, c, ctx); len(ds) != 0 {
		t.Errorf("delegates connected after the refused Hellos: %v, want none", ds)
	}
}

// TestItem3ReservedTagsFromEverySource: the reserved smd: prefix is
// refused from every source of a delegate's tags once normalized
// (trimmed, lower-cased): the name, the host name, the group and the
// declared tags, so no agent carries smd:platform and receives the
// platform tasks (OIDC with manager-signed tokens); and operator tags,
// ping selectors and allowed_tags refuse it too.
func TestItem3ReservedTagsFromEverySource(t *testing.T) {
	t.Parallel()
	const rule = "must not start with smd: (reserved for smdelegate's own tags)"
	refuseHellos(t, []helloCase{
		{"name with a space", func(h *delegatev1.Hello) { h.Name = " smd:platform" }, "hello.name"},
		{"name in upper case", func(h *delegatev1.Hello) { h.Name = "SMD:Platform" }, "hello.name"},
		{"hostname", func(h *delegatev1.Hello) { h.Hostname = "smd:platform" }, "hello.hostname"},
		{"group", func(h *delegatev1.Hello) { h.Group = "SMD:Platform" }, "hello.group"},
		{"group with spaces", func(h *delegatev1.Hello) { h.Group = "  smd:platform " }, "hello.group"},
		{"declared tag", func(h *delegatev1.Hello) { h.Tags = []string{"linux", " Smd:platform"} }, "hello.tags[1]"},
	}, rule)

	srv := mustManager(t, nil)
	c, ctx := operator(t, srv.Addr())
	mustWire(t, srv.Addr(), delegateToken, hello("web", "p1"))
	for _, req := range []*delegatev1.TagDelegateRequest{
		{Name: "web", Add: []string{"ok", " SMD:Platform"}},
		{Name: "smd:platform", Add: []string{"prod"}}, // the manager's own delegate
	} {
		_, err := c.TagDelegate(ctx, req)
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "must not start with smd:") {
			t.Errorf("TagDelegate(%v) = %v, want InvalidArgument naming the reserved prefix", req, err)
		}
	}
	if d := delegateNames(t, c, ctx)["web"]; len(d.GetOperatorTags()) != 0 || slices.ContainsFunc(d.GetTags(), func(s string) bool { return strings.HasPrefix(s, "smd:") }) {
		t.Errorf("web after the refused tags: %v, want no operator tag and no smd: tag", d)
	}
	_, err := c.Ping(ctx, &delegatev1.PingRequest{Selectors: []string{"SMD:platform"}})
	if msg, fields := fieldViolations(t, "Ping(SMD:platform)", err); !slices.Equal(fields, []string{"selectors[0]"}) {
		t.Errorf("Ping(SMD:platform) = %q with fields %q, want selectors[0]", msg, fields)
	}

	cfg := validConfig()
	cfg.Auth.DelegateTokens[0].AllowedTags = []string{"linux", " smd:platform"}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "auth.delegate_tokens[0].allowed_tags[1]: "+rule) {
		t.Errorf("Validate(allowed_tags with smd:platform) = %v, want the field and the rule", err)
	}
}

// TestItem8ControlCharactersRefused: tags and selectors with NUL or other
// control characters are refused wherever they enter, naming the field:
// a Hello's name, host name, group and tags; operator tags; ping
// selectors; connector selectors; allowed_tags. Nothing is stored or
// queued.
func TestItem8ControlCharactersRefused(t *testing.T) {
	t.Parallel()
	const rule = "must hold only printable characters and spaces"
	refuseHellos(t, []helloCase{
		{"NUL in a tag", func(h *delegatev1.Hello) { h.Tags = []string{"zq\x00zr"} }, "hello.tags[0]"},
		{"escape in a tag", func(h *delegatev1.Hello) { h.Tags = []string{"a", "\x1b[31mred"} }, "hello.tags[1]"},
		{"C1 control in a tag", func(h *delegatev1.Hello) { h.Tags = []string{"a\u0085b"} }, "hello.tags[0]"},
		{"NUL in the name", func(h *delegatev1.Hello) { h.Name = "zq\x00zr" }, "hello.name"},
		{"newline in the hostname", func(h *delegatev1.Hello) { h.Hostname = "host\nforged log line" }, "hello.hostname"},
		{"DEL in the group", func(h *delegatev1.Hello) { h.Group = "g\x7f" }, "hello.group"},
	}, rule)

	srv := mustManager(t, nil)
	c, ctx := operator(t, srv.Addr())
	mustWire(t, srv.Addr(), delegateToken, hello("web", "p1"))
	for _, tc := range []struct {
		req   *delegatev1.TagDelegateRequest
		field string
	}{
		{&delegatev1.TagDelegateRequest{Name: "web", Add: []string{"zq\x00zr"}}, "add[0]"},
		{&delegatev1.TagDelegateRequest{Name: "web", Remove: []string{"ok", "\x01"}}, "remove[1]"},
		{&delegatev1.TagDelegateRequest{Name: "we\x00b", Add: []string{"ok"}}, "name"},
	} {
		_, err := c.TagDelegate(ctx, tc.req)
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), tc.field+": "+rule) {
			t.Errorf("TagDelegate(%q) = %v, want InvalidArgument naming %s", tc.req, err, tc.field)
		}
	}
	if d := delegateNames(t, c, ctx)["web"]; len(d.GetOperatorTags()) != 0 {
		t.Errorf("web after the refused tags: operator tags %q, want none", d.GetOperatorTags())
	}

	_, err := c.Ping(ctx, &delegatev1.PingRequest{Selectors: []string{"zq\x00zr"}, Async: true})
	if msg, fields := fieldViolations(t, "Ping(zq\\x00zr)", err); !slices.Equal(fields, []string{"selectors[0]"}) || !strings.Contains(msg, rule) {
		t.Errorf("Ping(zq\\x00zr) = %q with fields %q, want selectors[0]", msg, fields)
	}
	if r, err := c.ListTasks(ctx, &delegatev1.ListTasksRequest{}); err != nil || len(r.GetTasks()) != 0 {
		t.Errorf("ListTasks after the refused ping = %v, %v; want no task", r.GetTasks(), err)
	}

	conn := &delegatev1.Connector{
		Identifier: "aws_nul", Name: "nul", Scope: &delegatev1.Scope{Account: "acme"},
		CredentialType: delegatev1.CredentialType_INSTANCE_ROLE, DelegateSelectors: []string{"zq", "zq\x00zr"},
	}
	_, err = c.CreateConnector(ctx, &delegatev1.CreateConnectorRequest{Connector: conn})
	if msg, fields := fieldViolations(t, "CreateConnector(NUL selector)", err); !slices.Equal(fields, []string{"delegate_selectors[1]"}) || !strings.Contains(msg, rule) {
		t.Errorf("CreateConnector(NUL selector) = %q with fields %q, want delegate_selectors[1]", msg, fields)
	}
	if r, err := c.ListConnectors(ctx, &delegatev1.ListConnectorsRequest{Scope: conn.GetScope()}); err != nil || len(r.GetConnectors()) != 0 {
		t.Errorf("ListConnectors after the refusal = %v, %v; want none", r.GetConnectors(), err)
	}

	cfg := validConfig()
	cfg.Auth.DelegateTokens[0].AllowedTags = []string{"zq\x00zr"}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "auth.delegate_tokens[0].allowed_tags[0]: "+rule) {
		t.Errorf("Validate(allowed_tags with NUL) = %v, want the field and the rule", err)
	}
}

// validConfig is a manager config that passes Validate.
func validConfig() manager.Config {
	c := manager.DefaultConfig()
	c.MasterKey = testMasterKey
	c.TLS.Insecure = true
	c.Auth.DelegateTokens = []manager.TokenConfig{{Name: "d", SHA256: manager.HashToken(delegateToken)}}
	c.Auth.OperatorTokens = []manager.TokenConfig{{Name: "o", SHA256: manager.HashToken(operatorToken)}}
	return c
}
