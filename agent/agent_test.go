package agent_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/smdelegate/smdelegate/agent"
	"github.com/smdelegate/smdelegate/internal/config"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// fakeManager is a DelegateService on a real socket that refuses the
// first refuse streams with code, then welcomes every stream and keeps
// it open. It records every Hello.
type fakeManager struct {
	delegatev1.UnimplementedDelegateServiceServer
	code   codes.Code
	refuse int

	mu       sync.Mutex // guards hellos
	hellos   []*delegatev1.Hello
	welcomed chan struct{} // closed at the first Welcome
	once     sync.Once
}

func (f *fakeManager) Connect(stream delegatev1.DelegateService_ConnectServer) error {
	m, err := stream.Recv()
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.hellos = append(f.hellos, m.GetHello())
	n := len(f.hellos)
	f.mu.Unlock()
	if n <= f.refuse {
		return status.Error(f.code, `delegate name "web" is held by a connected delegate of another agent process, with delegate token "d"`)
	}
	err = stream.Send(&delegatev1.ManagerMessage{Msg: &delegatev1.ManagerMessage_Welcome{Welcome: &delegatev1.Welcome{
		DelegateId: "fake", HeartbeatInterval: durationpb.New(time.Second), LeaseDuration: durationpb.New(5 * time.Second),
	}}})
	if err != nil {
		return err
	}
	f.once.Do(func() { close(f.welcomed) })
	<-stream.Context().Done()
	return nil
}

func (f *fakeManager) seen() []*delegatev1.Hello {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*delegatev1.Hello(nil), f.hellos...)
}

// startFake serves f on 127.0.0.1 until the test ends.
func startFake(t *testing.T, f *fakeManager) string {
	t.Helper()
	f.welcomed = make(chan struct{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	delegatev1.RegisterDelegateServiceServer(s, f)
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	return ln.Addr().String()
}

type idle struct{}

func (idle) Run(context.Context, *delegatev1.Task) *delegatev1.Outcome { return &delegatev1.Outcome{} }

// runAgent runs an agent named web against addr with fast reconnects;
// the returned channel gets Run's result.
func runAgent(t *testing.T, ctx context.Context, addr string) <-chan error {
	t.Helper()
	cfg := agent.DefaultConfig()
	cfg.Manager, cfg.Token, cfg.Name, cfg.TLS.Insecure = addr, "t", "web", true
	cfg.Reconnect.Initial, cfg.Reconnect.Max = config.Duration(10*time.Millisecond), config.Duration(50*time.Millisecond)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- agent.New(cfg, zerolog.Nop(), idle{}, "test").Run(ctx) }()
	return done
}

// TestItem4RefusedAgentRetries: an agent whose name is held by another
// delegate (AlreadyExists) does not exit: it retries with backoff,
// sending the same instance id each time, and connects once the manager
// lets it. Another agent process sends another instance id.
func TestItem4RefusedAgentRetries(t *testing.T) {
	t.Parallel()
	f := &fakeManager{code: codes.AlreadyExists, refuse: 3}
	addr := startFake(t, f)
	ctx, cancel := context.WithCancel(t.Context())
	done := runAgent(t, ctx, addr)
	select {
	case <-f.welcomed:
	case err := <-done:
		t.Fatalf("agent refused AlreadyExists: Run = %v, want it to retry until welcomed", err)
	case <-time.After(10 * time.Second):
		t.Fatal("agent was not welcomed after three AlreadyExists refusals")
	}
	hellos := f.seen()
	if len(hellos) != 4 {
		t.Fatalf("the agent sent %d Hellos, want 4 (3 refused, 1 welcomed)", len(hellos))
	}
	id := hellos[0].GetInstanceId()
	for i, h := range hellos {
		if id == "" || h.GetInstanceId() != id {
			t.Fatalf("Hello %d instance_id = %q, want the first's %q (one per process, never empty)", i, h.GetInstanceId(), id)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run after cancel = %v, want nil", err)
	}

	other := &fakeManager{code: codes.AlreadyExists}
	ctx2, cancel2 := context.WithCancel(t.Context())
	done2 := runAgent(t, ctx2, startFake(t, other))
	<-other.welcomed
	cancel2()
	<-done2
	if got := other.seen()[0].GetInstanceId(); got == "" || got == id {
		t.Errorf("another agent's instance_id = %q, want a fresh one (not %q)", got, id)
	}
}

// TestItem4FatalCodesStayFatal: the codes retrying cannot help still stop the
// agent at the first refusal.
func TestItem4FatalCodesStayFatal(t *testing.T) {
	t.Parallel()
	for _, code := range []codes.Code{codes.Unauthenticated, codes.PermissionDenied, codes.InvalidArgument, codes.Unimplemented} {
		t.Run(code.String(), func(t *testing.T) {
			t.Parallel()
			f := &fakeManager{code: code, refuse: 1000}
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			err := <-runAgent(t, ctx, startFake(t, f))
			var fe *agent.FatalError
			if !errors.As(err, &fe) || fe.Code != code {
				t.Fatalf("Run refused %v = %v, want a *FatalError with that code", code, err)
			}
			if n := len(f.seen()); n != 1 {
				t.Errorf("the agent sent %d Hellos, want 1 (no retry)", n)
			}
		})
	}
}
