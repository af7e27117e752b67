package tasks_test

import (
	"strings"
	"testing"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// TestJSONReferences reads keys out of JSON secrets through the SDK.
func TestJSONReferences(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	conn := e.connector(t, delegatev1.CredentialType_ACCESS_KEY)
	const planted = "PLANTED-json-secret-77"
	e.emu.PutSecretDirect(prefix+"/json", `{"password":"`+planted+`","db":{"conn":{"host":"db.internal"}},`+
		`"a.b":"literal","a":{"b":"path"},"port":5432,"ratio":0.25,"tls":false,"opts":{"x":[1, "`+planted+`"]}}`, nil)
	e.emu.PutSecretDirect(prefix+"/plain", planted+" not json", nil)
	e.emu.PutSecretDirect(prefix+"/array", `["`+planted+`"]`, nil)
	for _, tc := range []struct {
		ref      string
		want     string
		wantCode delegatev1.Code
		wantMsg  string
	}{
		{"json#password", planted, delegatev1.Code_OK, ""},
		{"json#db.conn.host", "db.internal", delegatev1.Code_OK, ""},
		{"json#a.b", "literal", delegatev1.Code_OK, ""},
		{"json#port", "5432", delegatev1.Code_OK, ""},
		{"json#ratio", "0.25", delegatev1.Code_OK, ""},
		{"json#tls", "false", delegatev1.Code_OK, ""},
		{"json#opts", `{"x":[1,"` + planted + `"]}`, delegatev1.Code_OK, ""},
		{"json#missing", "", delegatev1.Code_NOT_FOUND, `JSON key "missing" not found`},
		{"json#db.conn.port", "", delegatev1.Code_NOT_FOUND, `JSON key "db.conn.port" not found`},
		{"json#password.inner", "", delegatev1.Code_INVALID_ARGUMENT, "is not a JSON object"},
		{"plain#password", "", delegatev1.Code_INVALID_ARGUMENT, "is not JSON"},
		{"array#0", "", delegatev1.Code_INVALID_ARGUMENT, "is not a JSON object"},
		{"json#", "", delegatev1.Code_INVALID_ARGUMENT, "empty"},
	} {
		t.Run(tc.ref, func(t *testing.T) {
			t.Parallel()
			out := e.run(t, "json-"+tc.ref, &delegatev1.SecretTask{Connector: conn,
				Op: &delegatev1.SecretTask_Get{Get: &delegatev1.GetSecretOp{Name: tc.ref}}})
			if tc.wantCode == delegatev1.Code_OK {
				res := mustOK(t, tc.ref, out)
				if got := res.GetValue().GetStringValue(); got != tc.want {
					t.Errorf("get %s = %q, want %q", tc.ref, got, tc.want)
				}
				return
			}
			wantCode(t, tc.ref, out, tc.wantCode, tc.wantMsg)
			if strings.Contains(out.GetMessage(), planted) || out.GetSecret().GetValue() != nil {
				t.Errorf("get %s failure echoes the value: %q", tc.ref, out.GetMessage())
			}
		})
	}
	if strings.Contains(e.logs.String(), planted) {
		t.Error("the logs hold the secret value")
	}
}
