package dispatch

import (
	"fmt"
	"slices"
	"time"

	"github.com/smdelegate/smdelegate/internal/outbox"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/smdelegate/smdelegate/internal/ids"
	"github.com/smdelegate/smdelegate/manager/identity"
	"github.com/smdelegate/smdelegate/manager/scopes"
	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// delegate is one connected agent stream. Fields are guarded by
// Dispatcher.mu, except out, which has its own lock, and those set by
// connect and never changed (id, name, hostname, version, group,
// declared, implicit, scope, token, instance, kicked, evicted, capacity,
// since, internal), which the stream handler reads without it. tags,
// opTags and unconfirmed change with operator tags (TagDelegate): read
// them only under Dispatcher.mu.
type delegate struct {
	id       string
	name     string
	hostname string
	version  string
	group    string
	declared []string
	// implicit are the name, hostname and group tags (only the allowed
	// ones under a restricted token).
	implicit []string
	tags     tagSet
	// scope is its token's scope (zero: unrestricted); it runs only tasks
	// it serves. Never what the agent declares, and fixed per stream.
	scope store.Scope
	// token is the name of its delegate token (never the token itself).
	token string
	// instance is the agent process's Hello.instance_id: only a stream of
	// the same instance (and token and scope) may replace this one.
	instance string
	// kicked is closed when a newer stream of the same agent process
	// replaces this one.
	kicked   chan struct{}
	capacity int
	// credit is how many more tasks the agent said it can take.
	credit    int
	running   map[string]*task
	draining  bool
	since     time.Time
	lastHeard time.Time
	out       *outbox.Outbox[*delegatev1.ManagerMessage]
	// pools are the dispatcher's pools this delegate is a member of, with
	// its index in each one's heap (-1: not eligible now); see pools.go.
	pools map[*pool]int
	// internal marks the manager's own platform delegate: not listed.
	internal bool
	// opTags are the operator-assigned tags (smd delegate tag) it
	// carries; unconfirmed are those it does not, because they were
	// confirmed for another delegate token (optags.go).
	opTags, unconfirmed []string
	// lastHeard (above) is when its Hello or last heartbeat arrived:
	// what the silent-delegate sweep watches. out (above) holds at most
	// OutboxLimit(capacity) messages; a delegate that does not read its
	// stream overflows it and is closed (liveness.go).
	//
	// evicted is closed when the manager closes this stream because the
	// delegate misbehaved (liveness.go); evictErr, set just before, is
	// the status the stream ends with.
	evicted  chan struct{}
	evictErr *StreamClosedError
	// dirSeq orders its cluster-wide record's write among the refreshes
	// of the directory (directory.go); 0 for a single manager.
	dirSeq uint64
	// adopt are the leases its Hello listed that memory did not hold, for
	// a replica to adopt (adopt.go) once the stream is registered.
	adopt []store.LeaseRef
}

func (dg *delegate) eligible() bool { return !dg.draining && dg.credit > 0 }

// matches reports whether dg may run a task of this scope with these
// selectors: it serves the scope and carries every selector. The
// manager's platform delegate runs only tasks that select it.
func (dg *delegate) matches(scope store.Scope, selectors []string) bool {
	if dg.internal && len(selectors) == 0 {
		return false
	}
	return scopes.Serves(dg.scope, scope) && dg.tags.hasAll(selectors)
}

// connectedLocked counts the agents connected (not the platform delegate).
func (d *Dispatcher) connectedLocked() int {
	n := len(d.delegates)
	if d.delegates[PlatformTag] != nil {
		n--
	}
	return n
}

func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// connect registers the delegate of a new stream, authenticated as id.
// Every tag the Hello gives it is checked first (helloTags: a
// *config.FieldError), then against the token's allowed_tags. A
// delegate connected under the same name is replaced only by a new
// stream of its own agent process (the same instance id, token and
// scope: a reconnect), which keeps the leases of the tasks its Hello
// says it still runs; any other claim of the name is a *NameHeldError,
// so no stream can push out a connected delegate and take its tasks and
// operator tags.
func (d *Dispatcher) connect(h *delegatev1.Hello, id identity.Identity, out *outbox.Outbox[*delegatev1.ManagerMessage]) (*delegate, error) {
	declared, implicit, err := helloTags(h)
	if err != nil {
		return nil, err
	}
	if len(id.AllowedTags) > 0 {
		// A restricted token confines every tag the delegate could be
		// matched by: declared tags outside the list are refused, and the
		// implicit name/hostname/group tags count only where allowed.
		ok := newTagSet(id.AllowedTags)
		for _, t := range declared {
			if _, in := ok[t]; !in {
				return nil, fmt.Errorf("tag %q is not allowed for this delegate token", t)
			}
		}
		implicit = slices.DeleteFunc(implicit, func(t string) bool { _, in := ok[t]; return !in })
	}
	now := d.now()
	dg := &delegate{
		id:        ids.Random(),
		name:      delegateName(h.GetName()),
		hostname:  h.GetHostname(),
		version:   h.GetVersion(),
		group:     h.GetGroup(),
		declared:  declared,
		implicit:  implicit,
		scope:     id.Scope,
		token:     id.Name,
		instance:  h.GetInstanceId(),
		kicked:    make(chan struct{}),
		evicted:   make(chan struct{}),
		capacity:  int(h.GetCapacity()),
		running:   map[string]*task{},
		since:     now,
		lastHeard: now,
		out:       out,
	}

	if d.dir != nil {
		// A replica of a cluster: the name must be free in the whole
		// cluster (directory.go) before the stream is registered here.
		unlock := d.lockName(dg.name)
		defer unlock()
		if err := d.claimName(dg); err != nil {
			return nil, err
		}
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		if d.dir != nil {
			d.dirDisconnect(dg.name)
		}
		return nil, ErrShuttingDown
	}
	if old := d.delegates[dg.name]; old != nil {
		if !dg.reconnectOf(old) {
			err := nameHeld(old, dg)
			d.mu.Unlock()
			d.log.Warn().Str("delegate", dg.name).Str("token", dg.token).Str("holder_token", old.token).
				Msg("refused a stream claiming the name of a connected delegate of another agent process")
			return nil, err
		}
		old.out.Close()
		close(old.kicked)
		d.leavePoolsLocked(old)
		d.log.Info().Str("delegate", dg.name).Msg("delegate reconnected; replacing its previous stream")
	}
	d.delegates[dg.name] = dg
	bind := d.applyOpTagsLocked(dg)
	tags := dg.tags.sorted() // read under the lock: TagDelegate changes them
	welcome := &delegatev1.ManagerMessage{Msg: &delegatev1.ManagerMessage_Welcome{Welcome: &delegatev1.Welcome{
		DelegateId:        dg.id,
		HeartbeatInterval: durationpb.New(d.cfg.HeartbeatInterval.D()),
		LeaseDuration:     durationpb.New(d.cfg.LeaseDuration.D()),
		Tags:              tags,
		HeartbeatAcks:     true,
	}}}
	out.Push(welcome)
	for _, r := range h.GetRunning() {
		t := d.tasks[r.GetTaskId()]
		if t != nil && t.state == store.StateLeased && t.leaseID == r.GetLeaseId() && scopes.Serves(dg.scope, t.scope) {
			t.holder = dg.name
			t.leaseExpiry = now.Add(d.cfg.LeaseDuration.D())
			dg.running[t.id] = t
			continue
		}
		if t == nil && d.cl != nil {
			// Another replica's, perhaps: adopted once registered.
			dg.adopt = append(dg.adopt, store.LeaseRef{TaskID: r.GetTaskId(), LeaseID: r.GetLeaseId()})
			continue
		}
		// The manager no longer holds this lease for it: stop the work.
		out.Push(cancelMsg(r.GetTaskId(), r.GetLeaseId(), "lease is no longer valid"))
	}
	dg.credit = max(dg.capacity-len(h.GetRunning()), 0)
	d.joinPoolsLocked(dg)
	d.metrics.delegates.Set(float64(d.connectedLocked()))
	sends := d.dispatchForLocked(dg)
	withheld := dg.unconfirmed
	d.mu.Unlock()
	d.log.Info().Str("delegate", dg.name).Strs("tags", tags).Str("scope", scopes.Text(dg.scope)).Int("capacity", dg.capacity).
		Int("resumed", len(h.GetRunning())).Msg("delegate connected")
	d.deliver(sends)
	d.wakePull()
	if len(withheld) > 0 {
		d.log.Warn().Str("delegate", dg.name).Str("token", dg.token).Strs("operator_tags", withheld).
			Msg("this delegate name's operator tags were confirmed for another delegate token: not applied until an operator runs smd delegate tag NAME --confirm")
	}
	if bind {
		d.bindOpTags(tagKey{dg.scope, dg.name}, dg.token)
	}
	return dg, nil
}

// claimName checks, for a replica of a cluster, that dg may hold its name
// here and in the cluster, and records it (dirConnect). Call with the
// name locked.
func (d *Dispatcher) claimName(dg *delegate) error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return ErrShuttingDown
	}
	if old := d.delegates[dg.name]; old != nil && !dg.reconnectOf(old) {
		err := nameHeld(old, dg)
		d.mu.Unlock()
		d.log.Warn().Str("delegate", dg.name).Str("token", dg.token).Str("holder_token", old.token).
			Msg("refused a stream claiming the name of a connected delegate of another agent process")
		return err
	}
	d.applyOpTagsLocked(dg) // its tags, for the record; applied again when registered
	rec := d.recordOfLocked(dg)
	d.mu.Unlock()
	return d.dirConnect(dg, rec)
}

// reconnectOf reports whether dg is a new stream of old's agent process:
// the same instance id (an empty one, from an agent too old to send it,
// matches nothing), delegate token and scope.
func (dg *delegate) reconnectOf(old *delegate) bool {
	return dg.instance != "" && dg.instance == old.instance && dg.token == old.token && dg.scope == old.scope
}

// NameHeldError refuses a stream that claims the name of a connected
// delegate of another agent process. It wraps ErrNameInUse.
type NameHeldError struct {
	Name string
	// HolderToken names the connected delegate's token (its name, never
	// the token); empty when that delegate is of another scope than the
	// claimant, whose operators must learn nothing of another tenant's
	// tokens.
	HolderToken string
	// Replica is the replica holding it, when not this one (a cluster).
	Replica string
}

func nameHeld(holder, claimant *delegate) *NameHeldError {
	e := &NameHeldError{Name: holder.name}
	if holder.scope == claimant.scope {
		e.HolderToken = holder.token
	}
	return e
}

func (e *NameHeldError) Error() string {
	who := "a connected delegate of another scope"
	if e.HolderToken != "" {
		who = fmt.Sprintf("a connected delegate of another agent process, with delegate token %q", e.HolderToken)
	}
	if e.Replica != "" {
		who += " connected to manager replica " + e.Replica
	}
	return fmt.Sprintf("delegate name %q is held by %s; names must be unique per manager (or cluster of managers; the name is free again once that delegate disconnects)", e.Name, who)
}

func (e *NameHeldError) Unwrap() error { return ErrNameInUse }

// disconnect forgets dg's stream. Its leases stay until they expire or it
// reconnects, so a brief disconnect does not re-dispatch its tasks.
func (d *Dispatcher) disconnect(dg *delegate) {
	dg.out.Close()
	unlock := d.lockName(dg.name)
	defer unlock()
	d.mu.Lock()
	registered := d.delegates[dg.name] == dg
	if registered {
		delete(d.delegates, dg.name)
		d.leavePoolsLocked(dg)
	}
	d.metrics.delegates.Set(float64(d.connectedLocked()))
	d.notePeakLocked(dg)
	d.mu.Unlock()
	if registered && d.dir != nil && !dg.internal {
		d.dirDisconnect(dg.name)
	}
}

// liveLocked reports whether dg is still the registered stream of its name:
// messages still arriving on a stream that was replaced or closed change
// nothing (they must not renew leases nor take tasks).
func (d *Dispatcher) liveLocked(dg *delegate) bool { return d.delegates[dg.name] == dg }

// credit adds n task slots to dg and spends them on queued tasks.
func (d *Dispatcher) credit(dg *delegate, n int) {
	d.mu.Lock()
	if !d.liveLocked(dg) {
		d.mu.Unlock()
		return
	}
	dg.credit = min(dg.credit+n, dg.capacity)
	d.touchLocked(dg)
	sends := d.dispatchForLocked(dg)
	spare := dg.eligible()
	d.mu.Unlock()
	d.deliver(sends)
	if spare {
		d.wakePull() // a replica: the shared queue may have work for it
	}
}

// heartbeat renews the leases dg still holds; a task it runs under a lease
// that is no longer valid is cancelled. A HeartbeatAck of seq follows the
// cancels: the agent counts its fence from it (agent fencing, order.go).
func (d *Dispatcher) heartbeat(dg *delegate, seq uint64, running []*delegatev1.RunningTask) {
	now := d.now()
	var cancels []*delegatev1.ManagerMessage
	d.mu.Lock()
	if !d.liveLocked(dg) {
		d.mu.Unlock()
		return
	}
	dg.lastHeard = now
	for _, r := range running {
		t := d.tasks[r.GetTaskId()]
		if t != nil && t.state == store.StateLeased && t.leaseID == r.GetLeaseId() && scopes.Serves(dg.scope, t.scope) {
			t.leaseExpiry = now.Add(d.cfg.LeaseDuration.D())
			if t.holder != dg.name {
				t.holder = dg.name
			}
			dg.running[t.id] = t
			d.noteRenewLocked(t) // a replica stores it (clustersweep.go)
			continue
		}
		cancels = append(cancels, cancelMsg(r.GetTaskId(), r.GetLeaseId(), "lease is no longer valid"))
	}
	d.touchLocked(dg)
	d.mu.Unlock()
	for _, m := range cancels {
		if dg.out.Push(m) != nil {
			return // closed or overflowed: the stream ends
		}
	}
	dg.out.Push(&delegatev1.ManagerMessage{Msg: &delegatev1.ManagerMessage_HeartbeatAck{
		HeartbeatAck: &delegatev1.HeartbeatAck{Seq: seq}}})
}

// drain marks dg as draining: it gets no new tasks.
func (d *Dispatcher) drain(dg *delegate) {
	d.mu.Lock()
	if !d.liveLocked(dg) {
		d.mu.Unlock()
		return
	}
	dg.draining = true
	d.touchLocked(dg)
	d.mu.Unlock()
	d.log.Info().Str("delegate", dg.name).Msg("delegate is draining")
}

func cancelMsg(taskID, leaseID, reason string) *delegatev1.ManagerMessage {
	return &delegatev1.ManagerMessage{Msg: &delegatev1.ManagerMessage_Cancel{Cancel: &delegatev1.Cancel{
		TaskId: taskID, LeaseId: leaseID, Reason: reason,
	}}}
}

// reservedPrefix starts the manager's own names and tags.
const reservedPrefix = "smd:"
