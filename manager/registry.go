package manager

import (
	"fmt"
	"github.com/smdelegate/smdelegate/internal/outbox"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/smdelegate/smdelegate/internal/ids"
	"github.com/smdelegate/smdelegate/manager/store"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// delegate is one connected agent stream. Fields are guarded by
// Dispatcher.mu, except out, which has its own lock.
type delegate struct {
	id       string
	name     string
	hostname string
	version  string
	group    string
	declared []string
	tags     tagSet
	capacity int
	// credit is how many more tasks the agent said it can take.
	credit    int
	running   map[string]*task
	draining  bool
	since     time.Time
	lastHeard time.Time
	out       *outbox.Outbox[*delegatev1.ManagerMessage]
}

func (dg *delegate) eligible() bool { return !dg.draining && dg.credit > 0 }

func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// connect registers the delegate of a new stream. A delegate reconnecting
// under the same name replaces its old stream and keeps the leases of the
// tasks its Hello says it still runs. allowed, when not empty, restricts
// the tags it may declare (the token's allowed_tags).
func (d *Dispatcher) connect(h *delegatev1.Hello, allowed []string, out *outbox.Outbox[*delegatev1.ManagerMessage]) (*delegate, error) {
	declared := normalizeTags(h.GetTags())
	if len(allowed) > 0 {
		ok := newTagSet(allowed)
		for _, t := range declared {
			if _, in := ok[t]; !in {
				return nil, fmt.Errorf("tag %q is not allowed for this delegate token", t)
			}
		}
	}
	now := d.now()
	dg := &delegate{
		id:        ids.Random(),
		name:      h.GetName(),
		hostname:  h.GetHostname(),
		version:   h.GetVersion(),
		group:     h.GetGroup(),
		declared:  declared,
		tags:      newTagSet(declared, []string{h.GetName(), h.GetHostname(), h.GetGroup()}),
		capacity:  int(h.GetCapacity()),
		running:   map[string]*task{},
		since:     now,
		lastHeard: now,
		out:       out,
	}
	welcome := &delegatev1.ManagerMessage{Msg: &delegatev1.ManagerMessage_Welcome{Welcome: &delegatev1.Welcome{
		DelegateId:        dg.id,
		HeartbeatInterval: durationpb.New(d.cfg.HeartbeatInterval.D()),
		LeaseDuration:     durationpb.New(d.cfg.LeaseDuration.D()),
		Tags:              dg.tags.sorted(),
	}}}
	out.Push(welcome)

	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, ErrShuttingDown
	}
	if old := d.delegates[dg.name]; old != nil {
		old.out.Close()
		d.log.Info().Str("delegate", dg.name).Msg("delegate reconnected; replacing its previous stream")
	}
	d.delegates[dg.name] = dg
	for _, r := range h.GetRunning() {
		t := d.tasks[r.GetTaskId()]
		if t != nil && t.state == store.StateLeased && t.leaseID == r.GetLeaseId() {
			t.holder = dg.name
			t.leaseExpiry = now.Add(d.cfg.LeaseDuration.D())
			dg.running[t.id] = t
			continue
		}
		// The manager no longer holds this lease for it: stop the work.
		out.Push(cancelMsg(r.GetTaskId(), r.GetLeaseId(), "lease is no longer valid"))
	}
	dg.credit = max(dg.capacity-len(h.GetRunning()), 0)
	d.metrics.delegates.Set(float64(len(d.delegates)))
	sends := d.dispatchForLocked(dg)
	d.mu.Unlock()
	d.deliver(sends)
	return dg, nil
}

// disconnect forgets dg's stream. Its leases stay until they expire or it
// reconnects, so a brief disconnect does not re-dispatch its tasks.
func (d *Dispatcher) disconnect(dg *delegate) {
	dg.out.Close()
	d.mu.Lock()
	if d.delegates[dg.name] == dg {
		delete(d.delegates, dg.name)
	}
	d.metrics.delegates.Set(float64(len(d.delegates)))
	d.mu.Unlock()
}

// credit adds n task slots to dg and spends them on queued tasks.
func (d *Dispatcher) credit(dg *delegate, n int) {
	d.mu.Lock()
	dg.credit = min(dg.credit+n, dg.capacity)
	dg.lastHeard = d.now()
	sends := d.dispatchForLocked(dg)
	d.mu.Unlock()
	d.deliver(sends)
}

// heartbeat renews the leases dg still holds; a task it runs under a lease
// that is no longer valid is cancelled.
func (d *Dispatcher) heartbeat(dg *delegate, running []*delegatev1.RunningTask) {
	now := d.now()
	var cancels []*delegatev1.ManagerMessage
	d.mu.Lock()
	dg.lastHeard = now
	for _, r := range running {
		t := d.tasks[r.GetTaskId()]
		if t != nil && t.state == store.StateLeased && t.leaseID == r.GetLeaseId() {
			t.leaseExpiry = now.Add(d.cfg.LeaseDuration.D())
			if t.holder != dg.name {
				t.holder = dg.name
			}
			dg.running[t.id] = t
			continue
		}
		cancels = append(cancels, cancelMsg(r.GetTaskId(), r.GetLeaseId(), "lease is no longer valid"))
	}
	d.mu.Unlock()
	for _, m := range cancels {
		dg.out.Push(m)
	}
}

// drain marks dg as draining: it gets no new tasks.
func (d *Dispatcher) drain(dg *delegate) {
	d.mu.Lock()
	dg.draining = true
	d.mu.Unlock()
	d.log.Info().Str("delegate", dg.name).Msg("delegate is draining")
}

func cancelMsg(taskID, leaseID, reason string) *delegatev1.ManagerMessage {
	return &delegatev1.ManagerMessage{Msg: &delegatev1.ManagerMessage_Cancel{Cancel: &delegatev1.Cancel{
		TaskId: taskID, LeaseId: leaseID, Reason: reason,
	}}}
}

// ListDelegates returns the connected delegates, by name.
func (d *Dispatcher) ListDelegates() []*delegatev1.DelegateInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]*delegatev1.DelegateInfo, 0, len(d.delegates))
	for _, dg := range d.delegates {
		running := make([]string, 0, len(dg.running))
		for id := range dg.running {
			running = append(running, id)
		}
		slices.Sort(running)
		out = append(out, &delegatev1.DelegateInfo{
			Id: dg.id, Name: dg.name, Tags: dg.tags.sorted(), Version: dg.version,
			Hostname: dg.hostname, Group: dg.group, ConnectedSince: timestamp(dg.since),
			LastHeartbeat: timestamp(dg.lastHeard), Capacity: int32(dg.capacity),
			RunningTasks: running, Draining: dg.draining, Connected: true,
		})
	}
	slices.SortFunc(out, func(a, b *delegatev1.DelegateInfo) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out
}

// connectedTagsLocked describes the connected delegates for the
// NO_ELIGIBLE_DELEGATE message.
func (d *Dispatcher) connectedTagsLocked() string {
	if len(d.delegates) == 0 {
		return "no delegates are connected"
	}
	names := make([]string, 0, len(d.delegates))
	for n := range d.delegates {
		names = append(names, n)
	}
	slices.Sort(names)
	const maxListed = 20
	s := "connected delegates:"
	for i, n := range names {
		if i == maxListed {
			s += fmt.Sprintf(" … and %d more", len(names)-maxListed)
			break
		}
		dg := d.delegates[n]
		state := ""
		if dg.draining {
			state = " (draining)"
		}
		s += fmt.Sprintf(" %s%s [%s];", n, state, strings.Join(dg.tags.sorted(), ", "))
	}
	return s[:len(s)-1]
}
