package dispatch

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/smdelegate/smdelegate/internal/ids"
	"github.com/smdelegate/smdelegate/manager/scopes"
	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// Submission: a task enters the dispatcher (Submit, taskview.go): checked
// against its scope's limits, resolved (sync) or sealed and stored (async),
// then admitted to its queue and order chain and dispatched if it can be.

// SubmitRequest is a task to run.
type SubmitRequest struct {
	Kind      string
	Selectors []string
	// Scope confines the task to delegates serving it (zero: any). A
	// secret task's scope is always its connector's, whatever is set here.
	Scope   store.Scope
	Payload *delegatev1.TaskPayload
	// Async tasks are persisted before Submit returns and survive manager
	// restarts; sync tasks live only in memory while the caller waits.
	Async bool
	// OrderKey, on an async task, names the secret it changes (order.go):
	// it runs only once the tasks submitted before it with the same key
	// are final. Sync tasks ignore it.
	OrderKey string
	// Request, when its ID is set, makes an async submission idempotent:
	// it is stored with the task, and a submission with the same Owner
	// and ID gets the task the first one made (if the Hash is the same)
	// or a RequestReusedError. Sync tasks ignore it.
	Request store.Request

	// forwardedID is set on a sync task another replica forwarded
	// (RunForwarded): it runs under that id, here, never forwarded again.
	forwardedID string
}

// submit is Submit, returning the task itself (for the dispatcher and its
// tests).
func (d *Dispatcher) submit(ctx context.Context, req SubmitRequest) (*task, error) {
	now := d.now()
	id := req.forwardedID
	if id == "" {
		id = ids.New()
	}
	t := &task{
		id:          id,
		kind:        req.Kind,
		selectors:   normalizeTags(req.Selectors),
		scope:       taskScope(req.Scope, req.Payload),
		payload:     req.Payload,
		async:       req.Async,
		state:       store.StateQueued,
		maxAttempts: d.cfg.MaxAttempts,
		createdAt:   now,
		updatedAt:   now,
		deadline:    now.Add(d.cfg.TaskDeadline.D()),
		changed:     make(chan struct{}),
		done:        make(chan struct{}),
	}
	t.key = matchKey(t.scope, t.selectors)
	if req.Async { // only stored tasks are ordered (order.go)
		t.orderKey = req.OrderKey
	}
	t.size = proto.Size(req.Payload)
	if req.forwardedID != "" {
		// Reserved by the replica that forwarded it: counted, never refused.
		d.limits.add(t.scope, t.size)
	} else if err := d.limits.reserve(ctx, t.scope, t.size); err != nil {
		return nil, err
	}
	held := true // the reservation, until the task is in memory
	defer func() {
		if held {
			d.limits.release(t.scope, t.size)
		}
	}()
	if !req.Async && d.fwd != nil {
		d.mu.Lock()
		targets := d.forwardTargetsLocked(t, req.forwardedID != "")
		d.mu.Unlock()
		if len(targets) > 0 {
			// No local delegate is eligible now; another replica's is.
			// The payload is forwarded unresolved: credentials never
			// cross the peer link.
			if err := d.startForward(ctx, t, req, targets); err != nil {
				return nil, err
			}
			held = false // given back when the task leaves memory
			return t, nil
		}
		if d.dir != nil && req.forwardedID == "" && !slices.Contains(t.selectors, PlatformTag) {
			keep := req // queued here: forwarded if a delegate shows up elsewhere
			t.fwdReq = &keep
		}
	}
	if !req.Async && d.needsResolve(req.Payload) {
		// Sync tasks live only in memory: resolve once, now.
		p, err := d.resolve(ctx, t.id, req.Payload)
		if err != nil {
			return nil, err
		}
		t.payload = p
	}
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed { // checked before the store write: a refused task must not run later
		return nil, ErrShuttingDown
	}
	if req.Async {
		raw, err := d.sealPayload(t.id, req.Payload)
		if err != nil {
			return nil, err
		}
		t.requestID = req.Request.ID
		if d.cl != nil {
			// Its caller waits here: a generated value comes here.
			t.origin = d.cl.replica
			// A replica: stored unowned, pulled by whichever replica's
			// delegates have room (pull.go).
			// Its reservation is the awaited task's from now on, until
			// it ends or is pulled here (clusterwait.go).
			t.held, held = true, false
		}
		st := &store.Task{
			ID: t.id, Kind: t.kind, Selectors: t.selectors, Scope: t.scope, Payload: raw,
			State: store.StateQueued, MaxAttempts: t.maxAttempts,
			CreatedAt: now, UpdatedAt: now, Deadline: t.deadline,
			QueueDeadline: now.Add(d.cfg.QueueTimeout.D()), Request: req.Request,
			OrderKey: t.orderKey, Origin: t.origin,
		}
		d.await(t) // before the store has it: a pull here finds it
		err = d.store.CreateTask(ctx, st)
		var dup *store.DuplicateRequestError
		if errors.As(err, &dup) {
			d.unawait(t)
			return d.existing(ctx, dup.Task, req.Request)
		}
		if err != nil && !d.storedAnyway(ctx, st.ID, err) {
			d.unawait(t)
			return nil, fmt.Errorf("persist task: %w", err)
		}
		if d.cl != nil {
			// t may be pulled here already: only st is read.
			d.metrics.submitted.WithLabelValues(st.Kind).Inc()
			d.wakePull()
			return t, nil
		}
	}
	d.metrics.submitted.WithLabelValues(t.kind).Inc()
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, ErrShuttingDown
	}
	d.tasks[t.id] = t
	held = false // given back when the task leaves memory (forgetLocked)
	d.admitLocked(t, now)
	var sends []send
	if !t.waiting {
		sends = d.dispatchTaskLocked(t)
	}
	if t.fwdReq != nil && t.state == store.StateQueued {
		d.dir.waiting[t.id] = t
	}
	d.mu.Unlock()
	d.deliver(sends)
	return t, nil
}

// taskScope is the scope of a task: its connector's for a secret task
// (so that no caller can submit one under another scope), else given.
func taskScope(given store.Scope, p *delegatev1.TaskPayload) store.Scope {
	if ref := p.GetConnector(); ref != nil {
		return scopes.FromProto(ref.GetScope())
	}
	return given
}
