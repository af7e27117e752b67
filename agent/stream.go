package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/smdelegate/smdelegate/internal/outbox"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// session is one stream to the manager.
type session struct {
	out *outbox.Outbox[*delegatev1.AgentMessage]
	// beatQueued is set while a heartbeat waits in out: the next one is
	// skipped rather than queued behind it, so a manager that does not
	// read does not pile up heartbeats (each lists every running task).
	beatQueued atomic.Bool
	// seq numbers the heartbeats; beats are those not yet acknowledged
	// (fence.go). Guarded by Agent.mu.
	seq   uint64
	beats []beat
}

// outboxLimit is how many messages may wait to be sent on a stream that
// starts with pending unacknowledged results, for an agent of this
// capacity. A stream carries its Hello, the pending results, Draining,
// then per task a result and a credit, at most one heartbeat at a time
// and the final close: the limit covers all of them with room to spare.
// Reaching it means the manager stopped reading: the stream is ended and
// the agent reconnects. Nothing is lost by that: results stay pending
// until the manager acknowledges them and every new stream resends them,
// and the Hello of the next stream sets the credit again.
func outboxLimit(capacity, pending int) int { return 1 + pending + 4*capacity + 64 }

// errOutboxFull ends a session whose manager stopped reading.
var errOutboxFull = errors.New("the manager is not reading the stream")

// closeSend is pushed to end the stream from our side once drained.
var closeSend = &delegatev1.AgentMessage{}

func (s *session) push(m *delegatev1.AgentMessage) { s.out.Push(m) }

// session runs one stream until it ends. welcomed says whether the manager
// accepted the Hello (a healthy stream resets the backoff).
func (a *Agent) session(ctx context.Context, client delegatev1.DelegateServiceClient, t target) (welcomed bool, err error) {
	sctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+a.cfg.Token))
	defer cancel()
	stream, err := client.Connect(sctx)
	if err != nil {
		return false, err
	}
	// Hello, the unacked results and the drain notice go first, and the
	// session becomes current in the same critical section, so every
	// later result and credit lands on this stream after them.
	a.mu.Lock()
	s := &session{out: outbox.New[*delegatev1.AgentMessage](outboxLimit(a.cfg.Concurrency, len(a.pending)))}
	hello := &delegatev1.Hello{
		Name: a.cfg.Name, Tags: a.cfg.Tags, Version: a.version, Hostname: a.hostname,
		Capacity: int32(a.cfg.Concurrency), Group: a.cfg.Group, Running: a.runningLocked(),
		InstanceId: a.instance,
	}
	s.push(&delegatev1.AgentMessage{Msg: &delegatev1.AgentMessage_Hello{Hello: hello}})
	s.sentBeatLocked(0, hello.Running) // the Welcome acknowledges it
	for _, r := range a.pending {
		s.push(&delegatev1.AgentMessage{Msg: &delegatev1.AgentMessage_Result{Result: r}})
	}
	if a.draining {
		s.push(&delegatev1.AgentMessage{Msg: &delegatev1.AgentMessage_Draining{Draining: &delegatev1.Draining{}}})
	}
	a.cur = s
	a.mu.Unlock()

	var wg sync.WaitGroup
	defer func() {
		a.mu.Lock()
		if a.cur == s {
			a.cur = nil
		}
		a.mu.Unlock()
		s.out.Close()
		cancel()
		wg.Wait()
	}()

	wg.Add(1)
	go func() { // the one sender
		defer wg.Done()
		var buf []*delegatev1.AgentMessage
		for {
			if buf = s.out.Take(sctx, buf); buf == nil {
				return
			}
			for _, m := range buf {
				if m == closeSend {
					_ = stream.CloseSend()
					return
				}
				if m.GetHeartbeat() != nil {
					s.beatQueued.Store(false)
				}
				if err := stream.Send(m); err != nil {
					cancel()
					return
				}
			}
		}
	}()

	var full atomic.Bool
	wg.Add(1)
	go func() { // end the stream when the manager stops reading it
		defer wg.Done()
		select {
		case <-sctx.Done():
		case <-s.out.Overflow():
			full.Store(true)
			a.log.Warn().Int("limit", s.out.Limit()).Msg("the manager did not read the stream; ending it to reconnect (unacknowledged results are sent again)")
			cancel()
		}
	}()
	recvErr := func(err error) error {
		if full.Load() {
			return fmt.Errorf("%w: %d messages were waiting", errOutboxFull, s.out.Limit())
		}
		return err
	}

	first, err := stream.Recv()
	if err != nil {
		return false, recvErr(err)
	}
	w := first.GetWelcome()
	if w == nil {
		return false, status.Error(codes.Internal, "manager did not answer hello with welcome")
	}
	a.welcomed(s, w)
	a.log.Info().Str("manager", t.endpoint).Str("address", t.addr).Str("delegate_id", w.GetDelegateId()).Strs("tags", w.GetTags()).
		Int("resumed", len(hello.Running)).Msg("connected to manager")

	wg.Add(2)
	go func() { defer wg.Done(); a.heartbeats(sctx, s, w.GetHeartbeatInterval().AsDuration()) }()
	go func() { defer wg.Done(); a.closeWhenDrained(sctx, s) }()

	for {
		m, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return true, nil
			}
			return true, recvErr(err)
		}
		switch msg := m.Msg.(type) {
		case *delegatev1.ManagerMessage_Task:
			a.start(msg.Task)
		case *delegatev1.ManagerMessage_Cancel:
			a.cancelTask(msg.Cancel)
		case *delegatev1.ManagerMessage_ResultAck:
			a.ack(msg.ResultAck)
		case *delegatev1.ManagerMessage_HeartbeatAck:
			a.acked(s, msg.HeartbeatAck.GetSeq())
		}
	}
}

// heartbeats renews the leases of running tasks every interval.
func (a *Agent) heartbeats(ctx context.Context, s *session, every time.Duration) {
	if every <= 0 {
		every = 10 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if s.beatQueued.Swap(true) {
				continue // the last one is not sent yet
			}
			a.mu.Lock()
			s.seq++
			hb := &delegatev1.Heartbeat{Running: a.runningLocked(), Seq: s.seq}
			s.sentBeatLocked(hb.Seq, hb.Running)
			a.mu.Unlock()
			s.push(&delegatev1.AgentMessage{Msg: &delegatev1.AgentMessage_Heartbeat{Heartbeat: hb}})
		}
	}
}

// closeWhenDrained ends the stream once a draining agent has no running
// task and no unacknowledged result.
func (a *Agent) closeWhenDrained(ctx context.Context, s *session) {
	for {
		done, changed := a.drained()
		if done {
			s.push(closeSend)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

func (a *Agent) runningLocked() []*delegatev1.RunningTask {
	out := make([]*delegatev1.RunningTask, 0, len(a.running))
	for id, r := range a.running {
		out = append(out, &delegatev1.RunningTask{TaskId: id, LeaseId: r.leaseID})
	}
	return out
}
