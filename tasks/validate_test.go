package tasks

import (
	"context"
	"strings"
	"testing"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// TestItem10ValidateIsRunsRule: for every kind of malformed task,
// Validate (what the manager calls before it stores a task) and Run (what
// a delegate does) refuse with the same INVALID_ARGUMENT message naming
// the same field, and Run refuses before it asks for an AWS client; a
// valid task passes Validate.
func TestItem10ValidateIsRunsRule(t *testing.T) {
	t.Parallel()
	v := func(s string) *delegatev1.SecretValue {
		return &delegatev1.SecretValue{Value: &delegatev1.SecretValue_StringValue{StringValue: s}}
	}
	conn := &delegatev1.ConnectorSettings{Id: "c", SecretNamePrefix: strings.Repeat("p", 500), ManagedByTagKey: "owner"}
	tests := []struct {
		name  string
		conn  *delegatev1.ConnectorSettings
		task  *delegatev1.SecretTask
		field string // "" : valid
	}{
		{"create name charset", nil, &delegatev1.SecretTask{Op: &delegatev1.SecretTask_Create{Create: &delegatev1.CreateSecretOp{Name: "pay/ments db", Value: v("x")}}}, "name"},
		{"create name with the prefix too long", conn, &delegatev1.SecretTask{Op: &delegatev1.SecretTask_Create{Create: &delegatev1.CreateSecretOp{Name: strings.Repeat("n", 20), Value: v("x")}}}, "name"},
		{"create value missing", nil, &delegatev1.SecretTask{Op: &delegatev1.SecretTask_Create{Create: &delegatev1.CreateSecretOp{Name: "db"}}}, "value"},
		{"create value too big", nil, &delegatev1.SecretTask{Op: &delegatev1.SecretTask_Create{Create: &delegatev1.CreateSecretOp{Name: "db", Value: v(strings.Repeat("v", MaxValueBytes+1))}}}, "value"},
		{"create empty binary", nil, &delegatev1.SecretTask{Op: &delegatev1.SecretTask_Create{Create: &delegatev1.CreateSecretOp{Name: "db",
			Value: &delegatev1.SecretValue{Value: &delegatev1.SecretValue_BinaryValue{}}}}}, "value"},
		{"create description", nil, &delegatev1.SecretTask{Op: &delegatev1.SecretTask_Create{Create: &delegatev1.CreateSecretOp{Name: "db", Value: v("x"), Description: strings.Repeat("d", MaxDescriptionLen+1)}}}, "description"},
		{"create tag key", nil, &delegatev1.SecretTask{Op: &delegatev1.SecretTask_Create{Create: &delegatev1.CreateSecretOp{Name: "db", Value: v("x"), Tags: map[string]string{"aws:x": "1"}}}}, `tags["aws:x"]`},
		{"create managed-by tag", conn, &delegatev1.SecretTask{Op: &delegatev1.SecretTask_Create{Create: &delegatev1.CreateSecretOp{Name: "db", Value: v("x"), Tags: map[string]string{"owner": "me"}}}}, `tags["owner"]`},
		{"create return_value without generate", nil, &delegatev1.SecretTask{Op: &delegatev1.SecretTask_Create{Create: &delegatev1.CreateSecretOp{Name: "db", Value: v("x"), ReturnValue: true}}}, "return_value"},
		{"create generate length", nil, &delegatev1.SecretTask{Op: &delegatev1.SecretTask_Create{Create: &delegatev1.CreateSecretOp{Name: "db", Generate: &delegatev1.GeneratePassword{Length: 5000}}}}, "generate.length"},
		{"upsert kms", nil, &delegatev1.SecretTask{Op: &delegatev1.SecretTask_Upsert{Upsert: &delegatev1.UpsertSecretOp{Name: "db", Value: v("x"), KmsKeyId: strings.Repeat("k", MaxKMSKeyIDLen+1)}}}, "kms_key_id"},
		{"upsert unmanaged", nil, &delegatev1.SecretTask{Op: &delegatev1.SecretTask_Upsert{Upsert: &delegatev1.UpsertSecretOp{Name: "db", Value: v("x"), Unmanaged: 7}}}, "unmanaged"},
		{"update nothing", nil, &delegatev1.SecretTask{Op: &delegatev1.SecretTask_Update{Update: &delegatev1.UpdateSecretOp{Name: "db"}}}, "value"},
		{"get version id", nil, &delegatev1.SecretTask{Op: &delegatev1.SecretTask_Get{Get: &delegatev1.GetSecretOp{Name: "db", VersionId: "short"}}}, "version_id"},
		{"get empty JSON key", nil, &delegatev1.SecretTask{Op: &delegatev1.SecretTask_Get{Get: &delegatev1.GetSecretOp{Name: "db#"}}}, "name"},
		{"delete window", nil, &delegatev1.SecretTask{Op: &delegatev1.SecretTask_Delete{Delete: &delegatev1.DeleteSecretOp{Name: "db", RecoveryWindowDays: 3}}}, "recovery_window_days"},
		{"restore name", nil, &delegatev1.SecretTask{Op: &delegatev1.SecretTask_Restore{Restore: &delegatev1.RestoreSecretOp{Name: ""}}}, "name"},
		{"list max_results", nil, &delegatev1.SecretTask{Op: &delegatev1.SecretTask_List{List: &delegatev1.ListSecretsOp{MaxResults: 101}}}, "max_results"},
		{"describe name", nil, &delegatev1.SecretTask{Op: &delegatev1.SecretTask_Describe{Describe: &delegatev1.DescribeSecretOp{Name: "a b"}}}, "name"},
		{"tag nothing", nil, &delegatev1.SecretTask{Op: &delegatev1.SecretTask_Tag{Tag: &delegatev1.TagSecretOp{Name: "db"}}}, "add"},
		{"tag remove key", nil, &delegatev1.SecretTask{Op: &delegatev1.SecretTask_Tag{Tag: &delegatev1.TagSecretOp{Name: "db", Remove: []string{""}}}}, "remove[0]"},
		{"versions max_results", nil, &delegatev1.SecretTask{Op: &delegatev1.SecretTask_Versions{Versions: &delegatev1.ListSecretVersionsOp{Name: "db", MaxResults: -1}}}, "max_results"},
		{"no op", nil, &delegatev1.SecretTask{}, "op"},

		{"valid create", conn, &delegatev1.SecretTask{Op: &delegatev1.SecretTask_Create{Create: &delegatev1.CreateSecretOp{Name: "db", Value: v("x"), Tags: map[string]string{"team": "pay"}}}}, ""},
		{"valid generate", nil, &delegatev1.SecretTask{Op: &delegatev1.SecretTask_Create{Create: &delegatev1.CreateSecretOp{Name: "db", Generate: &delegatev1.GeneratePassword{}, ReturnValue: true}}}, ""},
		{"valid delete", nil, &delegatev1.SecretTask{Op: &delegatev1.SecretTask_Delete{Delete: &delegatev1.DeleteSecretOp{Name: "db"}}}, ""},
		{"valid test", nil, &delegatev1.SecretTask{Op: &delegatev1.SecretTask_TestConnection{TestConnection: &delegatev1.TestConnectionOp{}}}, ""},
	}
	noClient := ClientFactoryFunc(func(context.Context, *delegatev1.ConnectorSettings) (SecretsManagerAPI, error) {
		t.Errorf("Run asked for an AWS client for a task Validate refuses")
		return nil, ErrInternal
	})
	r := NewRunner(RunnerOptions{Clients: noClient})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			task := tt.task
			task.Connector = tt.conn
			err := Validate(task)
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || err.Code != delegatev1.Code_INVALID_ARGUMENT || err.Field != tt.field || err.Op == "" {
				t.Fatalf("Validate() = %+v, want INVALID_ARGUMENT on field %q with its op", err, tt.field)
			}
			if !strings.HasPrefix(err.Msg, tt.field+": ") || err.Rule() == err.Msg {
				t.Errorf("Validate() message %q does not start with the field %q", err.Msg, tt.field)
			}
			if task.Connector == nil {
				task.Connector = &delegatev1.ConnectorSettings{Id: "c"}
			}
			out := r.Run(context.Background(), "t-1", task)
			if out.GetCode() != delegatev1.Code_INVALID_ARGUMENT || out.GetMessage() != err.Error() {
				t.Errorf("Run() = %s %q, Validate() = %q: want the same refusal", out.GetCode(), out.GetMessage(), err.Error())
			}
		})
	}
}
