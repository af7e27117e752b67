package tasks_test

import (
	"bytes"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/smdelegate/smdelegate/tasks"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

func binary(b []byte) *delegatev1.SecretValue {
	return &delegatev1.SecretValue{Value: &delegatev1.SecretValue_BinaryValue{BinaryValue: b}}
}

// TestVersionsOp lists a secret's versions through ListSecretVersionIds:
// ids, stages and dates, page by page, deprecated ones on request.
func TestVersionsOp(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	conn := e.connector(t, delegatev1.CredentialType_ACCESS_KEY)
	mustOK(t, "create", e.run(t, "v-1", secretTask(conn, &delegatev1.CreateSecretOp{Name: "s", Value: str("1")})))
	for _, id := range []string{"v-2", "v-3", "v-4"} {
		mustOK(t, "update", e.run(t, id, secretTask(conn, &delegatev1.UpdateSecretOp{Name: "s", Value: str(id)})))
	}
	type row struct {
		ID     string
		Stages []string
	}
	rows := func(res *delegatev1.SecretResult) []row {
		var out []row
		for _, v := range res.GetVersions() {
			if v.GetCreatedDate() == nil {
				t.Errorf("version %s has no created date", v.GetVersionId())
			}
			out = append(out, row{v.GetVersionId(), v.GetStages()})
		}
		return out
	}
	tok := tasks.RequestToken

	res := mustOK(t, "versions", e.run(t, "list-1", secretTask(conn, &delegatev1.ListSecretVersionsOp{Name: "s"})))
	want := []row{{tok("v-3"), []string{"AWSPREVIOUS"}}, {tok("v-4"), []string{"AWSCURRENT"}}}
	if diff := cmp.Diff(want, rows(res)); diff != "" || res.GetNextToken() != "" || res.GetName() != "s" {
		t.Errorf("versions: name %q next %q (-want +got):\n%s", res.GetName(), res.GetNextToken(), diff)
	}
	if r := e.lastRequest(t, "ListSecretVersionIds"); param(r, "SecretId") != prefix+"/s" || r.Params["IncludeDeprecated"] != nil {
		t.Errorf("ListSecretVersionIds params = %v", r.Params)
	}

	// Deprecated versions too, two per page.
	var all []row
	next := ""
	for page := 0; ; page++ {
		if page > 3 {
			t.Fatal("pagination does not end")
		}
		res = mustOK(t, "versions page", e.run(t, "list-p", secretTask(conn, &delegatev1.ListSecretVersionsOp{Name: "s", MaxResults: 2, NextToken: next, IncludeDeprecated: true})))
		if len(res.GetVersions()) > 2 {
			t.Errorf("page %d has %d versions, want at most 2", page, len(res.GetVersions()))
		}
		all = append(all, rows(res)...)
		if next = res.GetNextToken(); next == "" {
			break
		}
	}
	want = []row{{tok("v-1"), nil}, {tok("v-2"), nil}, {tok("v-3"), []string{"AWSPREVIOUS"}}, {tok("v-4"), []string{"AWSCURRENT"}}}
	if diff := cmp.Diff(want, all); diff != "" {
		t.Errorf("all versions, paged (-want +got):\n%s", diff)
	}

	wantCode(t, "missing", e.run(t, "list-m", secretTask(conn, &delegatev1.ListSecretVersionsOp{Name: "missing"})), delegatev1.Code_NOT_FOUND, `secret "missing" not found`)
	wantCode(t, "max results", e.run(t, "list-x", secretTask(conn, &delegatev1.ListSecretVersionsOp{Name: "s", MaxResults: 101})), delegatev1.Code_INVALID_ARGUMENT, "max_results: must be 1-100")
	wantCode(t, "bad token", e.run(t, "list-t", secretTask(conn, &delegatev1.ListSecretVersionsOp{Name: "s", NextToken: "bogus"})), delegatev1.Code_INVALID_ARGUMENT, "InvalidNextTokenException")
	e.emu.FailNext("secretsmanager.ListSecretVersionIds", 1, "AccessDeniedException")
	wantCode(t, "denied", e.run(t, "list-d", secretTask(conn, &delegatev1.ListSecretVersionsOp{Name: "s"})), delegatev1.Code_ACCESS_DENIED, "secretsmanager:ListSecretVersionIds")
}

// TestBinaryValues writes binary values with create, update (both APIs)
// and upsert, and reads them back unchanged.
func TestBinaryValues(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	conn := e.connector(t, delegatev1.CredentialType_ACCESS_KEY)
	putConn := e.connector(t, delegatev1.CredentialType_ACCESS_KEY)
	putConn.UsePutSecretValue = true
	get := func(what string) []byte {
		t.Helper()
		res := mustOK(t, what, e.run(t, "b-get", secretTask(conn, &delegatev1.GetSecretOp{Name: "b"})))
		if _, ok := res.GetValue().GetValue().(*delegatev1.SecretValue_BinaryValue); !ok {
			t.Fatalf("%s: value is not binary: %T", what, res.GetValue().GetValue())
		}
		return res.GetValue().GetBinaryValue()
	}
	for i, step := range []struct {
		what string
		task *delegatev1.SecretTask
	}{
		{"create", secretTask(conn, &delegatev1.CreateSecretOp{Name: "b", Value: binary([]byte{0, 1, 2, 0xff})})},
		{"update", secretTask(conn, &delegatev1.UpdateSecretOp{Name: "b", Value: binary([]byte{3, 0, 0xfe})})},
		{"put", secretTask(putConn, &delegatev1.UpdateSecretOp{Name: "b", Value: binary([]byte("\x00put"))})},
		{"upsert", secretTask(conn, &delegatev1.UpsertSecretOp{Name: "b", Value: binary(bytes.Repeat([]byte{0x80}, 65536))})},
	} {
		mustOK(t, step.what, e.run(t, "b-"+step.what, step.task))
		want := step.task.GetCreate().GetValue().GetBinaryValue()
		for _, v := range []*delegatev1.SecretValue{step.task.GetUpdate().GetValue(), step.task.GetUpsert().GetValue()} {
			if v != nil {
				want = v.GetBinaryValue()
			}
		}
		if got := get(step.what); !bytes.Equal(got, want) {
			t.Errorf("step %d %s: read %d bytes back, not the %d written", i, step.what, len(got), len(want))
		}
		if st, _ := e.emu.Secret(prefix + "/b"); st.Versions[len(st.Versions)-1].SecretString != "" {
			t.Errorf("%s stored a string value", step.what)
		}
	}
	wantCode(t, "too big", e.run(t, "b-big", secretTask(conn, &delegatev1.UpdateSecretOp{Name: "b", Value: binary(make([]byte, 65537))})),
		delegatev1.Code_INVALID_ARGUMENT, "value: must be 1-65536 bytes")
	wantCode(t, "json key of binary", e.run(t, "b-key", secretTask(conn, &delegatev1.GetSecretOp{Name: "b#k"})),
		delegatev1.Code_INVALID_ARGUMENT, "binary")
}

// TestKMSKeyPerSecret: the connector's kms_key_id applies to creates
// unless the op names its own; update and upsert change it only when the
// op names one.
func TestKMSKeyPerSecret(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	conn := e.connector(t, delegatev1.CredentialType_ACCESS_KEY)
	conn.KmsKeyId = "alias/connector"
	kms := func(name string) string {
		st, _ := e.emu.Secret(prefix + "/" + name)
		return st.KmsKeyID
	}
	mustOK(t, "create default", e.run(t, "k-1", secretTask(conn, &delegatev1.CreateSecretOp{Name: "a", Value: str("v")})))
	mustOK(t, "create own", e.run(t, "k-2", secretTask(conn, &delegatev1.CreateSecretOp{Name: "b", Value: str("v"), KmsKeyId: "alias/own"})))
	mustOK(t, "upsert own", e.run(t, "k-3", secretTask(conn, &delegatev1.UpsertSecretOp{Name: "c", Value: str("v"), KmsKeyId: "alias/upsert"})))
	if got := []string{kms("a"), kms("b"), kms("c")}; !cmp.Equal(got, []string{"alias/connector", "alias/own", "alias/upsert"}) {
		t.Errorf("KMS keys after create = %v", got)
	}
	mustOK(t, "update value", e.run(t, "k-4", secretTask(conn, &delegatev1.UpdateSecretOp{Name: "b", Value: str("v2")})))
	if kms("b") != "alias/own" {
		t.Errorf("an update without a key changed it to %q", kms("b"))
	}
	if r := e.lastRequest(t, "UpdateSecret"); r.Params["KmsKeyId"] != nil {
		t.Errorf("UpdateSecret without a key sent KmsKeyId %v", r.Params["KmsKeyId"])
	}
	mustOK(t, "update key", e.run(t, "k-5", secretTask(conn, &delegatev1.UpdateSecretOp{Name: "b", KmsKeyId: "alias/rotated"})))
	mustOK(t, "upsert key", e.run(t, "k-6", secretTask(conn, &delegatev1.UpsertSecretOp{Name: "c", Value: str("v2"), KmsKeyId: "alias/upsert2"})))
	if got := []string{kms("b"), kms("c")}; !cmp.Equal(got, []string{"alias/rotated", "alias/upsert2"}) {
		t.Errorf("KMS keys after update = %v", got)
	}
	res := mustOK(t, "describe", e.run(t, "k-7", secretTask(conn, &delegatev1.DescribeSecretOp{Name: "b"})))
	if res.GetMeta().GetKmsKeyId() != "alias/rotated" {
		t.Errorf("describe kms_key_id = %q", res.GetMeta().GetKmsKeyId())
	}
}
