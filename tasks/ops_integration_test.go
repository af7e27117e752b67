package tasks_test

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/smdelegate/smdelegate/internal/awsemu"
	"github.com/smdelegate/smdelegate/tasks"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// TestOperationsPerCredentialType runs every operation through the real SDK
// against the emulator with access-key, assume-role (with external id) and
// OIDC connectors. The instance-role run is TestInstanceRoleOperations.
func TestOperationsPerCredentialType(t *testing.T) {
	t.Parallel()
	for _, ct := range []delegatev1.CredentialType{
		delegatev1.CredentialType_ACCESS_KEY,
		delegatev1.CredentialType_ASSUME_ROLE,
		delegatev1.CredentialType_OIDC,
	} {
		t.Run(ct.String(), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{})
			conn := e.connector(t, ct)
			exerciseOps(t, e, conn)

			signers := signingKeys(e)
			switch ct {
			case delegatev1.CredentialType_ACCESS_KEY:
				if len(signers) != 1 || !signers[connKeyID] {
					t.Errorf("secretsmanager calls signed by %v, want only %s", signers, connKeyID)
				}
				if n := e.emu.Calls("sts.AssumeRole") + e.emu.Calls("sts.AssumeRoleWithWebIdentity"); n != 0 {
					t.Errorf("STS calls = %d, want 0", n)
				}
			case delegatev1.CredentialType_ASSUME_ROLE:
				if n := e.emu.Calls("sts.AssumeRole"); n != 1 {
					t.Errorf("sts.AssumeRole calls = %d, want 1", n)
				}
				ar := stsRequest(t, e, "AssumeRole")
				if ar.AccessKeyID != baseKeyID {
					t.Errorf("AssumeRole signed by %q, want the delegate's default chain key %q", ar.AccessKeyID, baseKeyID)
				}
				if got := param(ar, "ExternalId"); got != externalID {
					t.Errorf("AssumeRole ExternalId = %q, want %q", got, externalID)
				}
				if got := param(ar, "RoleSessionName"); got != "test-delegate-01" {
					t.Errorf("AssumeRole RoleSessionName = %q, want the sanitized delegate name", got)
				}
				if got := param(ar, "DurationSeconds"); got != "900" {
					t.Errorf("AssumeRole DurationSeconds = %q, want 900", got)
				}
				wantTemporarySigners(t, signers)
			case delegatev1.CredentialType_OIDC:
				if n := e.emu.Calls("sts.AssumeRoleWithWebIdentity"); n != 1 {
					t.Errorf("sts.AssumeRoleWithWebIdentity calls = %d, want 1 (credentials reused across tasks and tokens)", n)
				}
				if ar := stsRequest(t, e, "AssumeRoleWithWebIdentity"); ar.AccessKeyID != "" {
					t.Errorf("AssumeRoleWithWebIdentity signed by %q, want unsigned", ar.AccessKeyID)
				}
				wantTemporarySigners(t, signers)
			}
		})
	}
}

func wantTemporarySigners(t *testing.T, signers map[string]bool) {
	t.Helper()
	if len(signers) != 1 {
		t.Errorf("secretsmanager calls signed by %v, want one cached role session", signers)
	}
	for k := range signers {
		if !strings.HasPrefix(k, "ASIA") {
			t.Errorf("secretsmanager call signed by %q, want temporary role-session credentials", k)
		}
	}
}

// signingKeys is the set of access key ids that signed secretsmanager calls.
func signingKeys(e *env) map[string]bool {
	m := map[string]bool{}
	for _, r := range e.emu.Requests() {
		if r.Service == "secretsmanager" {
			m[r.AccessKeyID] = true
		}
	}
	return m
}

func stsRequest(t *testing.T, e *env, action string) (r awsemu.Request) {
	t.Helper()
	for _, q := range e.emu.Requests() {
		if q.Service == "sts" && q.Action == action {
			return q
		}
	}
	t.Fatalf("no sts.%s request", action)
	return r
}

// exerciseOps runs create, get (whole, JSON key, by VersionId and by
// AWSPREVIOUS), upsert (both paths), update (UpdateSecret, PutSecretValue,
// description only), describe, list, test connection, delete with a
// window, restore and force delete, and checks what the emulator recorded
// for each.
func exerciseOps(t *testing.T, e *env, conn *delegatev1.ConnectorSettings) {
	t.Helper()
	const name, full = "app-db", prefix + "/app-db"
	value := `{"user":"app","password":"PLANTED-pw-1","port":5432}`
	task := func(op any) *delegatev1.SecretTask {
		st := &delegatev1.SecretTask{Connector: conn}
		switch o := op.(type) {
		case *delegatev1.CreateSecretOp:
			st.Op = &delegatev1.SecretTask_Create{Create: o}
		case *delegatev1.UpsertSecretOp:
			st.Op = &delegatev1.SecretTask_Upsert{Upsert: o}
		case *delegatev1.GetSecretOp:
			st.Op = &delegatev1.SecretTask_Get{Get: o}
		case *delegatev1.UpdateSecretOp:
			st.Op = &delegatev1.SecretTask_Update{Update: o}
		case *delegatev1.DeleteSecretOp:
			st.Op = &delegatev1.SecretTask_Delete{Delete: o}
		case *delegatev1.RestoreSecretOp:
			st.Op = &delegatev1.SecretTask_Restore{Restore: o}
		case *delegatev1.ListSecretsOp:
			st.Op = &delegatev1.SecretTask_List{List: o}
		case *delegatev1.DescribeSecretOp:
			st.Op = &delegatev1.SecretTask_Describe{Describe: o}
		case *delegatev1.TestConnectionOp:
			st.Op = &delegatev1.SecretTask_TestConnection{TestConnection: o}
		}
		// A fresh OIDC token per task, as the manager sends.
		if conn.GetCredentialType() == delegatev1.CredentialType_OIDC {
			c := proto.Clone(conn).(*delegatev1.ConnectorSettings)
			c.WebIdentityToken = testIssuer(t).token(t, "account/acme/connector/"+c.Id)
			st.Connector = c
		}
		return st
	}
	checkWrite := func(action, taskID, wantName string) {
		t.Helper()
		r := e.lastRequest(t, action)
		id := param(r, "SecretId")
		if action == "CreateSecret" {
			id = param(r, "Name")
		}
		if id != wantName {
			t.Errorf("%s name = %q, want %q (prefixed once)", action, id, wantName)
		}
		if got := param(r, "ClientRequestToken"); got != tasks.RequestToken(taskID) {
			t.Errorf("%s ClientRequestToken = %q, want RequestToken(%q)", action, got, taskID)
		}
	}

	// Create.
	res := mustOK(t, "create", e.run(t, "t-create", task(&delegatev1.CreateSecretOp{
		Name: name, Value: str(value), Description: "app database", Tags: map[string]string{"team": "platform"}})))
	if res.GetName() != name || !res.GetCreated() || res.GetAction() != "CreateSecret" || res.GetVersionId() != tasks.RequestToken("t-create") {
		t.Errorf("create result = %v", res)
	}
	checkWrite("CreateSecret", "t-create", full)
	if st, ok := e.emu.Secret(full); !ok || st.Tags["team"] != "platform" || st.Description != "app database" {
		t.Errorf("emulator secret after create = %+v, %v", st, ok)
	}

	// Get, whole and by JSON key.
	res = mustOK(t, "get", e.run(t, "t-get", task(&delegatev1.GetSecretOp{Name: name})))
	if res.GetValue().GetStringValue() != value || res.GetName() != name {
		t.Errorf("get result name %q, value mismatch", res.GetName())
	}
	if r := e.lastRequest(t, "GetSecretValue"); param(r, "SecretId") != full {
		t.Errorf("GetSecretValue SecretId = %q, want %q", param(r, "SecretId"), full)
	}
	res = mustOK(t, "get#password", e.run(t, "t-get2", task(&delegatev1.GetSecretOp{Name: name + "#password"})))
	if res.GetValue().GetStringValue() != "PLANTED-pw-1" {
		t.Error("get#password returned the wrong value")
	}
	// Already-prefixed names are not prefixed again.
	mustOK(t, "get prefixed", e.run(t, "t-get3", task(&delegatev1.GetSecretOp{Name: full, VersionStage: "AWSCURRENT"})))

	// Upsert of an existing secret: UpdateSecret (the connector's default).
	res = mustOK(t, "upsert existing", e.run(t, "t-upsert", task(&delegatev1.UpsertSecretOp{Name: name, Value: str(`{"v":2}`)})))
	if res.GetCreated() || res.GetAction() != "UpdateSecret" {
		t.Errorf("upsert existing = created %v action %q, want false UpdateSecret", res.GetCreated(), res.GetAction())
	}
	checkWrite("UpdateSecret", "t-upsert", full)
	// Upsert of a new secret: CreateSecret.
	res = mustOK(t, "upsert new", e.run(t, "t-upsert-new", task(&delegatev1.UpsertSecretOp{Name: "other", Value: str("v1")})))
	if !res.GetCreated() || res.GetAction() != "CreateSecret" {
		t.Errorf("upsert new = created %v action %q, want true CreateSecret", res.GetCreated(), res.GetAction())
	}
	checkWrite("CreateSecret", "t-upsert-new", prefix+"/other")

	// Update: UpdateSecret with a value.
	res = mustOK(t, "update", e.run(t, "t-update", task(&delegatev1.UpdateSecretOp{Name: name, Value: str(`{"v":3}`)})))
	if res.GetAction() != "UpdateSecret" || res.GetVersionId() != tasks.RequestToken("t-update") {
		t.Errorf("update result = %v", res)
	}
	checkWrite("UpdateSecret", "t-update", full)
	// Update through PutSecretValue when the connector says so; upsert too.
	putConn := proto.Clone(conn).(*delegatev1.ConnectorSettings)
	putConn.UsePutSecretValue = true
	putTask := func(op any) *delegatev1.SecretTask {
		st := task(op)
		c := proto.Clone(st.Connector).(*delegatev1.ConnectorSettings)
		c.UsePutSecretValue = true
		st.Connector = c
		return st
	}
	updates := e.emu.Calls("secretsmanager.UpdateSecret")
	res = mustOK(t, "update put", e.run(t, "t-put", putTask(&delegatev1.UpdateSecretOp{Name: name, Value: str(`{"v":4}`)})))
	if res.GetAction() != "PutSecretValue" {
		t.Errorf("update with use_put_secret_value action = %q, want PutSecretValue", res.GetAction())
	}
	checkWrite("PutSecretValue", "t-put", full)
	res = mustOK(t, "upsert put", e.run(t, "t-upsert-put", putTask(&delegatev1.UpsertSecretOp{Name: name, Value: str(`{"v":5}`)})))
	if res.GetAction() != "PutSecretValue" || res.GetCreated() {
		t.Errorf("upsert with use_put_secret_value = %v", res)
	}
	checkWrite("PutSecretValue", "t-upsert-put", full)
	if n := e.emu.Calls("secretsmanager.UpdateSecret"); n != updates {
		t.Errorf("UpdateSecret calls went from %d to %d with use_put_secret_value", updates, n)
	}
	// A description-only update is UpdateSecret without a value, even with
	// use_put_secret_value.
	res = mustOK(t, "update description", e.run(t, "t-desc", putTask(&delegatev1.UpdateSecretOp{Name: name, Description: "new description"})))
	if res.GetAction() != "UpdateSecret" {
		t.Errorf("description-only update action = %q, want UpdateSecret", res.GetAction())
	}
	if r := e.lastRequest(t, "UpdateSecret"); r.Params["SecretString"] != nil || param(r, "Description") != "new description" {
		t.Errorf("description-only UpdateSecret params = %v", r.Params)
	}
	if st, _ := e.emu.Secret(full); len(st.Versions) == 0 || st.Versions[len(st.Versions)-1].SecretString != `{"v":5}` {
		t.Error("current value after the updates is not the last one written")
	}

	// Older versions: the create's by its VersionId (whole, and a JSON key
	// of it), and the one before the current by AWSPREVIOUS.
	createVersion, putVersion := tasks.RequestToken("t-create"), tasks.RequestToken("t-put")
	res = mustOK(t, "get by version id", e.run(t, "t-get-vid", task(&delegatev1.GetSecretOp{Name: name, VersionId: createVersion})))
	if got := res.GetValue().GetStringValue(); got != value || res.GetVersionId() != createVersion {
		t.Errorf("get VersionId %s = version %q value %q, want the created value %q", createVersion, res.GetVersionId(), got, value)
	}
	if r := e.lastRequest(t, "GetSecretValue"); param(r, "SecretId") != full || param(r, "VersionId") != createVersion || r.Params["VersionStage"] != nil {
		t.Errorf("GetSecretValue params = %v, want SecretId %s and VersionId %s without a VersionStage", r.Params, full, createVersion)
	}
	res = mustOK(t, "get#password by version id", e.run(t, "t-get-vid2", task(&delegatev1.GetSecretOp{Name: name + "#password", VersionId: createVersion})))
	if got := res.GetValue().GetStringValue(); got != "PLANTED-pw-1" {
		t.Errorf("get#password VersionId %s = %q, want the created version's password", createVersion, got)
	}
	res = mustOK(t, "get AWSPREVIOUS", e.run(t, "t-get-prev", task(&delegatev1.GetSecretOp{Name: name, VersionStage: "AWSPREVIOUS"})))
	if got := res.GetValue().GetStringValue(); got != `{"v":4}` || res.GetVersionId() != putVersion || !slices.Contains(res.GetVersionStages(), "AWSPREVIOUS") {
		t.Errorf("get AWSPREVIOUS = version %q stages %v value %q, want %s [AWSPREVIOUS] {\"v\":4}", res.GetVersionId(), res.GetVersionStages(), got, putVersion)
	}
	if r := e.lastRequest(t, "GetSecretValue"); param(r, "VersionStage") != "AWSPREVIOUS" || r.Params["VersionId"] != nil {
		t.Errorf("GetSecretValue params = %v, want VersionStage AWSPREVIOUS without a VersionId", r.Params)
	}
	res = mustOK(t, "get current", e.run(t, "t-get-cur", task(&delegatev1.GetSecretOp{Name: name})))
	if got := res.GetValue().GetStringValue(); got != `{"v":5}` || res.GetVersionId() != tasks.RequestToken("t-upsert-put") {
		t.Errorf("get current = version %q value %q, want the last write's", res.GetVersionId(), got)
	}
	wantCode(t, "get unknown version id", e.run(t, "t-get-vid3", task(&delegatev1.GetSecretOp{Name: name, VersionId: tasks.RequestToken("never-written")})),
		delegatev1.Code_NOT_FOUND, "")

	// Describe.
	res = mustOK(t, "describe", e.run(t, "t-describe", task(&delegatev1.DescribeSecretOp{Name: name})))
	if m := res.GetMeta(); m.GetName() != name || m.GetDescription() != "new description" || m.GetTags()["team"] != "platform" || len(m.GetVersionStages()) == 0 {
		t.Errorf("describe meta = %v", m)
	}
	if r := e.lastRequest(t, "DescribeSecret"); param(r, "SecretId") != full {
		t.Errorf("DescribeSecret SecretId = %q, want %q", param(r, "SecretId"), full)
	}

	// List, under the prefix, names stripped.
	e.emu.PutSecretDirect("elsewhere/x", "v", nil)
	res = mustOK(t, "list", e.run(t, "t-list", task(&delegatev1.ListSecretsOp{MaxResults: 100})))
	var names []string
	for _, s := range res.GetSecrets() {
		names = append(names, s.GetName())
	}
	sort.Strings(names)
	if strings.Join(names, ",") != "app-db,other" {
		t.Errorf("list names = %v, want [app-db other]", names)
	}
	if r := e.lastRequest(t, "ListSecrets"); !strings.Contains(stringify(r.Params["Filters"]), prefix+"/") {
		t.Errorf("ListSecrets Filters = %v, want a name filter on %s/", r.Params["Filters"], prefix)
	}
	res = mustOK(t, "list page", e.run(t, "t-list2", task(&delegatev1.ListSecretsOp{MaxResults: 1})))
	if len(res.GetSecrets()) != 1 || res.GetNextToken() == "" {
		t.Fatalf("list with max_results 1 = %d secrets, next token %q", len(res.GetSecrets()), res.GetNextToken())
	}
	page1 := res.GetSecrets()[0].GetName()
	res = mustOK(t, "list next", e.run(t, "t-list3", task(&delegatev1.ListSecretsOp{MaxResults: 1, NextToken: res.GetNextToken()})))
	if len(res.GetSecrets()) != 1 || res.GetSecrets()[0].GetName() == page1 {
		t.Errorf("second list page = %v after %q", res.GetSecrets(), page1)
	}
	res = mustOK(t, "list name prefix", e.run(t, "t-list4", task(&delegatev1.ListSecretsOp{NamePrefix: "oth"})))
	if len(res.GetSecrets()) != 1 || res.GetSecrets()[0].GetName() != "other" {
		t.Errorf("list with name_prefix oth = %v", res.GetSecrets())
	}

	// Test connection.
	res = mustOK(t, "test connection", e.run(t, "t-test", task(&delegatev1.TestConnectionOp{})))
	if len(res.GetChecks()) != 2 || !res.GetChecks()[0].GetOk() || !res.GetChecks()[1].GetOk() {
		t.Errorf("test connection checks = %v", res.GetChecks())
	}
	if r := e.lastRequest(t, "GetSecretValue"); !strings.HasPrefix(param(r, "SecretId"), prefix+"/smd-connection-test-") {
		t.Errorf("connection test probe = %q, want a random name under the prefix", param(r, "SecretId"))
	}
	if r := e.lastRequest(t, "ListSecrets"); stringify(r.Params["MaxResults"]) != "1" || !strings.Contains(stringify(r.Params["Filters"]), prefix+"/") {
		t.Errorf("connection test ListSecrets params = %v, want MaxResults 1 and a name filter on %s/", r.Params, prefix)
	}

	// Delete with a recovery window, then restore, then force delete.
	res = mustOK(t, "delete", e.run(t, "t-delete", task(&delegatev1.DeleteSecretOp{Name: name, RecoveryWindowDays: 7})))
	if res.GetDeletionDate() == nil || res.GetAction() != "DeleteSecret" {
		t.Errorf("delete result = %v", res)
	}
	if r := e.lastRequest(t, "DeleteSecret"); stringify(r.Params["RecoveryWindowInDays"]) != "7" || param(r, "SecretId") != full {
		t.Errorf("DeleteSecret params = %v", r.Params)
	}
	wantCode(t, "get scheduled", e.run(t, "t-get4", task(&delegatev1.GetSecretOp{Name: name})),
		delegatev1.Code_SCHEDULED_FOR_DELETION, "smd secret restore app-db")
	mustOK(t, "restore", e.run(t, "t-restore", task(&delegatev1.RestoreSecretOp{Name: name})))
	if r := e.lastRequest(t, "RestoreSecret"); param(r, "SecretId") != full {
		t.Errorf("RestoreSecret SecretId = %q, want %q", param(r, "SecretId"), full)
	}
	mustOK(t, "get restored", e.run(t, "t-get5", task(&delegatev1.GetSecretOp{Name: name})))
	force := true
	mustOK(t, "force delete", e.run(t, "t-force", task(&delegatev1.DeleteSecretOp{Name: name, ForceDeleteWithoutRecovery: &force})))
	if r := e.lastRequest(t, "DeleteSecret"); r.Params["ForceDeleteWithoutRecovery"] != true || param(r, "SecretId") != full || r.Params["RecoveryWindowInDays"] != nil {
		t.Errorf("force DeleteSecret params = %v, want SecretId %s and ForceDeleteWithoutRecovery without a window", r.Params, full)
	}
	wantCode(t, "get deleted", e.run(t, "t-get6", task(&delegatev1.GetSecretOp{Name: name})), delegatev1.Code_NOT_FOUND, `secret "app-db" not found`)
}

func stringify(v any) string { return fmt.Sprint(v) }
