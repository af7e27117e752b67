package agent_test

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/smdelegate/smdelegate/agent"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

const fenceLease = 600 * time.Millisecond

// ackingManager welcomes one stream (heartbeat acks announced), sends it
// one task, and acknowledges its heartbeats until silent is set; it then
// stays connected and says nothing. It records the results it gets.
type ackingManager struct {
	delegatev1.UnimplementedDelegateServiceServer
	silent atomic.Bool

	mu      sync.Mutex // guards results
	results []*delegatev1.TaskResult
}

func (m *ackingManager) Connect(stream delegatev1.DelegateService_ConnectServer) error {
	if _, err := stream.Recv(); err != nil {
		return err
	}
	err := stream.Send(&delegatev1.ManagerMessage{Msg: &delegatev1.ManagerMessage_Welcome{Welcome: &delegatev1.Welcome{
		DelegateId: "fake", HeartbeatInterval: durationpb.New(fenceLease / 6), LeaseDuration: durationpb.New(fenceLease),
		HeartbeatAcks: true,
	}}})
	if err == nil {
		err = stream.Send(&delegatev1.ManagerMessage{Msg: &delegatev1.ManagerMessage_Task{Task: &delegatev1.Task{
			Id: "t1", LeaseId: "l1", Attempt: 1,
			Payload: &delegatev1.TaskPayload{Op: &delegatev1.TaskPayload_Ping{Ping: &delegatev1.PingTask{}}},
		}}})
	}
	for err == nil {
		var msg *delegatev1.AgentMessage
		if msg, err = stream.Recv(); err != nil {
			break
		}
		if r := msg.GetResult(); r != nil {
			m.mu.Lock()
			m.results = append(m.results, r)
			m.mu.Unlock()
		}
		if hb := msg.GetHeartbeat(); hb != nil && !m.silent.Load() {
			err = stream.Send(&delegatev1.ManagerMessage{Msg: &delegatev1.ManagerMessage_HeartbeatAck{
				HeartbeatAck: &delegatev1.HeartbeatAck{Seq: hb.GetSeq()}}})
		}
	}
	return err
}

// blocking runs every task until its context ends, and reports that.
type blocking struct{ ended chan struct{} }

func (b blocking) Run(ctx context.Context, _ *delegatev1.Task) *delegatev1.Outcome {
	<-ctx.Done()
	close(b.ended)
	return &delegatev1.Outcome{Code: delegatev1.Code_CANCELLED}
}

// TestIssue10AgentFencesWithoutManager: the fencing per-secret order rests
// on. While the manager acknowledges heartbeats, a task runs for many
// lease durations; once the manager falls silent (the stream stays up),
// the agent cancels the task (which aborts its AWS call and allows no
// new one) within a lease duration, and does not report its result: the
// manager runs it again after the lease.
func TestIssue10AgentFencesWithoutManager(t *testing.T) {
	t.Parallel()
	m := &ackingManager{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	delegatev1.RegisterDelegateServiceServer(s, m)
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	addr := ln.Addr().String()
	cfg := agent.DefaultConfig()
	cfg.Manager, cfg.Token, cfg.Name, cfg.TLS.Insecure = addr, "t", "web", true
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	b := blocking{ended: make(chan struct{})}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	a := agent.New(cfg, zerolog.Nop(), b, "test")
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()

	waitRunning := time.Now().Add(10 * time.Second)
	for a.Running() == 0 {
		if time.Now().After(waitRunning) {
			t.Fatal("the task never started")
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case <-b.ended:
		t.Fatalf("the task was cancelled while the manager acknowledged every heartbeat")
	case <-time.After(4 * fenceLease):
	}
	m.silent.Store(true)
	select {
	case <-b.ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the task still runs 10s after the manager fell silent (lease 600ms): not fenced")
	}
	for a.Running() != 0 {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(fenceLease / 2) // a result, if any, would be sent by now
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.results) != 0 {
		t.Errorf("the fenced task's result was reported: %v; want none (its lease is lapsing)", m.results)
	}
}
