package dispatch

import (
	"context"
	"sync"
	"time"

	"github.com/smdelegate/smdelegate/internal/ids"
	"github.com/smdelegate/smdelegate/internal/outbox"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// PlatformTag is the selector of tasks the manager runs itself (OIDC
// connectors in platform connectivity mode). Tags and names starting with
// "smd:" are reserved: no agent may declare them.
const PlatformTag = "smd:platform"

// TaskRunner runs a task in the manager's own process (the same Handler
// an agent uses).
type TaskRunner interface {
	Run(ctx context.Context, t *delegatev1.Task) *delegatev1.Outcome
}

// startPlatform connects an in-process delegate tagged PlatformTag, so
// platform tasks get the same queueing, leases, deadlines and persistence
// as any other. It runs until ctx is done. It owns its goroutines (the
// lease renewal, the consumer of its outbox, one per running task): the
// returned wait joins them all once ctx is done, for the caller to call
// before it closes the store.
//
// ctx ending is the manager stopping: a task it cuts short reports no
// result (a task's own deadline or a Cancel ends only its own context).
// It stays unfinished in the store, like an agent's task, and the next
// start recovers it: the manager's shutdown is not the task's failure.
func (d *Dispatcher) startPlatform(ctx context.Context, r TaskRunner, capacity int) (wait func()) {
	// Unbounded: its consumer below never blocks (it starts each task).
	out := outbox.New[*delegatev1.ManagerMessage](0)
	now := d.now()
	dg := &delegate{
		id: ids.Random(), name: PlatformTag, hostname: "manager", version: "manager",
		tags: newTagSet([]string{PlatformTag}), capacity: capacity, credit: capacity, kicked: make(chan struct{}), evicted: make(chan struct{}),
		running: map[string]*task{}, since: now, lastHeard: now, out: out, internal: true,
	}
	d.mu.Lock()
	d.delegates[dg.name] = dg
	d.joinPoolsLocked(dg)
	d.mu.Unlock()

	var mu sync.Mutex // guards cancels
	cancels := map[string]context.CancelFunc{}
	// wg counts the goroutines below. The consumer adds each task's
	// goroutine while it is counted itself, so no Add follows a Wait that
	// could have returned.
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		// In-process tasks cannot lose their delegate: keep leases fresh.
		renew := time.NewTicker(d.cfg.HeartbeatInterval.D())
		defer renew.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-renew.C:
			}
			d.mu.Lock()
			running := make([]*delegatev1.RunningTask, 0, len(dg.running))
			for id, t := range dg.running {
				running = append(running, &delegatev1.RunningTask{TaskId: id, LeaseId: t.leaseID})
			}
			d.mu.Unlock()
			d.heartbeat(dg, 0, running)
		}
	}()
	go func() {
		defer wg.Done()
		defer out.Close()
		var buf []*delegatev1.ManagerMessage
		for {
			if buf = out.Take(ctx, buf); buf == nil {
				return
			}
			for _, m := range buf {
				switch msg := m.Msg.(type) {
				case *delegatev1.ManagerMessage_Task:
					t := msg.Task
					tctx, cancel := context.WithDeadline(ctx, t.GetDeadline().AsTime())
					mu.Lock()
					cancels[t.GetId()] = cancel
					mu.Unlock()
					wg.Add(1)
					go func() {
						defer wg.Done()
						o := r.Run(tctx, t)
						cancel()
						mu.Lock()
						delete(cancels, t.GetId())
						mu.Unlock()
						if ctx.Err() != nil {
							return // cut short by the shutdown: recovered at the next start
						}
						d.result(dg, &delegatev1.TaskResult{TaskId: t.GetId(), LeaseId: t.GetLeaseId(), Outcome: o})
						d.credit(dg, 1)
					}()
				case *delegatev1.ManagerMessage_Cancel:
					mu.Lock()
					if c := cancels[msg.Cancel.GetTaskId()]; c != nil {
						c()
					}
					mu.Unlock()
				}
			}
		}
	}()
	return wg.Wait
}
