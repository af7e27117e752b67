package dispatch

import (
	"context"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// Generated values across replicas (cluster mode). A create with
// return_value (`smd secret create --generate --show`) is an async task
// whose outcome carries the value AWS generated; the store never has it
// (persistFinal stores the outcome without it), and a single manager
// hands it only to the callers holding the task's object in memory
// (Submitted: the caller that waits, or a repeat of its request while
// the task is in memory). On a replica that caller may wait on another
// replica than the one receiving the delegate's result. The task's
// stored Origin names the replica that took the submitting call; the
// replica receiving the result sends the outcome there (Courier, the
// peer link's DeliverGenerated) before it stores the final state, and
// the origin keeps it beside the caller's object (task.gen) until that
// state is read: it becomes the caller's outcome only when the stored
// state is OK, under the same lease, with the same outcome but the
// value. Otherwise, and whenever the origin is gone or not reached, the
// value is dropped, as a single manager drops it when its caller went
// away; the caller then gets the stored outcome, which the API marks as
// "generated and stored at AWS, but not shown" (api.runSecret).

// Courier delivers a generated value to another replica (manager/peer
// implements it over PeerService.DeliverGenerated).
type Courier interface {
	// DeliverGenerated hands o, the outcome of task taskID under lease
	// leaseID with its generated value, to replica. Errors: the replica
	// is not alive or not reached (ErrPeerUnreachable), or refused it.
	DeliverGenerated(ctx context.Context, replica, taskID, leaseID string, o *delegatev1.Outcome) error
}

// SetCourier gives a replica's dispatcher the way to bring generated
// values to other replicas (call it before the dispatcher takes tasks).
func (d *Dispatcher) SetCourier(c Courier) { d.courier = c }

// deliverTimeout bounds one delivery: the final state is stored after
// it, whatever its end.
const deliverTimeout = 5 * time.Second

// generated is a value another replica delivered for t's caller:
// the delegate's outcome, and the lease it ran under.
type generated struct {
	lease   string
	outcome *delegatev1.Outcome
}

// hasValue reports whether o carries a secret value.
func hasValue(o *delegatev1.Outcome) bool { return o != nil && WithoutSecretValue(o) != o }

// sendGenerated delivers o, t's outcome under leaseID, to the replica
// where t's caller waits, when o carries a value and that replica is
// another live one. Failures are logged (never the value) and otherwise
// ignored: the final state is stored all the same, and that caller is
// told the value could not be shown.
func (d *Dispatcher) sendGenerated(t *task, leaseID string, o *delegatev1.Outcome) {
	if d.cl == nil || d.courier == nil || leaseID == "" || o.GetCode() != delegatev1.Code_OK || !hasValue(o) {
		return
	}
	d.mu.Lock()
	origin := t.origin
	d.mu.Unlock()
	if origin == "" || origin == d.cl.replica {
		return // its caller waits here (or on a manager before origins)
	}
	log := d.log.With().Str("task_id", t.id).Str("replica", origin).Logger()
	if !d.cl.members.Alive(origin) {
		log.Info().Msg("generated value dropped: the replica its caller waited on is gone")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), deliverTimeout)
	defer cancel()
	if err := d.courier.DeliverGenerated(ctx, origin, t.id, leaseID, o); err != nil {
		log.Warn().Err(err).Msg("generated value not delivered to the replica its caller waits on; the caller is told it cannot be shown")
	}
}

// AcceptGenerated keeps o, the outcome with a generated value of task
// taskID under lease leaseID that another replica received, for the
// callers waiting here (PeerService.DeliverGenerated). It is kept only
// beside a task they wait for that asked for the value (return_value)
// and is not final yet; otherwise it is dropped. It returns nothing
// about the task: whether it was kept is not the sender's business.
// Errors: ErrNotGenerated for a delivery that is not a generated value;
// ErrNotReplica on a single manager.
func (d *Dispatcher) AcceptGenerated(taskID, leaseID string, o *delegatev1.Outcome) error {
	if d.cl == nil {
		return ErrNotReplica
	}
	if taskID == "" || leaseID == "" || o.GetCode() != delegatev1.Code_OK || !hasValue(o) {
		return ErrNotGenerated
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	t := d.tasks[taskID]
	if a := d.cl.awaited[taskID]; a != nil {
		t = a.t
	}
	if t == nil || !t.async || t.state.Final() || !t.payload.GetSecret().GetCreate().GetReturnValue() {
		return nil // no caller here waits for it: dropped
	}
	t.gen = &generated{lease: leaseID, outcome: o}
	return nil
}

// generatedLocked returns the outcome t's callers get now that t ended
// as st, stored (so stored is st's outcome): the value delivered for
// them when st is OK, under the lease it was delivered with, and stored
// is that outcome without its value; else stored. The delivered value
// is dropped either way.
func (d *Dispatcher) generatedLocked(t *task, st *store.Task, stored *delegatev1.Outcome) *delegatev1.Outcome {
	g := t.gen
	t.gen = nil
	if g == nil || st.State != store.StateSucceeded || st.Code != delegatev1.Code_OK.String() ||
		st.LeaseID != g.lease || !proto.Equal(WithoutSecretValue(g.outcome), stored) {
		return stored
	}
	return g.outcome
}
