package manager_test

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/smdelegate/smdelegate/internal/awsemu"
	"github.com/smdelegate/smdelegate/internal/ids"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// TestGeneratedValueOnlyToTheWaitingCaller runs the issue-6 operations
// through the manager API: a generated password is returned only to the
// caller that waits for a create with return_value, never stored (not in
// the store file, not in GetTask or ListTasks, not in a log); an async
// request for it is refused; tag and versions run as a mutation and a
// read; and a change to a secret smdelegate does not manage fails
// INVALID_ARGUMENT with nothing changed.
func TestGeneratedValueOnlyToTheWaitingCaller(t *testing.T) {
	t.Parallel()
	keyID, keySecret := "AKIAGEN"+ids.Random()[:8], "gen-cred-"+ids.Random()
	emu, emuURL := mustEmu(t, awsemu.Options{Region: emuRegion, Credentials: map[string]string{keyID: keySecret}})
	dir := t.TempDir()
	log, logs := bufferLogger(t)
	srv := mustManagerAt(t, dir, log, nil)
	agentLog, agentLogs := bufferLogger(t)
	startSecretAgent(t, srv.Addr(), "gen-agent", nil, agentLog, nil)
	c, ctx := operator(t, srv.Addr())
	waitDelegates(t, c, ctx, 1)
	if _, err := c.PutCredential(ctx, &delegatev1.PutCredentialRequest{Name: "k", Value: []byte(keySecret)}); err != nil {
		t.Fatalf("PutCredential: %v", err)
	}
	if _, err := c.CreateConnector(ctx, &delegatev1.CreateConnectorRequest{Connector: &delegatev1.Connector{
		Identifier: "gen", Name: "gen", CredentialType: delegatev1.CredentialType_ACCESS_KEY,
		AccessKeyId: keyID, SecretAccessKey: "builtin:k", Region: emuRegion, EndpointUrl: emuURL,
		SecretNamePrefix: "app", ManagedByTagKey: "owner",
	}}); err != nil {
		t.Fatalf("CreateConnector: %v", err)
	}
	ref := &delegatev1.ConnectorRef{Identifier: "gen"}
	create := func(name string, show, async bool) (*delegatev1.TaskInfo, error) {
		return c.Secret(ctx, &delegatev1.SecretRequest{Connector: ref, Async: async,
			Op: &delegatev1.SecretRequest_Create{Create: &delegatev1.CreateSecretOp{Name: name, ReturnValue: show,
				Generate: &delegatev1.GeneratePassword{Length: 48}}}})
	}
	stored := func(name string) string {
		st, ok := emu.Secret("app/" + name)
		if !ok || len(st.Versions) != 1 {
			t.Fatalf("secret app/%s: %+v, %v; want one version", name, st, ok)
		}
		if st.Tags["owner"] != "smdelegate" {
			t.Errorf("secret app/%s tags = %v, want owner=smdelegate (the connector's key)", name, st.Tags)
		}
		return st.Versions[0].SecretString
	}

	shown, err := create("shown", true, false)
	if err != nil || shown.GetOutcome().GetCode() != delegatev1.Code_OK {
		t.Fatalf("create shown = %v, %v", shown, err)
	}
	value := stored("shown")
	if len(value) != 48 || shown.GetOutcome().GetSecret().GetValue().GetStringValue() != value {
		t.Fatalf("create with return_value returned %d characters, not the %d-character stored value", len(shown.GetOutcome().GetSecret().GetValue().GetStringValue()), len(value))
	}
	hidden, err := create("hidden", false, false)
	if err != nil || hidden.GetOutcome().GetCode() != delegatev1.Code_OK || hidden.GetOutcome().GetSecret().GetValue() != nil {
		t.Fatalf("create without return_value = %v, %v; want OK without a value", hidden, err)
	}
	hiddenValue := stored("hidden")
	if _, err := create("async", true, true); status.Code(err) != codes.InvalidArgument {
		t.Errorf("async create with return_value: %v, want InvalidArgument", err)
	}
	if _, ok := emu.Secret("app/async"); ok {
		t.Error("the refused async create ran")
	}

	// The finished task, read back, holds no value.
	got, err := c.GetTask(ctx, &delegatev1.GetTaskRequest{Id: shown.GetId()})
	if err != nil || got.GetState() != delegatev1.TaskState_SUCCEEDED || got.GetOutcome().GetSecret().GetName() != "shown" {
		t.Fatalf("GetTask = %v, %v", got, err)
	}
	if got.GetOutcome().GetSecret().GetValue() != nil {
		t.Error("GetTask of the create returns the generated value")
	}
	list, err := c.ListTasks(ctx, &delegatev1.ListTasksRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ti := range list.GetTasks() {
		if ti.GetOutcome().GetSecret().GetValue() != nil {
			t.Errorf("ListTasks: task %s (%s) holds a value", ti.GetId(), ti.GetKind())
		}
	}

	// Tag (a stored mutation) and versions (a sync read).
	tagged, err := c.Secret(ctx, &delegatev1.SecretRequest{Connector: ref, Op: &delegatev1.SecretRequest_Tag{Tag: &delegatev1.TagSecretOp{
		Name: "shown", Add: map[string]string{"team": "a"}}}})
	if err != nil || tagged.GetOutcome().GetCode() != delegatev1.Code_OK || tagged.GetKind() != "secret.tag" || !tagged.GetAsync() {
		t.Fatalf("Secret(tag) = %v, %v", tagged, err)
	}
	if st, _ := emu.Secret("app/shown"); st.Tags["team"] != "a" {
		t.Errorf("tags after tag = %v", st.Tags)
	}
	vers, err := c.Secret(ctx, &delegatev1.SecretRequest{Connector: ref, Op: &delegatev1.SecretRequest_Versions{Versions: &delegatev1.ListSecretVersionsOp{Name: "shown"}}})
	if err != nil || vers.GetKind() != "secret.versions" || vers.GetAsync() || len(vers.GetOutcome().GetSecret().GetVersions()) != 1 {
		t.Fatalf("Secret(versions) = %v, %v", vers, err)
	}
	if v := vers.GetOutcome().GetSecret().GetVersions()[0]; v.GetVersionId() != shown.GetOutcome().GetSecret().GetVersionId() || len(v.GetStages()) != 1 {
		t.Errorf("versions = %v, want the create's version, AWSCURRENT", v)
	}

	// A secret made outside smdelegate: refused, unchanged.
	emu.PutSecretDirect("app/theirs", "their-value", map[string]string{"managed-by": "smdelegate"}) // not this connector's key
	before, _ := emu.Secret("app/theirs")
	refused, err := c.Secret(ctx, &delegatev1.SecretRequest{Connector: ref, Op: &delegatev1.SecretRequest_Delete{Delete: &delegatev1.DeleteSecretOp{Name: "theirs"}}})
	if err != nil || refused.GetState() != delegatev1.TaskState_FAILED || refused.GetOutcome().GetCode() != delegatev1.Code_INVALID_ARGUMENT {
		t.Fatalf("delete of an unmanaged secret = %v, %v; want FAILED INVALID_ARGUMENT", refused, err)
	}
	if after, _ := emu.Secret("app/theirs"); !after.DeletedDate.IsZero() || !after.LastChangedDate.Equal(before.LastChangedDate) {
		t.Error("the refused delete changed the secret")
	}

	time.Sleep(50 * time.Millisecond) // let the last log lines land
	planted := map[string]string{"shown generated value": value, "hidden generated value": hiddenValue}
	raw := readStore(t, srv, dir)
	assertPresent(t, "the store file", raw, shown.GetId(), hidden.GetId())
	assertAbsent(t, "the store file", raw, planted)
	assertAbsent(t, "the manager's log", logs.Bytes(), planted)
	assertAbsent(t, "the agent's log", agentLogs.Bytes(), planted)
}
