package agent_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/smdelegate/smdelegate/agent"
	"github.com/smdelegate/smdelegate/internal/config"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// deafManager is a manager written by hand: on the first stream it
// answers Hello, sends a quick task and a long one, then sends the long
// one again and again (each repeat makes the agent give a credit back)
// and never reads; on the second it reads, and reports what came.
type deafManager struct {
	delegatev1.UnimplementedDelegateServiceServer
	streams atomic.Int32
	second  chan secondStream
}

// secondStream is what the agent sent on its second stream: its Hello,
// and the first result.
type secondStream struct {
	hello  *delegatev1.Hello
	result *delegatev1.TaskResult
}

func pingTask(id string, sleep time.Duration) *delegatev1.ManagerMessage {
	return &delegatev1.ManagerMessage{Msg: &delegatev1.ManagerMessage_Task{Task: &delegatev1.Task{
		Id: id, LeaseId: "lease-" + id, Attempt: 1,
		Payload: &delegatev1.TaskPayload{Op: &delegatev1.TaskPayload_Ping{Ping: &delegatev1.PingTask{Sleep: durationpb.New(sleep)}}},
	}}}
}

func (m *deafManager) Connect(stream delegatev1.DelegateService_ConnectServer) error {
	n := m.streams.Add(1)
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	welcome := &delegatev1.ManagerMessage{Msg: &delegatev1.ManagerMessage_Welcome{Welcome: &delegatev1.Welcome{
		DelegateId: "d", HeartbeatInterval: durationpb.New(20 * time.Millisecond), LeaseDuration: durationpb.New(time.Hour),
	}}}
	if err := stream.Send(welcome); err != nil {
		return err
	}
	if n > 1 {
		for {
			msg, err := stream.Recv()
			if err != nil {
				return err
			}
			if r := msg.GetResult(); r != nil {
				m.second <- secondStream{hello: first.GetHello(), result: r}
				<-stream.Context().Done()
				return nil
			}
		}
	}
	// First stream: never Recv again.
	if err := stream.Send(pingTask("quick", 0)); err != nil {
		return err
	}
	long := pingTask("long", time.Hour)
	for range 50000 {
		if err := stream.Send(long); err != nil {
			return nil // the agent ended the stream
		}
	}
	<-stream.Context().Done()
	return nil
}

// TestItem5AgentEndsStreamTheManagerDoesNotRead: the agent's outbox is
// bounded too. A manager that does not read while it makes the agent
// queue messages (a credit per repeated task) overflows it; the agent
// ends that stream, reconnects, and loses nothing: the next Hello lists
// the task still running and the result the deaf manager never read is
// sent again.
func TestItem5AgentEndsStreamTheManagerDoesNotRead(t *testing.T) {
	t.Parallel()
	// A fixed 64 KiB window: the agent's sends block soon once nobody reads.
	srv := grpc.NewServer(grpc.InitialWindowSize(1<<16), grpc.InitialConnWindowSize(1<<16))
	m := &deafManager{second: make(chan secondStream, 1)}
	delegatev1.RegisterDelegateServiceServer(srv, m)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)

	cfg := agent.DefaultConfig()
	cfg.Manager, cfg.Token, cfg.Name, cfg.TLS.Insecure = lis.Addr().String(), "t", "a", true
	cfg.Concurrency = 2
	cfg.Reconnect.Initial, cfg.Reconnect.Max = config.Duration(10*time.Millisecond), config.Duration(50*time.Millisecond)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	a := agent.New(cfg, zerolog.Nop(), &agent.TaskHandler{Name: "a"}, "test")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()

	select {
	case got := <-m.second:
		running := []string{}
		for _, r := range got.hello.GetRunning() {
			running = append(running, r.GetTaskId())
		}
		if !slices.Equal(running, []string{"long"}) {
			t.Errorf("second Hello lists running %v, want [long]", running)
		}
		if r := got.result; r.GetTaskId() != "quick" || r.GetLeaseId() != "lease-quick" || r.GetOutcome().GetCode() != delegatev1.Code_OK {
			t.Errorf("first result on the second stream = %v, want quick's (never acked on the first)", r)
		}
	case err := <-done:
		t.Fatalf("agent.Run returned %v before a second stream", err)
	case <-ctx.Done():
		t.Fatalf("no second stream within 30 s (streams: %d): the agent did not end the stream its manager does not read", m.streams.Load())
	}
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("agent.Run = %v, want nil after its context ended", err)
	}
}
