package manager_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// wire is a hand-written delegate: one DelegateService.Connect stream over
// a real socket, speaking the protocol message by message as an
// attacker's client would, with none of the agent's rules.
type wire struct {
	t      testing.TB
	stream delegatev1.DelegateService_ConnectClient
	cancel context.CancelFunc
	msgs   chan *delegatev1.ManagerMessage // what the manager sent, in order
	ended  chan struct{}                   // closed when the stream ended
	err    error                           // how it ended; read after ended
	sendMu sync.Mutex                      // one Send at a time: the test's and the heartbeats'
}

// dialWire opens a stream with token and sends hello first. It returns
// the stream once the manager answered Welcome, or the error the stream
// ended with instead (the stream is then closed).
func dialWire(t testing.TB, addr, token string, hello *delegatev1.Hello) (*wire, *delegatev1.Welcome, error) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(metadataCtx(t, token))
	t.Cleanup(func() { cancel(); conn.Close() })
	stream, err := delegatev1.NewDelegateServiceClient(conn).Connect(ctx)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	if err := stream.Send(&delegatev1.AgentMessage{Msg: &delegatev1.AgentMessage_Hello{Hello: hello}}); err != nil {
		t.Fatalf("send Hello: %v", err)
	}
	first, err := stream.Recv()
	if err != nil {
		cancel()
		return nil, nil, err
	}
	if first.GetWelcome() == nil {
		t.Fatalf("first message from the manager = %v, want Welcome", first)
	}
	w := &wire{t: t, stream: stream, cancel: cancel, msgs: make(chan *delegatev1.ManagerMessage, 1000), ended: make(chan struct{})}
	go func() {
		defer close(w.ended)
		for {
			m, err := stream.Recv()
			if err != nil {
				w.err = err
				return
			}
			w.msgs <- m
		}
	}()
	// Heartbeats, empty, at the interval Welcome names, as a live agent
	// sends them: without them the manager closes a silent stream
	// (dispatch.missed_heartbeats). They renew no lease.
	go func() {
		every := first.GetWelcome().GetHeartbeatInterval().AsDuration()
		if every <= 0 {
			return
		}
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-w.ended:
				return
			case <-tick.C:
				w.sendMu.Lock()
				err := stream.Send(&delegatev1.AgentMessage{Msg: &delegatev1.AgentMessage_Heartbeat{Heartbeat: &delegatev1.Heartbeat{}}})
				w.sendMu.Unlock()
				if err != nil {
					return
				}
			}
		}
	}()
	return w, first.GetWelcome(), nil
}

// mustWire is dialWire that fails the test unless the manager welcomed
// the stream.
func mustWire(t testing.TB, addr, token string, hello *delegatev1.Hello) *wire {
	t.Helper()
	w, _, err := dialWire(t, addr, token, hello)
	if err != nil {
		t.Fatalf("Connect as %q: %v, want Welcome", hello.GetName(), err)
	}
	return w
}

func (w *wire) send(m *delegatev1.AgentMessage) {
	w.t.Helper()
	w.sendMu.Lock()
	err := w.stream.Send(m)
	w.sendMu.Unlock()
	if err != nil {
		w.t.Fatalf("send %T: %v", m.GetMsg(), err)
	}
}

// credit grants the manager n task slots.
func (w *wire) credit(n int32) {
	w.send(&delegatev1.AgentMessage{Msg: &delegatev1.AgentMessage_Credit{Credit: &delegatev1.Credit{Credits: n}}})
}

// result reports task's outcome as OK.
func (w *wire) result(task *delegatev1.Task) {
	w.send(&delegatev1.AgentMessage{Msg: &delegatev1.AgentMessage_Result{Result: &delegatev1.TaskResult{
		TaskId: task.GetId(), LeaseId: task.GetLeaseId(),
		Outcome: &delegatev1.Outcome{Body: &delegatev1.Outcome_Ping{Ping: &delegatev1.PingResult{DelegateName: "wire"}}},
	}}})
}

// next returns the next message the manager sent within d, or nil if
// none came (the stream may have ended: see endErr).
func (w *wire) next(d time.Duration) *delegatev1.ManagerMessage {
	select {
	case m := <-w.msgs:
		return m
	case <-time.After(d):
		return nil
	}
}

// nextTask skips to the next Task within d, or returns nil.
func (w *wire) nextTask(d time.Duration) *delegatev1.Task {
	deadline := time.After(d)
	for {
		select {
		case m := <-w.msgs:
			if t := m.GetTask(); t != nil {
				return t
			}
		case <-deadline:
			return nil
		}
	}
}

// tasks returns the Tasks among the messages received so far.
func (w *wire) tasks() []*delegatev1.Task {
	var out []*delegatev1.Task
	for {
		select {
		case m := <-w.msgs:
			if t := m.GetTask(); t != nil {
				out = append(out, t)
			}
		default:
			return out
		}
	}
}

// endErr waits up to d for the stream to end and returns its error;
// errStillOpen if it did not end.
func (w *wire) endErr(d time.Duration) error {
	select {
	case <-w.ended:
		return w.err
	case <-time.After(d):
		return errStillOpen
	}
}

// open reports whether the stream has not ended.
func (w *wire) open() bool {
	select {
	case <-w.ended:
		return false
	default:
		return true
	}
}

var errStillOpen = errors.New("stream still open")
