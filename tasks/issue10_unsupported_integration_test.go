package tasks_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/smdelegate/smdelegate/internal/awsemu"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// issue10Value is a secret value the tasks below carry; an endpoint
// quotes it back in its error, and it must appear in no outcome and no
// log line.
const issue10Value = "PLANTEDxVALUEx0042xsecret"

// TestIssue10UnsupportedOperation: an endpoint that does not implement an
// operation (a third-party emulator, some VPC endpoints) answers
// InvalidAction, UnknownOperationException, NotImplemented or HTTP 501.
// Through the real SDK against awsemu, the task ends UNSUPPORTED (not
// retryable), its message names the operation and the AWS code, a warn
// line says so, and the value the task carries appears nowhere.
func TestIssue10UnsupportedOperation(t *testing.T) {
	t.Parallel()
	update := func(c *delegatev1.ConnectorSettings) *delegatev1.SecretTask {
		return &delegatev1.SecretTask{Connector: c, Op: &delegatev1.SecretTask_Update{Update: &delegatev1.UpdateSecretOp{Name: "x", Value: str(issue10Value)}}}
	}
	for _, tc := range []struct {
		name    string
		action  string // the emulator action the fault hits
		fault   awsemu.Fault
		task    func(c *delegatev1.ConnectorSettings) *delegatev1.SecretTask
		wantMsg []string
	}{
		{name: "InvalidAction on get", action: "GetSecretValue", fault: awsemu.Fault{Code: "InvalidAction"},
			task:    func(c *delegatev1.ConnectorSettings) *delegatev1.SecretTask { return getTask(c, "x") },
			wantMsg: []string{"secretsmanager:GetSecretValue", "InvalidAction"}},
		{name: "UnknownOperationException on create", action: "CreateSecret", fault: awsemu.Fault{Code: "UnknownOperationException"},
			task: func(c *delegatev1.ConnectorSettings) *delegatev1.SecretTask {
				return createTask(c, "new", issue10Value)
			},
			wantMsg: []string{"secretsmanager:CreateSecret", "UnknownOperationException"}},
		{name: "NotImplemented 501 on versions", action: "ListSecretVersionIds", fault: awsemu.Fault{Code: "NotImplemented"},
			task: func(c *delegatev1.ConnectorSettings) *delegatev1.SecretTask {
				return &delegatev1.SecretTask{Connector: c, Op: &delegatev1.SecretTask_Versions{Versions: &delegatev1.ListSecretVersionsOp{Name: "x"}}}
			},
			wantMsg: []string{"secretsmanager:ListSecretVersionIds", "NotImplemented"}},
		{name: "an emulator's 501 InternalFailure on describe", action: "DescribeSecret",
			fault: awsemu.Fault{Code: "InternalFailure", Status: http.StatusNotImplemented, Message: "API action 'DescribeSecret' for service 'secretsmanager' not yet implemented"},
			task: func(c *delegatev1.ConnectorSettings) *delegatev1.SecretTask {
				return &delegatev1.SecretTask{Connector: c, Op: &delegatev1.SecretTask_Describe{Describe: &delegatev1.DescribeSecretOp{Name: "x"}}}
			},
			wantMsg: []string{"secretsmanager:DescribeSecret", "InternalFailure", "501"}},
		{name: "the endpoint quotes the value back", action: "UpdateSecret",
			fault:   awsemu.Fault{Code: "UnknownOperationException", Message: "cannot store " + issue10Value + " here"},
			task:    update,
			wantMsg: []string{"secretsmanager:UpdateSecret", "UnknownOperationException"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{maxAttempts: 1})
			e.emu.PutSecretDirect(prefix+"/x", "old", managedTags)
			conn := e.connector(t, delegatev1.CredentialType_ACCESS_KEY)
			e.emu.InjectFault("secretsmanager."+tc.action, 1, tc.fault)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			out := e.runCtx(ctx, t, "task-"+tc.name, tc.task(conn))
			if out.GetCode() != delegatev1.Code_UNSUPPORTED || out.GetRetryable() {
				t.Errorf("outcome %v retryable=%v %q, want UNSUPPORTED, not retryable", out.GetCode(), out.GetRetryable(), out.GetMessage())
			}
			for _, w := range tc.wantMsg {
				if !strings.Contains(out.GetMessage(), w) {
					t.Errorf("message %q, want it to name %q", out.GetMessage(), w)
				}
			}
			wantWarn(t, e.logs.String(), tc.wantMsg[:2]...)
			noPlanted(t, out, e.logs.String())
		})
	}
}

// TestIssue10UnknownAWSCodeNamed: an AWS error code smdelegate does not
// classify stays INTERNAL, but the message names the operation and the
// code (codes are not secret) and a warn line is written; the endpoint's
// message, which may quote what the task sent, stays out, and so does a
// code that quotes the task's value.
func TestIssue10UnknownAWSCodeNamed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		fault    awsemu.Fault
		wantMsg  []string
		withheld bool
	}{
		{name: "new code", fault: awsemu.Fault{Code: "BrandNewException", Message: "refused " + issue10Value},
			wantMsg: []string{"secretsmanager:UpdateSecret", "BrandNewException"}},
		{name: "code quoting the value", fault: awsemu.Fault{Code: issue10Value, Message: "x"},
			wantMsg: []string{"secretsmanager:UpdateSecret"}, withheld: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{maxAttempts: 1})
			e.emu.PutSecretDirect(prefix+"/x", "old", managedTags)
			conn := e.connector(t, delegatev1.CredentialType_ACCESS_KEY)
			e.emu.InjectFault("secretsmanager.UpdateSecret", 1, tc.fault)
			out := e.run(t, "task-"+tc.name, &delegatev1.SecretTask{Connector: conn,
				Op: &delegatev1.SecretTask_Update{Update: &delegatev1.UpdateSecretOp{Name: "x", Value: str(issue10Value)}}})
			if out.GetCode() != delegatev1.Code_INTERNAL || out.GetRetryable() {
				t.Errorf("outcome %v retryable=%v %q, want INTERNAL, not retryable", out.GetCode(), out.GetRetryable(), out.GetMessage())
			}
			for _, w := range tc.wantMsg {
				if !strings.Contains(out.GetMessage(), w) {
					t.Errorf("message %q, want it to name %q", out.GetMessage(), w)
				}
			}
			if tc.withheld && !strings.Contains(out.GetMessage(), "withheld") {
				t.Errorf("message %q, want it to say the code was withheld", out.GetMessage())
			}
			wantWarn(t, e.logs.String(), tc.wantMsg...)
			noPlanted(t, out, e.logs.String())
		})
	}
}

// wantWarn fails unless logs (JSON lines) hold a warn line that names
// every one of names.
func wantWarn(t *testing.T, logs string, names ...string) {
	t.Helper()
	for line := range strings.Lines(logs) {
		var l struct {
			Level string `json:"level"`
		}
		if json.Unmarshal([]byte(line), &l) != nil || l.Level != "warn" {
			continue
		}
		all := true
		for _, n := range names {
			all = all && strings.Contains(line, n)
		}
		if all {
			return
		}
	}
	t.Errorf("no warn line naming %q in the log:\n%s", names, logs)
}

func noPlanted(t *testing.T, out *delegatev1.Outcome, logs string) {
	t.Helper()
	if strings.Contains(out.GetMessage(), issue10Value) {
		t.Errorf("outcome message %q holds the task's value", out.GetMessage())
	}
	if strings.Contains(logs, issue10Value) {
		t.Errorf("the log holds the task's value:\n%s", logs)
	}
}
