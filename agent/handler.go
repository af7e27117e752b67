package agent

import (
	"context"
	"errors"
	"os"
	"time"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// SecretRunner runs secret tasks (tasks.Runner).
type SecretRunner interface {
	Run(ctx context.Context, t *delegatev1.Task, st *delegatev1.SecretTask) *delegatev1.Outcome
}

// TaskHandler is the agent's Handler: pings here, secret tasks to Secrets.
type TaskHandler struct {
	Name    string
	Version string
	// Secrets runs secret tasks; nil refuses them.
	Secrets SecretRunner
}

// Run dispatches on the payload type.
func (h *TaskHandler) Run(ctx context.Context, t *delegatev1.Task) *delegatev1.Outcome {
	switch p := t.GetPayload().GetOp().(type) {
	case *delegatev1.TaskPayload_Ping:
		return h.ping(ctx, p.Ping)
	case *delegatev1.TaskPayload_Secret:
		if h.Secrets == nil {
			return &delegatev1.Outcome{Code: delegatev1.Code_UNSUPPORTED, Message: "this delegate cannot run secret tasks"}
		}
		return h.Secrets.Run(ctx, t, p.Secret)
	}
	// Not the task's fault: the delegate does not implement the type.
	return &delegatev1.Outcome{Code: delegatev1.Code_UNSUPPORTED, Message: "this delegate does not know the task type; is it older than the manager?"}
}

func (h *TaskHandler) ping(ctx context.Context, p *delegatev1.PingTask) *delegatev1.Outcome {
	if d := p.GetSleep().AsDuration(); d > 0 {
		timer := time.NewTimer(d)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-ctx.Done():
			return ctxOutcome(ctx)
		}
	}
	host, _ := os.Hostname()
	return &delegatev1.Outcome{Body: &delegatev1.Outcome_Ping{Ping: &delegatev1.PingResult{
		DelegateName: h.Name, Version: h.Version, Hostname: host,
	}}}
}

// ctxOutcome is the outcome of a task whose context ended.
func ctxOutcome(ctx context.Context) *delegatev1.Outcome {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return &delegatev1.Outcome{Code: delegatev1.Code_TIMEOUT, Message: "the task's deadline passed"}
	}
	return &delegatev1.Outcome{Code: delegatev1.Code_CANCELLED, Message: "the task was cancelled"}
}
