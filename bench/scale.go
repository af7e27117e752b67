package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/smdelegate/smdelegate/internal/harness"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// simAgent is a simulated delegate: one gRPC connection and one Connect
// stream, as a real agent has, answering every ping at once. It is what a
// real agent does on the wire, without the process around it.
type simAgent struct {
	conn   *grpc.ClientConn
	stream grpc.BidiStreamingClient[delegatev1.AgentMessage, delegatev1.ManagerMessage]
}

// connectSim opens a simulated delegate's stream and waits for Welcome.
func connectSim(ctx context.Context, m *manager, name string) (*simAgent, error) {
	conn, err := harness.Dial(m.Addr, m.DelegateToken)
	if err != nil {
		return nil, err
	}
	stream, err := delegatev1.NewDelegateServiceClient(conn).Connect(ctx)
	if err != nil {
		conn.Close()
		return nil, err
	}
	send := func(msg *delegatev1.AgentMessage) error { return stream.Send(msg) }
	if err := send(&delegatev1.AgentMessage{Msg: &delegatev1.AgentMessage_Hello{Hello: &delegatev1.Hello{
		Name: name, Tags: []string{"sim"}, Version: "bench", Hostname: "bench-sim", Capacity: 4,
	}}}); err != nil {
		conn.Close()
		return nil, err
	}
	msg, err := stream.Recv()
	if err != nil || msg.GetWelcome() == nil {
		conn.Close()
		return nil, fmt.Errorf("no welcome for %s: %v", name, err)
	}
	if err := send(&delegatev1.AgentMessage{Msg: &delegatev1.AgentMessage_Credit{Credit: &delegatev1.Credit{Credits: 4}}}); err != nil {
		conn.Close()
		return nil, err
	}
	return &simAgent{conn: conn, stream: stream}, nil
}

// serve answers tasks until the stream ends. Sends happen on this
// goroutine only (gRPC allows one sender at a time).
func (a *simAgent) serve(name string) {
	for {
		msg, err := a.stream.Recv()
		if err != nil {
			return
		}
		t := msg.GetTask()
		if t == nil {
			continue
		}
		res := &delegatev1.AgentMessage{Msg: &delegatev1.AgentMessage_Result{Result: &delegatev1.TaskResult{
			TaskId: t.GetId(), LeaseId: t.GetLeaseId(),
			Outcome: &delegatev1.Outcome{Body: &delegatev1.Outcome_Ping{Ping: &delegatev1.PingResult{DelegateName: name, Version: "bench"}}},
		}}}
		if a.stream.Send(res) != nil {
			return
		}
		if a.stream.Send(&delegatev1.AgentMessage{Msg: &delegatev1.AgentMessage_Credit{Credit: &delegatev1.Credit{Credits: 1}}}) != nil {
			return
		}
	}
}

func (a *simAgent) close() {
	_ = a.stream.CloseSend()
	a.conn.Close()
}

// scaleStep is one number of simulated delegates in section 5.
type scaleStep struct {
	Streams    int
	Connect    time.Duration // to open all of them
	ManagerRSS int64         // settled, after connecting
	ManagerHWM int64         // peak, after the ping load
	Ping       latencies
	PingRate   float64
}

// scaleResult is section 5.
type scaleResult struct {
	Steps []scaleStep
}

// benchScale starts a manager of its own and connects simulated delegates
// to it, each on its own TCP connection, in steps (1,000 then 10,000):
// the manager's RSS with that many streams, and the dispatch latency of
// pings spread over them.
func benchScale(ctx context.Context, bin, dir string, o options) (scaleResult, error) {
	var r scaleResult
	m, err := startManager(bin, dir, "manager-scale", 4)
	if err != nil {
		return r, err
	}
	defer m.close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu     sync.Mutex
		agents []*simAgent
	)
	defer func() {
		for _, a := range agents {
			a.close()
		}
	}()
	for _, n := range o.scaleSteps {
		start := time.Now()
		var next atomic.Int64
		next.Store(int64(len(agents)))
		var wg sync.WaitGroup
		errs := make(chan error, 1)
		for range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1)) - 1
					if i >= n {
						return
					}
					name := fmt.Sprintf("sim-%05d", i)
					a, err := connectSim(ctx, m, name)
					if err != nil {
						select {
						case errs <- err:
						default:
						}
						return
					}
					mu.Lock()
					agents = append(agents, a)
					mu.Unlock()
					go a.serve(name)
				}
			}()
		}
		wg.Wait()
		select {
		case err := <-errs:
			return r, fmt.Errorf("%d streams: %w", n, err)
		default:
		}
		step := scaleStep{Streams: n, Connect: time.Since(start)}
		if got, _, err := m.connectedDelegates(ctx, ""); err != nil || got != n {
			return r, fmt.Errorf("%d streams: the manager lists %d connected (%v)", n, got, err)
		}
		time.Sleep(2 * time.Second) // let the manager settle (GC, buffers)
		mem, err := readMem(m.proc.Pid())
		if err != nil {
			return r, err
		}
		step.ManagerRSS = mem.RSS
		step.PingRate = o.scalePingRate
		step.Ping = openLoop(ctx, o.scalePingRate, o.rateDuration, 20000, pingCall(m, "sim"))
		if step.Ping.errors > 0 {
			return r, fmt.Errorf("%d streams: %d pings failed, first: %v", n, step.Ping.errors, step.Ping.firstErr)
		}
		mem, _ = readMem(m.proc.Pid())
		step.ManagerHWM = mem.Peak
		o.logf("  %5d streams (connected in %s): manager RSS %s, peak %s; pings at %.0f/s: %s",
			n, step.Connect.Round(time.Millisecond), mib(step.ManagerRSS), mib(step.ManagerHWM), o.scalePingRate, step.Ping)
		r.Steps = append(r.Steps, step)
	}
	return r, nil
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
