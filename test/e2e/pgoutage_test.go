package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smdelegate/smdelegate/internal/awsemu"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
	"github.com/smdelegate/smdelegate/tasks"
)

// TestIssue10PostgresOutage (Done 3): the manager's PostgreSQL server,
// one of the test's own, is stopped with `pg_ctl stop` for 10 s while 500
// async secret updates run, then started again. Meanwhile `smd secret
// update` submissions are made, which find the store down. Afterwards:
//
//   - every task, the CLI's included, SUCCEEDED, once: the manager holds
//     one task per request id and counted one OK outcome per task;
//   - AWS holds exactly one version per task, under the task's
//     ClientRequestToken, besides the secret's seed: nothing duplicated,
//     nothing missing;
//   - the manager logged at most 20 lines from the stop to the end,
//     whatever the number of tasks (an outage must not cost a line per
//     task, let alone per retry);
//   - the manager took its advisory lock again (a new session of its own
//     holds it), is ready, and is still running;
//   - every CLI submission made during the outage exited 0 after
//     retrying under its request id (the API said Unavailable, not
//     Internal).
func TestIssue10PostgresOutage(t *testing.T) {
	// SMD_OUTAGE_SECRETS scales the workload (5 updates each), to see
	// that the log does not grow with it.
	secrets := chaosEnvInt(t, "SMD_OUTAGE_SECRETS", 100)
	const (
		updatesEach    = 5 // 500 tasks by default
		cliSubmits     = 3
		outage         = 10 * time.Second
		maxOutageLines = 20
	)
	pg := startPGServer(t)
	emu := awsemu.New(awsemu.Options{})
	// Slow enough that the 500 updates take several seconds on 16 slots,
	// so that the outage falls in their middle.
	emu.SetLatency("", 250*time.Millisecond)
	awsURL := heldAWS(t, emu, 50*time.Millisecond)
	m := startManager(t, managerOpts{
		PostgresDSN: pg.DSN, MaxAttempts: 10, QueueTimeout: 2 * time.Minute, TaskDeadline: 2 * time.Minute,
	})
	for _, name := range []string{"outage-1", "outage-2"} {
		startAgent(t, m, name, agentOpts{Tags: []string{"chaos"}, Concurrency: 8, Endpoints: []string{awsURL}})
	}
	createChaosConnectors(t, m, awsURL)
	name := func(i int) string { return fmt.Sprintf("outage-%03d", i) }
	cliName := func(i int) string { return fmt.Sprintf("outage-cli-%d", i) }
	// The secrets exist, as smdelegate made them, with one version.
	managed := map[string]string{tasks.DefaultManagedByTagKey: tasks.ManagedByValue}
	for i := range secrets {
		emu.PutSecretDirect("chaos/"+name(i), "seed", managed)
	}
	for i := range cliSubmits {
		emu.PutSecretDirect("chaos/"+cliName(i), "seed", managed)
	}

	// The 500 updates, interleaved over the secrets, each under a
	// request id of its own.
	n := secrets * updatesEach
	ids := make([]string, n)
	var secretOf sync.Map // task id → its AWS secret
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for j := w; j < n; j += 8 {
				req := updateRequest(name(j%secrets), fmt.Sprintf("value-%d", j))
				req.RequestId = fmt.Sprintf("outage-%d", j)
				info, err := m.API().Secret(t.Context(), req)
				if err != nil {
					t.Errorf("Secret(update %s) = %v", req.GetUpdate().GetName(), err)
					continue
				}
				ids[j] = info.GetId()
				secretOf.Store(info.GetId(), "chaos/"+name(j%secrets))
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	waitFor(t, 60*time.Second, "a third of the tasks to be final", func() error {
		all, err := listAllTasks(t.Context(), m.API())
		if err != nil {
			return err
		}
		states := map[delegatev1.TaskState]int{}
		for _, ti := range all {
			states[ti.GetState()]++
		}
		if final := states[delegatev1.TaskState_SUCCEEDED] + states[delegatev1.TaskState_FAILED]; final < n/3 {
			return fmt.Errorf("tasks by state: %v", states)
		}
		return nil
	})

	// The outage, with CLI submissions in it.
	logFrom := len(m.proc.log())
	stopped := time.Now()
	pg.Stop(t)
	t.Logf("PostgreSQL stopped at %s", stopped.Format(time.TimeOnly))
	cli := make([]cliResult, cliSubmits)
	var cliWG sync.WaitGroup
	for i := range cliSubmits {
		cliWG.Go(func() {
			time.Sleep(time.Second + time.Duration(i)*2*time.Second)
			cli[i] = smdVia(t, m.Addr, m.OperatorToken, fmt.Sprintf("cli-value-%d", i),
				"secret", "update", cliName(i), "--connector", chaosConnector, "-o", "json")
		})
	}
	time.Sleep(time.Until(stopped.Add(outage)))
	pg.Start(t)
	t.Logf("PostgreSQL started again after %s", time.Since(stopped).Round(time.Millisecond))
	cliWG.Wait()

	// Every CLI submission got through by retrying.
	for i, r := range cli {
		if r.code != 0 || !strings.Contains(r.stderr, "retrying in ") {
			t.Errorf("smd secret update %s during the outage: %v\nwant exit 0 after retries under its request id", cliName(i), r)
			continue
		}
		id := taskJSON(t, r.stdout).GetId()
		ids = append(ids, id)
		secretOf.Store(id, "chaos/"+cliName(i))
	}

	// Every task succeeded, once. The checks below run even when some
	// did not finish, so that one run shows every symptom.
	final, settled := settle(t, m, ids, 45*time.Second)
	all, err := listAllTasks(t.Context(), m.API())
	if err != nil {
		t.Errorf("ListTasks() = %v", err)
	}
	if err == nil && len(all) != len(ids) {
		t.Errorf("the manager holds %d tasks, want %d: one per submission", len(all), len(ids))
	}
	byRequest := map[string]int{}
	for _, ti := range all {
		byRequest[ti.GetRequestId()]++
	}
	for rid, c := range byRequest {
		if c != 1 {
			t.Errorf("request id %q has %d tasks, want 1", rid, c)
		}
	}
	want := map[string][]string{} // AWS secret → the tokens of its tasks that succeeded
	knownTokens := map[string]bool{}
	succeeded, failed := 0, 0
	for _, id := range ids {
		knownTokens[tasks.RequestToken(id)] = true
		switch ti := final[id]; ti.GetState() {
		case delegatev1.TaskState_SUCCEEDED:
			succeeded++
			aws, _ := secretOf.Load(id)
			want[aws.(string)] = append(want[aws.(string)], tasks.RequestToken(id))
		case delegatev1.TaskState_FAILED:
			failed++
			if failed <= 5 {
				t.Errorf("task %s = FAILED %v, want SUCCEEDED", id, ti.GetOutcome())
			}
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d tasks FAILED, want none", failed, len(ids))
	}
	metrics := m.metrics(t)
	outcomes := 0.0
	for series, v := range metrics {
		if strings.HasPrefix(series, "smd_task_outcomes_total{") {
			outcomes += v
		}
	}
	if ok := metrics[`smd_task_outcomes_total{code="OK"}`]; ok != float64(succeeded) || outcomes != float64(succeeded+failed) {
		t.Errorf("smd_task_outcomes_total: %v OK of %v, want %d of %d: one completion per final task", ok, outcomes, succeeded, succeeded+failed)
	}

	// AWS: the seed and one version per task that succeeded, no other.
	dups := 0
	for i := range secrets + cliSubmits {
		aws := "chaos/" + name(i)
		if i >= secrets {
			aws = "chaos/" + cliName(i-secrets)
		}
		dups += checkVersions(t, emu, aws, want[aws], knownTokens, settled)
	}
	if dups > 0 {
		t.Errorf("AWS holds %d versions no task accounts for: duplicates", dups)
	}

	// The manager's log since the stop.
	lines := strings.Split(strings.TrimSpace(m.proc.log()[logFrom:]), "\n")
	if len(lines) > maxOutageLines {
		t.Errorf("the manager logged %d lines from the stop to the end, want at most %d whatever the number of tasks:\n%s",
			len(lines), maxOutageLines, summarizeLog(lines))
	} else {
		t.Logf("the manager logged %d lines from the stop to the end:\n%s", len(lines), strings.Join(lines, "\n"))
	}

	// The lock is held again, by a session of this manager's.
	if m.proc.exited() {
		t.Fatalf("the manager exited (exit code %d) after the outage", m.proc.ExitCode())
	}
	owner := managerOwner(t, m.proc.pid())
	waitFor(t, 20*time.Second, "the manager to hold its lock again", func() error {
		conn := pgConn(t, pg.DSN)
		defer conn.Close(context.Background())
		if _, app := lockHolder(t, conn, "postgres", "public"); app != owner[:min(len(owner), 63)] {
			return fmt.Errorf("the lock is held by %q, want the manager %q", app, owner)
		}
		return nil
	})
	if code := readyz(m.HTTPAddr); code != http.StatusOK {
		t.Errorf("/readyz after the outage = %d, want 200", code)
	}
	t.Logf("outage: tasks=%d succeeded=%d failed=%d unfinished=%d redispatched=%d log_lines=%d",
		len(ids), succeeded, failed, len(ids)-succeeded-failed, redispatched(final), len(lines))
}

// settle waits up to timeout for every task to be final and returns the
// tasks as last seen, and whether all were final. When some are not, it
// fails t, saying how many are in which state.
func settle(t *testing.T, m *manager, ids []string, timeout time.Duration) (map[string]*delegatev1.TaskInfo, bool) {
	t.Helper()
	var (
		last    map[string]*delegatev1.TaskInfo
		lastErr error
	)
	for deadline := time.Now().Add(timeout); ; {
		ts, err := m.tasks(t.Context(), ids)
		if err == nil {
			last = ts
		}
		lastErr = err
		open := map[string]int{}
		for _, ti := range last {
			if !isFinal(ti) {
				open[fmt.Sprintf("%s attempt %d", ti.GetState(), ti.GetAttempt())]++
			}
		}
		if err == nil && len(open) == 0 {
			return last, true
		}
		if time.Now().After(deadline) {
			t.Errorf("%s after PostgreSQL came back, tasks still not final, by state: %v (last read: %v)", timeout, open, lastErr)
			return last, false
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// updateRequest is an async update of name to value through the chaos
// connector (UpdateSecret).
func updateRequest(name, value string) *delegatev1.SecretRequest {
	return &delegatev1.SecretRequest{
		Connector: &delegatev1.ConnectorRef{Identifier: chaosConnector}, Async: true,
		Op: &delegatev1.SecretRequest_Update{Update: &delegatev1.UpdateSecretOp{Name: name,
			Value: &delegatev1.SecretValue{Value: &delegatev1.SecretValue_StringValue{StringValue: value}}}},
	}
}

// checkVersions checks that the AWS secret aws holds its seed and one
// version per token in want (the tasks that succeeded), and no other,
// and returns how many others it holds. When not every task settled, a
// version of a known task is not counted: the unfinished task is
// reported already.
func checkVersions(t *testing.T, emu *awsemu.Server, aws string, want []string, known map[string]bool, settled bool) int {
	t.Helper()
	st, ok := emu.Secret(aws)
	if !ok {
		t.Errorf("AWS: secret %s is missing", aws)
		return 0
	}
	succeeded := map[string]bool{}
	for _, tok := range want {
		succeeded[tok] = true
	}
	extra, seeds := 0, 0
	for _, v := range st.Versions {
		switch {
		case succeeded[v.VersionID]:
			delete(succeeded, v.VersionID)
		case v.SecretString == "seed" && seeds == 0:
			seeds++
		case !settled && known[v.VersionID]:
		default:
			extra++
			if extra <= 3 {
				t.Errorf("AWS: secret %s: version %s (stages %v) was made by no task that succeeded", aws, v.VersionID, v.Stages)
			}
		}
	}
	for tok := range succeeded {
		t.Errorf("AWS: secret %s has no version %s, though its task succeeded", aws, tok)
	}
	return extra
}

// redispatched counts the tasks that ran more than once.
func redispatched(final map[string]*delegatev1.TaskInfo) int {
	n := 0
	for _, ti := range final {
		if ti.GetAttempt() > 1 {
			n++
		}
	}
	return n
}

// summarizeLog is a JSON log's lines counted by level and message, most
// frequent first, with the first of each: what an outage cost in lines.
func summarizeLog(lines []string) string {
	type group struct {
		key   string
		count int
		first string
	}
	groups := map[string]*group{}
	for _, line := range lines {
		var e struct{ Level, Message string }
		key := line
		if json.Unmarshal([]byte(line), &e) == nil {
			key = e.Level + " " + e.Message
		}
		g := groups[key]
		if g == nil {
			g = &group{key: key, first: line}
			groups[key] = g
		}
		g.count++
	}
	var gs []*group
	for _, g := range groups {
		gs = append(gs, g)
	}
	sort.Slice(gs, func(i, j int) bool { return gs[i].count > gs[j].count })
	var b strings.Builder
	for i, g := range gs {
		if i == 15 {
			fmt.Fprintf(&b, "  ... and %d more kinds of line\n", len(gs)-i)
			break
		}
		fmt.Fprintf(&b, "  %6d × %s\n         first: %.400s\n", g.count, g.key, g.first)
	}
	return b.String()
}
