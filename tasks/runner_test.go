package tasks_test

import (
	"context"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/rs/zerolog"

	"github.com/smdelegate/smdelegate/tasks"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// fakeSM is a hand-written SecretsManagerAPI whose behaviour each test sets
// through function fields; an unset field fails the call loudly.
type fakeSM struct {
	tasks.SecretsManagerAPI // nil: an unexpected method panics, which Run must absorb
	getSecretValue          func(context.Context, *secretsmanager.GetSecretValueInput) (*secretsmanager.GetSecretValueOutput, error)
}

func (f *fakeSM) GetSecretValue(ctx context.Context, in *secretsmanager.GetSecretValueInput, _ ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error) {
	return f.getSecretValue(ctx, in)
}

func fakeRunner(sm tasks.SecretsManagerAPI) *tasks.Runner {
	return tasks.NewRunner(tasks.RunnerOptions{
		Logger: zerolog.Nop(),
		Clients: tasks.ClientFactoryFunc(func(context.Context, *delegatev1.ConnectorSettings) (tasks.SecretsManagerAPI, error) {
			return sm, nil
		}),
	})
}

func TestRunNeverPanicsAndAlwaysAnswers(t *testing.T) {
	t.Parallel()
	conn := &delegatev1.ConnectorSettings{Id: "c", SecretNamePrefix: "p"}
	panicky := &fakeSM{getSecretValue: func(context.Context, *secretsmanager.GetSecretValueInput) (*secretsmanager.GetSecretValueOutput, error) {
		panic("PLANTED-panic-value")
	}}
	for _, tc := range []struct {
		name string
		id   string
		task *delegatev1.SecretTask
		sm   tasks.SecretsManagerAPI
		want delegatev1.Code
		msg  string
	}{
		{"nil task", "t", nil, &fakeSM{}, delegatev1.Code_INVALID_ARGUMENT, "task: is missing"},
		{"no connector", "t", &delegatev1.SecretTask{Op: &delegatev1.SecretTask_Get{Get: &delegatev1.GetSecretOp{Name: "x"}}}, &fakeSM{}, delegatev1.Code_INVALID_ARGUMENT, "connector: is missing"},
		{"no op", "t", &delegatev1.SecretTask{Connector: conn}, &fakeSM{}, delegatev1.Code_INVALID_ARGUMENT, "op: is missing or unknown"},
		{"panic in the client", "t", &delegatev1.SecretTask{Connector: conn, Op: &delegatev1.SecretTask_Get{Get: &delegatev1.GetSecretOp{Name: "x"}}}, panicky, delegatev1.Code_INTERNAL, "internal error"},
		{"unexpected method", "t", &delegatev1.SecretTask{Connector: conn, Op: &delegatev1.SecretTask_Describe{Describe: &delegatev1.DescribeSecretOp{Name: "x"}}}, &fakeSM{}, delegatev1.Code_INTERNAL, "internal error"},
		{"write without task id", "", &delegatev1.SecretTask{Connector: conn, Op: &delegatev1.SecretTask_Create{Create: &delegatev1.CreateSecretOp{Name: "x", Value: str("v")}}}, &fakeSM{}, delegatev1.Code_INVALID_ARGUMENT, "task_id: is required"},
		{"update with nothing", "t", &delegatev1.SecretTask{Connector: conn, Op: &delegatev1.SecretTask_Update{Update: &delegatev1.UpdateSecretOp{Name: "x"}}}, &fakeSM{}, delegatev1.Code_INVALID_ARGUMENT, "needs a value, a description or a kms_key_id"},
		{"list max results", "t", &delegatev1.SecretTask{Connector: conn, Op: &delegatev1.SecretTask_List{List: &delegatev1.ListSecretsOp{MaxResults: 101}}}, &fakeSM{}, delegatev1.Code_INVALID_ARGUMENT, "max_results: must be 1-100"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out := fakeRunner(tc.sm).Run(context.Background(), tc.id, tc.task)
			if out == nil {
				t.Fatal("Run returned nil")
			}
			if out.GetCode() != tc.want || !strings.Contains(out.GetMessage(), tc.msg) {
				t.Errorf("Run() = %v %q, want %v containing %q", out.GetCode(), out.GetMessage(), tc.want, tc.msg)
			}
			if strings.Contains(out.GetMessage(), "PLANTED") {
				t.Errorf("message %q holds the panic value", out.GetMessage())
			}
		})
	}
}

func TestAttemptFrom(t *testing.T) {
	t.Parallel()
	if got := tasks.AttemptFrom(context.Background()); got != 1 {
		t.Errorf("AttemptFrom(background) = %d, want 1", got)
	}
	if got := tasks.AttemptFrom(tasks.WithAttempt(context.Background(), 3)); got != 3 {
		t.Errorf("AttemptFrom(WithAttempt(3)) = %d, want 3", got)
	}
}
