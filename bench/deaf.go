package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/smdelegate/smdelegate/internal/harness"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// deafResult is section 7: what one delegate that never reads its stream
// costs the manager (issue 9, item 5).
type deafResult struct {
	Capacity   int
	Heartbeats int           // sent before the manager closed the stream (or the time ran out)
	Closed     bool          // the manager ended the stream
	ClosedIn   time.Duration // from the first heartbeat
	RSSBefore  int64         // manager, idle with the stream connected
	Peak       int64         // manager VmHWM after the attack
	RSSHeld    int64         // manager RSS after the close, the client still connected and not reading
}

// benchDeaf starts a manager of its own, connects one delegate stream of
// capacity 10,000 that never reads, and has it send heartbeats listing
// 10,000 tasks the manager does not know (each costs a Cancel queued for
// it) for up to d. Before the outbox bound this grew the manager by 1.4 GB
// in 3 s; the manager now closes the stream once 4 × capacity + 64
// messages wait for it.
func benchDeaf(ctx context.Context, bin, dir string, d time.Duration, o options) (deafResult, error) {
	const capacity = 10000
	r := deafResult{Capacity: capacity}
	m, err := startManager(bin, dir, "manager-deaf", 1)
	if err != nil {
		return r, err
	}
	defer m.close()
	// A plain client, as an attacker would write it: default windows.
	conn, err := grpc.NewClient(m.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(harness.Bearer(m.DelegateToken)))
	if err != nil {
		return r, err
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := delegatev1.NewDelegateServiceClient(conn).Connect(ctx)
	if err != nil {
		return r, err
	}
	if err := stream.Send(&delegatev1.AgentMessage{Msg: &delegatev1.AgentMessage_Hello{Hello: &delegatev1.Hello{
		Name: "deaf", Version: "bench", Capacity: capacity,
	}}}); err != nil {
		return r, err
	}
	if msg, err := stream.Recv(); err != nil || msg.GetWelcome() == nil {
		return r, fmt.Errorf("no welcome for the deaf delegate: %v", err)
	}
	time.Sleep(time.Second) // settle
	mem, err := readMem(m.proc.Pid())
	if err != nil {
		return r, err
	}
	r.RSSBefore = mem.RSS

	running := make([]*delegatev1.RunningTask, capacity)
	for i := range running {
		running[i] = &delegatev1.RunningTask{TaskId: fmt.Sprintf("01deafunknown%013d", i), LeaseId: fmt.Sprintf("lease-%d", i)}
	}
	hb := &delegatev1.AgentMessage{Msg: &delegatev1.AgentMessage_Heartbeat{Heartbeat: &delegatev1.Heartbeat{Running: running}}}
	// The sender never reads, so once the manager ends the stream its
	// Sends may block (the end of the stream waits behind data the client
	// does not read): it runs on its own goroutine, ended by cancel.
	var sent atomic.Int64
	senderDone := make(chan struct{})
	go func() {
		defer close(senderDone)
		for ctx.Err() == nil && stream.Send(hb) == nil {
			sent.Add(1)
		}
	}()
	start := time.Now()
	for time.Since(start) < d {
		if n, _ := metric(m, `smd_delegate_streams_closed_total{reason="outbox_full"}`); n > 0 {
			r.Closed, r.ClosedIn = true, time.Since(start)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.Heartbeats = int(sent.Load())
	time.Sleep(500 * time.Millisecond)
	if mem, err = readMem(m.proc.Pid()); err != nil {
		return r, err
	}
	r.Peak, r.RSSHeld = mem.Peak, mem.RSS
	cancel() // the client gives up the stream: what the transport held is freed
	<-senderDone
	o.logf("  capacity %d, %d heartbeats of %d unknown tasks: closed %v (after %s); manager RSS %s before, peak %s, %s after the close",
		capacity, r.Heartbeats, capacity, r.Closed, r.ClosedIn.Round(time.Millisecond), mib(r.RSSBefore), mib(r.Peak), mib(r.RSSHeld))
	return r, nil
}

// metric reads one sample of the manager's /metrics ("name" or
// `name{label="value"}`).
func metric(m *manager, sample string) (float64, error) {
	resp, err := http.Get("http://" + m.HTTPAddr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("/metrics has no %s", sample)
}
