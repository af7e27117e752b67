package agent

import (
	"testing"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// TestIssue10DelegateUnsupportedTask: a task this delegate cannot run (no
// secret runner, or a payload type it does not know) ends UNSUPPORTED,
// not INTERNAL or INVALID_ARGUMENT: nothing is wrong with the task.
func TestIssue10DelegateUnsupportedTask(t *testing.T) {
	t.Parallel()
	h := &TaskHandler{Name: "d"}
	for name, task := range map[string]*delegatev1.Task{
		"secret without a runner": {Id: "t1", Payload: &delegatev1.TaskPayload{Op: &delegatev1.TaskPayload_Secret{Secret: &delegatev1.SecretTask{}}}},
		"unknown payload":         {Id: "t2", Payload: &delegatev1.TaskPayload{}},
	} {
		if o := h.Run(t.Context(), task); o.GetCode() != delegatev1.Code_UNSUPPORTED {
			t.Errorf("%s: Run() = %v %q, want UNSUPPORTED", name, o.GetCode(), o.GetMessage())
		}
	}
}
