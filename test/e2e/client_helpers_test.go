package e2e

// What the tests ask a running manager and the processes: its operator
// API (delegates, pings, tasks), its /metrics, the smd CLI, log lines.
// Starting the processes is in helpers_test.go.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// delegates returns the connected delegates by name.
func (m *manager) delegates(ctx context.Context) (map[string]*delegatev1.DelegateInfo, error) {
	resp, err := m.API().ListDelegates(ctx, &delegatev1.ListDelegatesRequest{})
	if err != nil {
		return nil, err
	}
	out := map[string]*delegatev1.DelegateInfo{}
	for _, d := range resp.GetDelegates() {
		out[d.GetName()] = d
	}
	return out, nil
}

// waitConnected waits until every named delegate is connected.
func (m *manager) waitConnected(t testing.TB, names ...string) {
	t.Helper()
	waitFor(t, 20*time.Second, fmt.Sprintf("delegates %v to connect", names), func() error {
		ds, err := m.delegates(t.Context())
		if err != nil {
			return err
		}
		for _, n := range names {
			if ds[n] == nil {
				return fmt.Errorf("%s not connected", n)
			}
		}
		return nil
	})
}

// pingAsync submits an async ping and returns its task id.
func (m *manager) pingAsync(t testing.TB, sleep time.Duration, selectors ...string) string {
	t.Helper()
	info, err := m.API().Ping(t.Context(), &delegatev1.PingRequest{
		Selectors: selectors, Sleep: durationpb.New(sleep), Async: true,
	})
	if err != nil {
		t.Fatalf("Ping(async) = %v", err)
	}
	return info.GetId()
}

// pingAsyncN submits n async pings from a few goroutines, as concurrent
// platform callers would, and returns their ids.
func (m *manager) pingAsyncN(t testing.TB, n int, sleep time.Duration, selectors ...string) []string {
	t.Helper()
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	const workers = 8
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				info, err := m.API().Ping(t.Context(), &delegatev1.PingRequest{
					Selectors: selectors, Sleep: durationpb.New(sleep), Async: true,
				})
				ids[i], errs[i] = info.GetId(), err
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("Ping(async): %v", err)
	}
	return ids
}

// task returns a task by id.
func (m *manager) task(t testing.TB, id string) *delegatev1.TaskInfo {
	t.Helper()
	info, err := m.API().GetTask(t.Context(), &delegatev1.GetTaskRequest{Id: id})
	if err != nil {
		t.Fatalf("GetTask(%q) = %v", id, err)
	}
	return info
}

// listAllTasks lists every task, following ListTasks' pages (at most 1000
// tasks each).
func listAllTasks(ctx context.Context, api delegatev1.ManagerServiceClient) ([]*delegatev1.TaskInfo, error) {
	var out []*delegatev1.TaskInfo
	req := &delegatev1.ListTasksRequest{Limit: 1000}
	for {
		resp, err := api.ListTasks(ctx, req)
		if err != nil {
			return nil, err
		}
		out = append(out, resp.GetTasks()...)
		if resp.GetNextPageToken() == "" {
			return out, nil
		}
		req.PageToken = resp.GetNextPageToken()
	}
}

// tasks returns the tasks with the given ids, by id (ListTasks, then
// GetTask for any it did not return).
func (m *manager) tasks(ctx context.Context, ids []string) (map[string]*delegatev1.TaskInfo, error) {
	listed, err := listAllTasks(ctx, m.API())
	if err != nil {
		return nil, err
	}
	all := map[string]*delegatev1.TaskInfo{}
	for _, ti := range listed {
		all[ti.GetId()] = ti
	}
	out := make(map[string]*delegatev1.TaskInfo, len(ids))
	for _, id := range ids {
		if ti := all[id]; ti != nil {
			out[id] = ti
			continue
		}
		ti, err := m.API().GetTask(ctx, &delegatev1.GetTaskRequest{Id: id})
		if err != nil {
			return nil, fmt.Errorf("GetTask(%q): %w", id, err)
		}
		out[id] = ti
	}
	return out, nil
}

// waitFinal waits until every task is SUCCEEDED or FAILED and returns them.
func (m *manager) waitFinal(t testing.TB, timeout time.Duration, ids []string) map[string]*delegatev1.TaskInfo {
	t.Helper()
	var final map[string]*delegatev1.TaskInfo
	waitFor(t, timeout, fmt.Sprintf("%d tasks to be final", len(ids)), func() error {
		ts, err := m.tasks(t.Context(), ids)
		if err != nil {
			return err
		}
		open := 0
		for _, ti := range ts {
			if s := ti.GetState(); s != delegatev1.TaskState_SUCCEEDED && s != delegatev1.TaskState_FAILED {
				open++
			}
		}
		if open > 0 {
			return fmt.Errorf("%d of %d not final yet", open, len(ids))
		}
		final = ts
		return nil
	})
	return final
}

// metrics scrapes /metrics into series → value, e.g.
// `smd_task_outcomes_total{code="OK"}` → 200.
func (m *manager) metrics(t testing.TB) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + m.HTTPAddr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read /metrics: %v", err)
	}
	return out
}

// smdCLI runs the smd CLI against m with the operator token (through the
// environment, as an operator's shell would) and returns its output and
// exit code.
func smdCLI(t testing.TB, m *manager, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return smdCLIAs(t, m, m.OperatorToken, args...)
}

// smdCLIAs is smdCLI with another operator token.
func smdCLIAs(t testing.TB, m *manager, token string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, smdBin, args...)
	cmd.Env = append(cleanEnv(), "SMD_MANAGER="+m.Addr, "SMD_TOKEN="+token, "SMD_INSECURE=true")
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("smd %s: %v", strings.Join(args, " "), err)
	}
	return o.String(), e.String(), code
}

// countLines counts the lines of s that contain every one of subs.
func countLines(s string, subs ...string) int {
	n := 0
	for line := range strings.Lines(s) {
		ok := true
		for _, sub := range subs {
			if !strings.Contains(line, sub) {
				ok = false
				break
			}
		}
		if ok {
			n++
		}
	}
	return n
}
