package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/smdelegate/smdelegate/internal/awsemu"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
	"github.com/smdelegate/smdelegate/tasks"
)

// TestRetryAfterLostResponse is the case the chaos suite found: the
// manager stores a task, and its answer never reaches the caller, who sees
// Unavailable. Retried with the same request_id, the call gets that task:
// one task, one version at AWS, one CreateSecret. Three ways:
//
//   - `smd secret create --wait`, whose answer (sent once the task
//     succeeded) a proxy cuts: smd retries on its own;
//   - an async Secret call over gRPC whose answer is cut: the task is
//     stored though the call failed, and the retry returns it;
//   - `smd secret create --wait` while the manager is SIGKILLed and
//     started again during the task: smd retries until it is back and
//     gets the recovered task's outcome.
func TestRetryAfterLostResponse(t *testing.T) {
	emu := awsemu.New(awsemu.Options{})
	awsURL, err := emu.Start("127.0.0.1:0")
	if err != nil {
		t.Fatalf("awsemu: %v", err)
	}
	t.Cleanup(func() { emu.Close() })
	// A lease well beyond the manager's restart below: the agent keeps
	// its running create and resumes it on the restarted manager, rather
	// than fencing it (no heartbeat acknowledged for a lease) and having
	// it run again, which AWS would absorb (same token) but which is not
	// what this test is about.
	m := startManager(t, managerOpts{Lease: 10 * time.Second, Heartbeat: time.Second})
	startAgent(t, m, "retry-agent", agentOpts{Tags: []string{"chaos"}, Endpoints: []string{awsURL}})
	createChaosConnectors(t, m, awsURL)
	cut := startResponseCutter(t, m.Addr)

	t.Run("cli wait, answer lost", func(t *testing.T) {
		cut.arm(1)
		r := smdVia(t, cut.Addr(), m.OperatorToken, "value-1", "secret", "create", "lost-wait", "--connector", chaosConnector, "--wait", "-o", "json")
		if got := cut.cuts(); got != 1 {
			t.Fatalf("the proxy cut %d answers, want 1 (smd: %v)", got, r)
		}
		if r.code != 0 || !strings.Contains(r.stderr, "retrying in ") || !strings.Contains(r.stderr, "with request id smd-") {
			t.Fatalf("smd secret create --wait through a lost answer: %v\nwant exit 0 after a retry under its request id", r)
		}
		info := taskJSON(t, r.stdout)
		if info.GetState() != delegatev1.TaskState_SUCCEEDED || !strings.HasPrefix(info.GetRequestId(), "smd-") {
			t.Errorf("smd printed %v, want the SUCCEEDED task with its request id", info)
		}
		checkOneChange(t, m, emu, "lost-wait", info)
	})

	t.Run("api async, answer lost", func(t *testing.T) {
		api := dialVia(t, cut.Addr(), m.OperatorToken)
		req := &delegatev1.SecretRequest{Connector: &delegatev1.ConnectorRef{Identifier: chaosConnector}, Async: true, RequestId: "lost-async-1",
			Op: &delegatev1.SecretRequest_Create{Create: &delegatev1.CreateSecretOp{Name: "lost-async",
				Value: &delegatev1.SecretValue{Value: &delegatev1.SecretValue_StringValue{StringValue: "value-2"}}}}}
		cut.arm(1)
		if _, err := api.Secret(t.Context(), req); status.Code(err) != codes.Unavailable {
			t.Fatalf("Secret() with its answer cut = %v, want Unavailable", err)
		}
		// The caller saw an error, and the manager stored the task all
		// the same: without a request id a retry would make a second.
		stored := tasksWithRequestID(t, m, "lost-async-1")
		if len(stored) != 1 {
			t.Fatalf("the manager holds %d tasks of the failed call, want 1", len(stored))
		}
		again, err := api.Secret(t.Context(), req)
		if err != nil || again.GetId() != stored[0].GetId() {
			t.Fatalf("retry = %v, %v; want the stored task %s", again, err, stored[0].GetId())
		}
		final := m.waitFinal(t, 30*time.Second, []string{again.GetId()})[again.GetId()]
		if final.GetState() != delegatev1.TaskState_SUCCEEDED {
			t.Fatalf("task = %v, want SUCCEEDED", final)
		}
		checkOneChange(t, m, emu, "lost-async", final)
	})

	t.Run("cli wait, manager restarted", func(t *testing.T) {
		emu.SetLatency("secretsmanager.CreateSecret", 3*time.Second) // the task runs while the manager is down
		defer emu.SetLatency("secretsmanager.CreateSecret", 0)
		done := make(chan cliResult, 1)
		go func() {
			done <- smdVia(t, m.Addr, m.OperatorToken, "value-3", "secret", "create", "restarted-wait", "--connector", chaosConnector, "--wait", "-o", "json")
		}()
		waitFor(t, 10*time.Second, "the create to be leased", func() error {
			select {
			case r := <-done:
				t.Fatalf("smd secret create --wait ended before the manager was killed: %v", r)
			default:
			}
			resp, err := m.API().ListTasks(t.Context(), &delegatev1.ListTasksRequest{State: delegatev1.TaskState_LEASED})
			if err != nil || len(resp.GetTasks()) == 0 {
				return fmt.Errorf("no leased task yet (%v)", err)
			}
			return nil
		})
		m.proc.kill(t)
		time.Sleep(500 * time.Millisecond)
		m.restart(t)
		var r cliResult
		select {
		case r = <-done:
		case <-time.After(90 * time.Second):
			t.Fatal("smd secret create --wait did not return within 90s of the manager's restart")
		}
		if r.code != 0 || !strings.Contains(r.stderr, "retrying in ") {
			t.Fatalf("smd secret create --wait across a manager restart: %v\nwant exit 0 after retries", r)
		}
		info := taskJSON(t, r.stdout)
		if info.GetState() != delegatev1.TaskState_SUCCEEDED {
			t.Errorf("smd printed %v, want the SUCCEEDED task", info)
		}
		checkOneChange(t, m, emu, "restarted-wait", info)
	})
}

// checkOneChange checks that the create of name made exactly one task
// (info's), one CreateSecret and one version at AWS, under the task's
// ClientRequestToken.
func checkOneChange(t *testing.T, m *manager, emu *awsemu.Server, name string, info *delegatev1.TaskInfo) {
	t.Helper()
	if got := tasksWithRequestID(t, m, info.GetRequestId()); len(got) != 1 || got[0].GetId() != info.GetId() {
		t.Errorf("tasks with request id %s: %v, want only %s", info.GetRequestId(), got, info.GetId())
	}
	resp, err := m.API().ListTasks(t.Context(), &delegatev1.ListTasksRequest{Limit: 1000})
	if err != nil {
		t.Fatalf("ListTasks() = %v", err)
	}
	for _, ti := range resp.GetTasks() {
		if ti.GetOutcome().GetSecret().GetName() == name && ti.GetId() != info.GetId() {
			t.Errorf("task %s also changed %s: a second task of one request", ti.GetId(), name)
		}
	}
	calls := 0
	for _, r := range emu.Requests() {
		if r.Action == "CreateSecret" && r.Params["Name"] == "chaos/"+name {
			calls++
		}
	}
	st, ok := emu.Secret("chaos/" + name)
	if !ok || len(st.Versions) != 1 || st.Versions[0].VersionID != tasks.RequestToken(info.GetId()) || calls != 1 {
		t.Errorf("AWS: secret %s %+v (exists %v) after %d CreateSecret calls; want one version, the task's token %s, one call",
			name, st.Versions, ok, calls, tasks.RequestToken(info.GetId()))
	}
}

// tasksWithRequestID returns the manager's tasks that carry request id rid.
func tasksWithRequestID(t *testing.T, m *manager, rid string) []*delegatev1.TaskInfo {
	t.Helper()
	resp, err := m.API().ListTasks(t.Context(), &delegatev1.ListTasksRequest{Limit: 1000})
	if err != nil {
		t.Fatalf("ListTasks() = %v", err)
	}
	var out []*delegatev1.TaskInfo
	for _, ti := range resp.GetTasks() {
		if ti.GetRequestId() == rid {
			out = append(out, ti)
		}
	}
	return out
}

// taskJSON decodes smd's -o json output of a task.
func taskJSON(t *testing.T, out string) *delegatev1.TaskInfo {
	t.Helper()
	info := &delegatev1.TaskInfo{}
	if err := protojson.Unmarshal([]byte(out), info); err != nil {
		t.Fatalf("smd -o json printed no task (%v):\n%s", err, out)
	}
	return info
}

// cliResult is how an smd invocation ended.
type cliResult struct {
	stdout, stderr string
	code           int
}

func (r cliResult) String() string {
	return fmt.Sprintf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
}

// smdVia runs the smd CLI against the manager at addr with token, value on
// stdin. It may run on any goroutine: it reports nothing through t.
func smdVia(t testing.TB, addr, token, stdin string, args ...string) cliResult {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, smdBin, args...)
	cmd.Env = append(cleanEnv(), "SMD_MANAGER="+addr, "SMD_TOKEN="+token, "SMD_INSECURE=true")
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	r := cliResult{stdout: o.String(), stderr: e.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		r.code, r.stderr = -1, err.Error()
	}
	return r
}

// dialVia is an operator API client of the manager through addr.
func dialVia(t testing.TB, addr, token string) delegatev1.ManagerServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(bearer(token)))
	if err != nil {
		t.Fatalf("grpc client: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return delegatev1.NewManagerServiceClient(conn)
}

// responseCutter forwards connections to a target and, while armed,
// breaks the connection that carries the next gRPC answer instead of
// delivering it. A unary call's answer opens with an HTTP/2 HEADERS frame
// on its stream, which the server sends only once the handler returned:
// the manager did (and stored) what the call asked, and the caller sees
// Unavailable. Everything else passes untouched.
type responseCutter struct {
	ln     net.Listener
	target string
	armed  atomic.Int32 // answers left to cut
	cut    atomic.Int32 // answers cut so far
	wg     sync.WaitGroup

	mu    sync.Mutex // guards conns
	conns map[net.Conn]struct{}
}

func startResponseCutter(t testing.TB, target string) *responseCutter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("cutter listen: %v", err)
	}
	p := &responseCutter{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Go(p.serve)
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *responseCutter) Addr() string { return p.ln.Addr().String() }

// arm makes the proxy cut the next n answers.
func (p *responseCutter) arm(n int32) { p.armed.Store(n) }

// cuts is how many answers the proxy cut.
func (p *responseCutter) cuts() int32 { return p.cut.Load() }

func (p *responseCutter) serve() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		p.conns[in], p.conns[out] = struct{}{}, struct{}{}
		p.mu.Unlock()
		end := func() {
			in.Close()
			out.Close()
			p.mu.Lock()
			delete(p.conns, in)
			delete(p.conns, out)
			p.mu.Unlock()
		}
		p.wg.Go(func() {
			_, _ = io.Copy(out, in)
			end()
		})
		p.wg.Go(func() {
			p.answers(in, out)
			end()
		})
	}
}

// HTTP/2 frame types the cutter tells apart (RFC 9113, section 6).
const frameHeaders = 0x1

// answers copies the server's HTTP/2 frames to the client, frame by frame
// (the server's side of a connection starts with a frame, there is no
// preface string), until it cuts an answer or either side ends.
func (p *responseCutter) answers(client, server net.Conn) {
	hdr := make([]byte, 9)
	for {
		if _, err := io.ReadFull(server, hdr); err != nil {
			return
		}
		length := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
		frame := make([]byte, 9+length)
		copy(frame, hdr)
		if _, err := io.ReadFull(server, frame[9:]); err != nil {
			return
		}
		stream := binary.BigEndian.Uint32(hdr[5:9]) & 0x7fffffff
		if hdr[3] == frameHeaders && stream != 0 && p.take() {
			p.cut.Add(1)
			return // the answer is lost: the caller closes both sides
		}
		if _, err := client.Write(frame); err != nil {
			return
		}
	}
}

// take uses up one armed cut, if there is one left.
func (p *responseCutter) take() bool {
	for {
		n := p.armed.Load()
		if n <= 0 {
			return false
		}
		if p.armed.CompareAndSwap(n, n-1) {
			return true
		}
	}
}
