package agent

import (
	"context"
	"errors"
	"io"
	"sync"
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
}

// closeSend is pushed to end the stream from our side once drained.
var closeSend = &delegatev1.AgentMessage{}

func (s *session) push(m *delegatev1.AgentMessage) { s.out.Push(m) }

// session runs one stream until it ends. welcomed says whether the manager
// accepted the Hello (a healthy stream resets the backoff).
func (a *Agent) session(ctx context.Context, client delegatev1.DelegateServiceClient) (welcomed bool, err error) {
	sctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+a.cfg.Token))
	defer cancel()
	stream, err := client.Connect(sctx)
	if err != nil {
		return false, err
	}
	s := &session{out: outbox.New[*delegatev1.AgentMessage]()}

	// Hello, the unacked results and the drain notice go first, and the
	// session becomes current in the same critical section, so every
	// later result and credit lands on this stream after them.
	a.mu.Lock()
	hello := &delegatev1.Hello{
		Name: a.cfg.Name, Tags: a.cfg.Tags, Version: a.version, Hostname: a.hostname,
		Capacity: int32(a.cfg.Concurrency), Group: a.cfg.Group, Running: a.runningLocked(),
		InstanceId: a.instance,
	}
	s.push(&delegatev1.AgentMessage{Msg: &delegatev1.AgentMessage_Hello{Hello: hello}})
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
				if err := stream.Send(m); err != nil {
					cancel()
					return
				}
			}
		}
	}()

	first, err := stream.Recv()
	if err != nil {
		return false, err
	}
	w := first.GetWelcome()
	if w == nil {
		return false, status.Error(codes.Internal, "manager did not answer hello with welcome")
	}
	a.log.Info().Str("manager", a.cfg.Manager).Str("delegate_id", w.GetDelegateId()).Strs("tags", w.GetTags()).
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
			return true, err
		}
		switch msg := m.Msg.(type) {
		case *delegatev1.ManagerMessage_Task:
			a.start(msg.Task)
		case *delegatev1.ManagerMessage_Cancel:
			a.cancelTask(msg.Cancel)
		case *delegatev1.ManagerMessage_ResultAck:
			a.ack(msg.ResultAck)
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
			a.mu.Lock()
			hb := &delegatev1.Heartbeat{Running: a.runningLocked()}
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
