package manager_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/manager"
	"github.com/smdelegate/smdelegate/manager/dispatch"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// handDelegate opens a delegate stream with the delegate token, written
// by hand: it sends and reads only what the test tells it to. Its
// connection has a fixed 64 KiB receive window, so a test that does not
// read fills it quickly (the default grows it up to 16 MiB first). The
// stream ends after 30 s at the latest, so that a test whose manager
// never closes it fails instead of hanging.
func handDelegate(t *testing.T, addr string) delegatev1.DelegateService_ConnectClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(1<<16), grpc.WithInitialConnWindowSize(1<<16))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(metadataCtx(t, delegateToken), 30*time.Second)
	t.Cleanup(cancel)
	stream, err := delegatev1.NewDelegateServiceClient(conn).Connect(ctx)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	return stream
}

func sendHello(t *testing.T, s delegatev1.DelegateService_ConnectClient, h *delegatev1.Hello) {
	t.Helper()
	if err := s.Send(&delegatev1.AgentMessage{Msg: &delegatev1.AgentMessage_Hello{Hello: h}}); err != nil {
		t.Fatalf("send Hello: %v", err)
	}
}

// readToEnd reads a stream until it ends and returns what came and the
// error it ended with.
func readToEnd(s delegatev1.DelegateService_ConnectClient) ([]*delegatev1.ManagerMessage, error) {
	var got []*delegatev1.ManagerMessage
	for {
		m, err := s.Recv()
		if err != nil {
			return got, err
		}
		got = append(got, m)
	}
}

// unknownRunning lists n tasks the manager never leased.
func unknownRunning(n int) []*delegatev1.RunningTask {
	r := make([]*delegatev1.RunningTask, n)
	for i := range r {
		r[i] = &delegatev1.RunningTask{TaskId: fmt.Sprintf("01unknowntask%013d", i), LeaseId: fmt.Sprintf("lease%d", i)}
	}
	return r
}

func heartbeatMsg(running []*delegatev1.RunningTask) *delegatev1.AgentMessage {
	return &delegatev1.AgentMessage{Msg: &delegatev1.AgentMessage_Heartbeat{Heartbeat: &delegatev1.Heartbeat{Running: running}}}
}

// livenessMetric reads one sample of the manager's /metrics, as
// Prometheus would ("name" or `name{label="value"}`); absent is -1.
func livenessMetric(t *testing.T, srv *manager.Server, sample string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + srv.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s = %q: %v", sample, v, err)
			}
			return f
		}
	}
	return -1
}

func connectedNames(t *testing.T, c delegatev1.ManagerServiceClient, ctx context.Context) []string {
	t.Helper()
	var names []string
	for n := range delegateNames(t, c, ctx) {
		names = append(names, n)
	}
	return names
}

// TestItem5UnreadStreamIsClosedAtItsBound is the attack of item 5: a
// delegate that never reads its stream sends heartbeats listing
// thousands of tasks the manager does not know, each of which queues a
// Cancel for it. The messages waiting for it never exceed OutboxLimit
// (the high-water mark reaches it exactly), the manager closes the
// stream, counts it, and the other delegate carries on.
func TestItem5UnreadStreamIsClosedAtItsBound(t *testing.T) {
	t.Parallel()
	srv := mustManager(t, func(c *manager.Config) { c.HTTPListen = "127.0.0.1:0" })
	startAgent(t, srv.Addr(), "bystander", nil, 2, nil)
	c, ctx := operator(t, srv.Addr())
	waitDelegates(t, c, ctx, 1)

	const capacity = 2000
	hog := handDelegate(t, srv.Addr())
	sendHello(t, hog, &delegatev1.Hello{Name: "hog", Capacity: capacity})
	waitDelegates(t, c, ctx, 2)

	// Never Recv: every heartbeat queues 2,000 cancels. Unbounded, this
	// grew the manager by 1.4 GB in 3 s.
	hb := heartbeatMsg(unknownRunning(capacity))
	sent, closed := 0, false
	for sent < 500 {
		if err := hog.Send(hb); err != nil {
			closed = true // the manager ended the stream
			break
		}
		sent++
		if livenessMetric(t, srv, `smd_delegate_streams_closed_total{reason="outbox_full"}`) > 0 {
			closed = true
			break
		}
	}
	if !closed {
		t.Fatalf("sent %d heartbeats of %d unknown tasks (%d cancels) to a stream that is never read; the manager did not close it",
			sent, capacity, sent*capacity)
	}
	limit := float64(dispatch.OutboxLimit(capacity))
	waitFor(t, 5*time.Second, func() bool {
		return livenessMetric(t, srv, `smd_delegate_streams_closed_total{reason="outbox_full"}`) == 1
	}, "smd_delegate_streams_closed_total{reason=\"outbox_full\"} to be 1")
	if peak := livenessMetric(t, srv, "smd_delegate_outbox_peak_messages"); peak != limit {
		t.Errorf("smd_delegate_outbox_peak_messages = %v, want exactly the limit %v (filled to it, never above)", peak, limit)
	}
	waitDelegates(t, c, ctx, 1)
	if names := connectedNames(t, c, ctx); len(names) != 1 || names[0] != "bystander" {
		t.Errorf("connected after the hog was closed: %v, want [bystander]", names)
	}
	// Reading now: what the transport held, then the end of the stream.
	if _, err := readToEnd(hog); status.Code(err) != codes.ResourceExhausted || !strings.Contains(status.Convert(err).Message(), "did not read its stream") {
		t.Errorf("the hog's stream ended with %v, want ResourceExhausted \"the delegate did not read its stream...\"", err)
	}
	for _, reason := range []string{"missed_heartbeats", "invalid_message"} {
		if v := livenessMetric(t, srv, `smd_delegate_streams_closed_total{reason="`+reason+`"}`); v != 0 {
			t.Errorf("smd_delegate_streams_closed_total{reason=%q} = %v, want 0", reason, v)
		}
	}
	if info := ping(t, c, ctx, &delegatev1.PingRequest{}); info.GetOutcome().GetPing().GetDelegateName() != "bystander" {
		t.Errorf("ping after the attack = %v, want OK from bystander", info)
	}
}

// TestItem5RunningListsBoundedByCapacity: a Hello or Heartbeat listing
// more running tasks than the delegate's capacity, or a credit beyond it,
// is refused with InvalidArgument naming the field, and the manager acts
// on none of it (no Cancel is sent for the listed tasks).
func TestItem5RunningListsBoundedByCapacity(t *testing.T) {
	t.Parallel()
	srv := mustManager(t, func(c *manager.Config) { c.HTTPListen = "127.0.0.1:0" })
	c, ctx := operator(t, srv.Addr())

	t.Run("hello", func(t *testing.T) {
		s := handDelegate(t, srv.Addr())
		sendHello(t, s, &delegatev1.Hello{Name: "liar-hello", Capacity: 5, Running: unknownRunning(6)})
		got, err := readToEnd(s)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "hello.running: lists 6 tasks, more than hello.capacity (5)") {
			t.Errorf("Hello with 6 running and capacity 5 ended with %v, want InvalidArgument naming hello.running", err)
		}
		if len(got) != 0 {
			t.Errorf("the refused Hello got %d messages (%v), want none", len(got), got)
		}
	})
	for _, tc := range []struct {
		name string
		msg  *delegatev1.AgentMessage
		want string
	}{
		{"heartbeat", heartbeatMsg(unknownRunning(6)), "heartbeat.running: lists 6 tasks, more than the capacity of 5"},
		{"credit", &delegatev1.AgentMessage{Msg: &delegatev1.AgentMessage_Credit{Credit: &delegatev1.Credit{Credits: 1 << 30}}},
			"credit.credits: must be between 1 and the capacity of 5"},
		{"negative credit", &delegatev1.AgentMessage{Msg: &delegatev1.AgentMessage_Credit{Credit: &delegatev1.Credit{Credits: -3}}},
			"credit.credits: must be between 1 and the capacity of 5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := handDelegate(t, srv.Addr())
			sendHello(t, s, &delegatev1.Hello{Name: "liar-" + strings.ReplaceAll(tc.name, " ", "-"), Capacity: 5})
			if m, err := s.Recv(); err != nil || m.GetWelcome() == nil {
				t.Fatalf("Hello: got %v, %v; want Welcome", m, err)
			}
			if err := s.Send(tc.msg); err != nil {
				t.Fatal(err)
			}
			got, err := readToEnd(s)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.want) {
				t.Errorf("%s ended the stream with %v, want InvalidArgument containing %q", tc.name, err, tc.want)
			}
			for _, m := range got {
				if m.GetCancel() != nil {
					t.Errorf("the manager acted on the refused message: sent %v", m)
				}
			}
		})
	}
	if v := livenessMetric(t, srv, `smd_delegate_streams_closed_total{reason="invalid_message"}`); v != 3 {
		t.Errorf(`smd_delegate_streams_closed_total{reason="invalid_message"} = %v, want 3 (heartbeat, credit, negative credit)`, v)
	}
	if names := connectedNames(t, c, ctx); len(names) != 0 {
		t.Errorf("connected after the refusals: %v, want none", names)
	}
}

// TestItem11SilentDelegateClosedAndTasksRequeued is the attack of item
// 11: a delegate says Hello, takes tasks (one async, one sync) and goes
// silent. After dispatch.missed_heartbeats intervals the manager closes
// its stream and both tasks run on a healthy delegate as attempt 2, long
// before their leases (an hour) could have expired. The healthy
// delegate, whose tasks run for several intervals while it heartbeats,
// is not closed.
func TestItem11SilentDelegateClosedAndTasksRequeued(t *testing.T) {
	t.Parallel()
	const beat = 100 * time.Millisecond
	srv := mustManager(t, func(c *manager.Config) {
		c.HTTPListen = "127.0.0.1:0"
		c.Dispatch.LeaseDuration = config.Duration(time.Hour)
		c.Dispatch.TaskDeadline = config.Duration(time.Hour)
		c.Dispatch.QueueTimeout = config.Duration(time.Hour)
		c.Dispatch.HeartbeatInterval = config.Duration(beat)
		c.Dispatch.MissedHeartbeats = 5
	})
	c, ctx := operator(t, srv.Addr())

	mute := handDelegate(t, srv.Addr())
	sendHello(t, mute, &delegatev1.Hello{Name: "mute", Capacity: 2, Tags: []string{"pool"}})
	if m, err := mute.Recv(); err != nil || m.GetWelcome() == nil {
		t.Fatalf("Hello: got %v, %v; want Welcome", m, err)
	}
	async := ping(t, c, ctx, &delegatev1.PingRequest{Selectors: []string{"pool"}, Async: true})
	syncDone := make(chan *delegatev1.TaskInfo, 1)
	go func() {
		info, err := c.Ping(ctx, &delegatev1.PingRequest{Selectors: []string{"pool"}})
		if err != nil {
			t.Errorf("sync Ping: %v", err)
		}
		syncDone <- info
	}()
	for range 2 {
		m, err := mute.Recv()
		if err != nil || m.GetTask().GetAttempt() != 1 {
			t.Fatalf("mute: got %v, %v; want a Task, attempt 1", m, err)
		}
	}

	// The healthy delegate joins while mute holds both tasks, and takes
	// its time with each (8 heartbeat intervals, longer than the silence
	// that closes a stream), heartbeating meanwhile.
	startAgent(t, srv.Addr(), "healthy", []string{"pool"}, 2, func(ctx context.Context, _ *delegatev1.Task) {
		select {
		case <-time.After(8 * beat):
		case <-ctx.Done():
		}
	})

	_, err := readToEnd(mute) // mute reads, but never sends again
	if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "no heartbeat for") {
		t.Errorf("the silent stream ended with %v, want Unavailable \"no heartbeat for ...\"", err)
	}
	for _, info := range []*delegatev1.TaskInfo{waitTask(t, c, ctx, async.GetId(), 20*time.Second), <-syncDone} {
		if info.GetState() != delegatev1.TaskState_SUCCEEDED || info.GetAttempt() != 2 ||
			info.GetDelegate() != "healthy" || info.GetOutcome().GetPing().GetDelegateName() != "healthy" {
			t.Errorf("task %s (async %v) = %s attempt %d on %q; want SUCCEEDED, attempt 2, on healthy (re-dispatched at once, the 1h lease not expired)",
				info.GetId(), info.GetAsync(), info.GetState(), info.GetAttempt(), info.GetDelegate())
		}
	}
	if v := livenessMetric(t, srv, `smd_delegate_streams_closed_total{reason="missed_heartbeats"}`); v != 1 {
		t.Errorf(`smd_delegate_streams_closed_total{reason="missed_heartbeats"} = %v, want 1 (mute only)`, v)
	}
	if v := livenessMetric(t, srv, "smd_tasks_requeued_total"); v != 2 {
		t.Errorf("smd_tasks_requeued_total = %v, want 2", v)
	}
	if names := connectedNames(t, c, ctx); len(names) != 1 || names[0] != "healthy" {
		t.Errorf("connected: %v, want [healthy]", names)
	}
}

// TestItem11SilentDelegateLastAttempt: with no attempt left, the task of
// a silent delegate fails DELEGATE_LOST at once, saying why.
func TestItem11SilentDelegateLastAttempt(t *testing.T) {
	t.Parallel()
	srv := mustManager(t, func(c *manager.Config) {
		c.Dispatch.LeaseDuration = config.Duration(time.Hour)
		c.Dispatch.TaskDeadline = config.Duration(time.Hour)
		c.Dispatch.HeartbeatInterval = config.Duration(100 * time.Millisecond)
		c.Dispatch.MissedHeartbeats = 2
		c.Dispatch.MaxAttempts = 1
	})
	c, ctx := operator(t, srv.Addr())
	mute := handDelegate(t, srv.Addr())
	sendHello(t, mute, &delegatev1.Hello{Name: "mute", Capacity: 1})
	if m, err := mute.Recv(); err != nil || m.GetWelcome() == nil {
		t.Fatalf("Hello: got %v, %v; want Welcome", m, err)
	}
	async := ping(t, c, ctx, &delegatev1.PingRequest{Async: true})
	info := waitTask(t, c, ctx, async.GetId(), 20*time.Second)
	want := "delegate mute was disconnected (missed_heartbeats) and the task used all 1 attempts"
	if info.GetOutcome().GetCode() != delegatev1.Code_DELEGATE_LOST || info.GetOutcome().GetMessage() != want {
		t.Errorf("task of the silent delegate = %v %q, want DELEGATE_LOST %q", info.GetOutcome().GetCode(), info.GetOutcome().GetMessage(), want)
	}
}
