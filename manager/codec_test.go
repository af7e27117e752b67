package manager

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// TestItem10KeepingTextDecodesLikeProto: on valid input the lenient decode
// gives exactly what proto.Unmarshal gives (scalars, oneofs, lists, maps
// of strings and of messages, nested and repeated messages), so that the
// codec changes nothing but the answer to text that is not UTF-8; and on
// such text notText names the field, however deep.
func TestItem10KeepingTextDecodesLikeProto(t *testing.T) {
	t.Parallel()
	msgs := []proto.Message{
		&delegatev1.SecretRequest{Connector: &delegatev1.ConnectorRef{Scope: &delegatev1.Scope{Account: "a", Org: "o"}, Identifier: "c"},
			Async: true, RequestId: "r-1", Op: &delegatev1.SecretRequest_Create{Create: &delegatev1.CreateSecretOp{
				Name: "db", Value: &delegatev1.SecretValue{Value: &delegatev1.SecretValue_BinaryValue{BinaryValue: []byte{0, 0xff}}},
				Tags: map[string]string{"a": "1", "b": ""}, Generate: &delegatev1.GeneratePassword{Length: 12, RequireEachIncludedType: proto.Bool(false)}}}},
		&delegatev1.TagDelegateRequest{Name: "d", Add: []string{"x", "", "y"}, Remove: []string{"z"}},
		&delegatev1.AgentMessage{Msg: &delegatev1.AgentMessage_Result{Result: &delegatev1.TaskResult{TaskId: "t", LeaseId: "l",
			Outcome: &delegatev1.Outcome{Code: delegatev1.Code_NOT_FOUND, Retryable: true, Body: &delegatev1.Outcome_Secret{Secret: &delegatev1.SecretResult{
				Secrets: []*delegatev1.SecretMeta{{Name: "s1", CreatedDate: timestamppb.Now(),
					VersionStages: map[string]*delegatev1.VersionStages{"v1": {Stages: []string{"AWSCURRENT", "x"}}, "v2": {}}}, {Name: "s2"}},
			}}}}}},
	}
	for _, m := range msgs {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		got := m.ProtoReflect().New()
		if err := unmarshalKeepingText(b, got); err != nil {
			t.Fatalf("unmarshalKeepingText(%T) = %v", m, err)
		}
		if !proto.Equal(got.Interface(), m) {
			t.Errorf("unmarshalKeepingText(%T) = %v, want %v", m, got.Interface(), m)
		}
		if f := notText(got, ""); f != "" {
			t.Errorf("notText(valid %T) = %q, want none", m, f)
		}
	}
	deep := &delegatev1.AgentMessage{Msg: &delegatev1.AgentMessage_Result{Result: &delegatev1.TaskResult{Outcome: &delegatev1.Outcome{
		Body: &delegatev1.Outcome_Secret{Secret: &delegatev1.SecretResult{Secrets: []*delegatev1.SecretMeta{{}, {
			VersionStages: map[string]*delegatev1.VersionStages{"v": {Stages: []string{"ok", "bad\xff"}}}}}}}}}}}
	if f, want := notText(deep.ProtoReflect(), ""), `result.outcome.secret.secrets[1].version_stages["v"].stages[1]`; f != want {
		t.Errorf("notText(deep) = %q, want %q", f, want)
	}
}
