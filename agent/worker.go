package agent

import (
	"context"
	"fmt"
	"runtime/debug"
	"time"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// start runs a task pushed by the manager. The manager sends no more
// tasks than the credit we granted, so no local queue is needed.
func (a *Agent) start(t *delegatev1.Task) {
	a.mu.Lock()
	if r, dup := a.running[t.GetId()]; dup {
		// The same task again under a new lease (ours expired meanwhile):
		// keep running it and report under the newest lease. The manager
		// spent a credit on this dispatch that no new run uses: give it back.
		r.leaseID = t.GetLeaseId()
		r.renewed = time.Now()
		if a.cur != nil {
			a.cur.push(&delegatev1.AgentMessage{Msg: &delegatev1.AgentMessage_Credit{Credit: &delegatev1.Credit{Credits: 1}}})
		}
		a.mu.Unlock()
		return
	}
	ctx, cancel := context.WithCancel(a.taskCtx)
	if dl := t.GetDeadline(); dl != nil {
		ctx, cancel = context.WithDeadline(a.taskCtx, dl.AsTime())
	}
	r := &run{leaseID: t.GetLeaseId(), cancel: cancel, renewed: time.Now()}
	a.running[t.GetId()] = r
	a.mu.Unlock()

	go func() {
		defer cancel()
		started := time.Now()
		o := a.runSafely(ctx, t)
		a.mu.Lock()
		res := &delegatev1.TaskResult{TaskId: t.GetId(), LeaseId: r.leaseID, Outcome: o}
		if a.running[t.GetId()] == r { // a fenced run was taken out already
			delete(a.running, t.GetId())
		}
		// A fenced run's failure is dropped: it is most likely the fence's
		// own cancel, and the manager runs the task again once the lease
		// lapses there (fence.go). A success is reported: the change was
		// made, and the manager takes it if the lease is still current.
		report := !r.fenced || o.GetCode() == delegatev1.Code_OK
		if report {
			a.pending[t.GetId()] = res
		}
		if a.cur != nil {
			if report {
				a.cur.push(&delegatev1.AgentMessage{Msg: &delegatev1.AgentMessage_Result{Result: res}})
			}
			a.cur.push(&delegatev1.AgentMessage{Msg: &delegatev1.AgentMessage_Credit{Credit: &delegatev1.Credit{Credits: 1}}})
		}
		a.notifyLocked()
		a.mu.Unlock()
		if !report {
			a.log.Info().Str("task_id", t.GetId()).Str("code", o.GetCode().String()).
				Msg("fenced task ended; its result is not reported (the manager runs it again)")
		}
		a.log.Debug().Str("task_id", t.GetId()).Int32("attempt", t.GetAttempt()).Str("code", o.GetCode().String()).
			Dur("took", time.Since(started)).Msg("task finished")
	}()
}

// runSafely runs the handler, turning a panic into an INTERNAL outcome.
func (a *Agent) runSafely(ctx context.Context, t *delegatev1.Task) (o *delegatev1.Outcome) {
	defer func() {
		if p := recover(); p != nil {
			a.log.Error().Str("task_id", t.GetId()).Str("panic", fmt.Sprint(p)).Bytes("stack", debug.Stack()).Msg("task handler panicked")
			o = &delegatev1.Outcome{Code: delegatev1.Code_INTERNAL, Message: "the delegate failed while running the task (see its log)"}
		}
	}()
	o = a.handler.Run(ctx, t)
	if o == nil {
		o = &delegatev1.Outcome{Code: delegatev1.Code_INTERNAL, Message: "the task handler returned no outcome"}
	}
	return o
}

// cancelTask cancels a running task if the lease matches.
func (a *Agent) cancelTask(c *delegatev1.Cancel) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if r := a.running[c.GetTaskId()]; r != nil && (c.GetLeaseId() == "" || r.leaseID == c.GetLeaseId()) {
		a.log.Info().Str("task_id", c.GetTaskId()).Str("reason", c.GetReason()).Msg("manager cancelled task")
		r.cancel()
	}
}

// ack forgets a result the manager has recorded (or discarded as stale).
func (a *Agent) ack(ack *delegatev1.ResultAck) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p := a.pending[ack.GetTaskId()]; p != nil && p.GetLeaseId() == ack.GetLeaseId() {
		delete(a.pending, ack.GetTaskId())
		if !ack.GetAccepted() {
			a.log.Info().Str("task_id", ack.GetTaskId()).Msg("manager discarded a stale result")
		}
		a.notifyLocked()
	}
}
