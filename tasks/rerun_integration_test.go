package tasks_test

import (
	"context"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/smdelegate/smdelegate/tasks"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// TestRerunIsIdempotent runs each write twice with the same task id, as a
// re-dispatch after a lost lease does, and counts the versions AWS holds.
func TestRerunIsIdempotent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	conn := e.connector(t, delegatev1.CredentialType_ACCESS_KEY)
	putConn := proto.Clone(conn).(*delegatev1.ConnectorSettings)
	putConn.UsePutSecretValue = true
	full := prefix + "/idem"
	versions := func() int {
		st, ok := e.emu.Secret(full)
		if !ok {
			t.Fatalf("secret %s missing", full)
		}
		return len(st.Versions)
	}
	twice := func(what, taskID string, task *delegatev1.SecretTask, wantVersions int) {
		t.Helper()
		for i := range 2 {
			ctx := tasks.WithAttempt(context.Background(), int32(i+1))
			if out := e.runCtx(ctx, t, taskID, task); out.GetCode() != delegatev1.Code_OK {
				t.Fatalf("%s run %d: %v %q", what, i+1, out.GetCode(), out.GetMessage())
			}
		}
		if n := versions(); n != wantVersions {
			t.Errorf("after %s twice: %d versions, want %d", what, n, wantVersions)
		}
	}
	twice("create", "idem-create", &delegatev1.SecretTask{Connector: conn,
		Op: &delegatev1.SecretTask_Create{Create: &delegatev1.CreateSecretOp{Name: "idem", Value: str("v1")}}}, 1)
	twice("update", "idem-update", &delegatev1.SecretTask{Connector: conn,
		Op: &delegatev1.SecretTask_Update{Update: &delegatev1.UpdateSecretOp{Name: "idem", Value: str("v2")}}}, 2)
	twice("put", "idem-put", &delegatev1.SecretTask{Connector: putConn,
		Op: &delegatev1.SecretTask_Update{Update: &delegatev1.UpdateSecretOp{Name: "idem", Value: str("v3")}}}, 3)
	twice("upsert", "idem-upsert", &delegatev1.SecretTask{Connector: conn,
		Op: &delegatev1.SecretTask_Upsert{Upsert: &delegatev1.UpsertSecretOp{Name: "idem", Value: str("v4")}}}, 4)
	if st, _ := e.emu.Secret(full); st.Versions[len(st.Versions)-1].SecretString != "v4" {
		t.Error("current version is not the last write")
	}
	// A delete re-run after the secret is gone succeeds on attempt 2.
	force := true
	del := &delegatev1.SecretTask{Connector: conn, Op: &delegatev1.SecretTask_Delete{Delete: &delegatev1.DeleteSecretOp{Name: "idem", ForceDeleteWithoutRecovery: &force}}}
	mustOK(t, "delete", e.run(t, "idem-delete", del))
	gone := &delegatev1.SecretTask{Connector: conn, Op: &delegatev1.SecretTask_Delete{Delete: &delegatev1.DeleteSecretOp{Name: "never-existed"}}}
	wantCode(t, "delete missing, attempt 1", e.run(t, "idem-gone", gone), delegatev1.Code_NOT_FOUND, "")
	mustOK(t, "delete missing, attempt 2", e.runCtx(tasks.WithAttempt(context.Background(), 2), t, "idem-gone", gone))
	// Windowed delete retried while the first attempt's schedule stands.
	e.emu.PutSecretDirect(prefix+"/sched", "v", managedTags)
	sched := &delegatev1.SecretTask{Connector: conn, Op: &delegatev1.SecretTask_Delete{Delete: &delegatev1.DeleteSecretOp{Name: "sched"}}}
	mustOK(t, "windowed delete", e.run(t, "idem-sched", sched))
	mustOK(t, "windowed delete, attempt 2", e.runCtx(tasks.WithAttempt(context.Background(), 2), t, "idem-sched", sched))
}
