package agent

import (
	"context"
	"time"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// Fencing. AWS has no precondition on a write, so the manager's per-secret
// order rests on this agent stopping a task before the manager dispatches
// it again. A task's lease is renewed when the manager acknowledges a
// heartbeat (or the Hello) that listed it; the renewal counts from when
// that message was sent, which is before the manager received it and
// extended the lease there. A task that no acknowledgement renewed for a
// lease duration (counted from its receipt for a new task) is fenced: its
// context is cancelled, which aborts its AWS call in flight and makes the
// SDK start no new one; it leaves the running list (no Hello or heartbeat
// names it again) and its result, unless a success, is dropped (the
// manager runs it again once the lease has expired there, plus a margin;
// a success made its change, and is taken if its lease is still current). The agent fences
// only under a manager that acknowledges heartbeats (Welcome).

// maxBeatsInFlight bounds the heartbeats remembered while waiting for
// their acknowledgement: the oldest are forgotten (a late ack of one only
// renews less).
const maxBeatsInFlight = 16

// beat is a heartbeat (or, seq 0, the Hello) sent and not yet acknowledged.
type beat struct {
	seq     uint64
	sentAt  time.Time
	running []*delegatev1.RunningTask
}

// sentBeatLocked remembers a heartbeat or Hello listing running, sent now.
func (s *session) sentBeatLocked(seq uint64, running []*delegatev1.RunningTask) {
	if len(s.beats) == maxBeatsInFlight {
		s.beats = s.beats[1:]
	}
	s.beats = append(s.beats, beat{seq: seq, sentAt: time.Now(), running: running})
}

// acked renews the leases listed by heartbeat seq of s (0: the Hello),
// which the manager acknowledged, and forgets it and older ones.
func (a *Agent) acked(s *session, seq uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i, b := range s.beats {
		if b.seq != seq {
			continue
		}
		for _, rt := range b.running {
			if r := a.running[rt.GetTaskId()]; r != nil && r.leaseID == rt.GetLeaseId() && b.sentAt.After(r.renewed) {
				r.renewed = b.sentAt
			}
		}
		s.beats = s.beats[i+1:]
		return
	}
}

// welcomed records the manager's lease duration and whether it
// acknowledges heartbeats, and renews the leases the Hello listed.
func (a *Agent) welcomed(s *session, w *delegatev1.Welcome) {
	a.mu.Lock()
	a.fenceAfter = 0
	if w.GetHeartbeatAcks() {
		a.fenceAfter = w.GetLeaseDuration().AsDuration()
	}
	a.mu.Unlock()
	a.acked(s, 0)
}

// fence cancels the tasks whose lease has not been renewed for a lease
// duration, every tenth of one, until ctx is done.
func (a *Agent) fence(ctx context.Context) {
	const minTick = 10 * time.Millisecond
	tick := time.NewTicker(minTick)
	defer tick.Stop()
	every := minTick
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		a.mu.Lock()
		lease := a.fenceAfter
		if lease > 0 {
			// Fence a tick early, so that the tick's delay never takes
			// the agent past the lease.
			limit := time.Now().Add(-(lease - lease/10))
			for id, r := range a.running {
				if r.renewed.Before(limit) {
					// No longer ours: a Hello or heartbeat must not
					// name it, and a new dispatch of it starts afresh.
					delete(a.running, id)
					r.fenced = true
					r.cancel()
					a.log.Warn().Str("task_id", id).Dur("lease_duration", lease).
						Msg("no word from the manager for a lease duration: task cancelled (fenced); the manager runs it again")
				}
			}
			if want := max(lease/10, minTick); want != every {
				every = want
				tick.Reset(every)
			}
		}
		a.mu.Unlock()
	}
}
