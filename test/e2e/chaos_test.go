package e2e

import (
	"context"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/smdelegate/smdelegate/internal/awsemu"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// TestChaos (issue 5) runs mixed secret tasks through one manager and three
// agents while a chaos schedule SIGKILLs agents and restarts them, drops
// every proxied stream, and once SIGKILLs the manager and restarts it on
// the same data dir. Every async task must complete exactly once with the
// outcome its operation calls for, and AWS (the emulator, in this process)
// must hold exactly one version per version-creating task: a re-run after a
// lost lease reuses the task's ClientRequestToken, so it makes none.
//
// Sizes:
//
//	go test -count=1 -race -run TestChaos -v ./test/e2e/                        # short: 300 tasks (CI)
//	SMD_CHAOS_TASKS=2000 go test -count=1 -race -run TestChaos -v ./test/e2e/   # full: 2,000 tasks
//
// The short version takes well under a minute on two cores. The seed is
// logged; SMD_CHAOS_SEED=N draws the same task plan and chaos choices again
// (their timing, and so which tasks a kill hits, still varies). The last
// line is the summary:
//
//	chaos: seed=N submitted=300 completed=300 redispatched=K duplicates=0 agent_kills=.. stream_drops=.. manager_kills=1 ...
//
// The workload: chains of operations on one secret each (create or upsert,
// updates and upserts through UpdateSecret or, via a second connector,
// PutSecretValue, deletes with a recovery window, restores, forced deletes
// and re-creates, sync gets checking the last value, and two failures by
// design: ALREADY_EXISTS and SCHEDULED_FOR_DELETION). A chain submits its
// async operations back to back, and the manager must run them in that
// order (per-secret order, issue 10): each secret's versions must have
// been created in submission order. Many chains run at once.
// AWS holds every reply for a moment after serving the request, so a kill
// often lands after AWS made a change and before the manager heard of it.
// A submission the chaos cuts off is sent again under its request id
// (SecretRequest.request_id), which gets the task an earlier attempt
// stored, if any: the manager must hold no task the test did not see.
func TestChaos(t *testing.T) {
	n := chaosEnvInt(t, "SMD_CHAOS_TASKS", 300)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("SMD_CHAOS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SMD_CHAOS_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("chaos: seed=%d tasks=%d (reproduce with SMD_CHAOS_SEED=%d SMD_CHAOS_TASKS=%d)", seed, n, seed, n)
	workers := 8
	if n > 500 {
		workers = 16
	}

	emu := awsemu.New(awsemu.Options{})
	emu.SetLatency("", 30*time.Millisecond)
	awsURL := heldAWS(t, emu, 150*time.Millisecond)

	// Leases expire within seconds; ten attempts survive repeated kills;
	// queue timeout and deadline outlive the manager's restart.
	m := startManager(t, managerOpts{
		Lease: 2 * time.Second, Heartbeat: 500 * time.Millisecond, MaxAttempts: 10,
		QueueTimeout: 2 * time.Minute, TaskDeadline: 3 * time.Minute,
	})
	// Two agents and the workload's API client reach the manager through
	// proxies whose connections the chaos breaks.
	proxy, apiProxy := startProxy(t, m.Addr), startProxy(t, m.Addr)
	agents := []*chaosAgent{
		{name: "chaos-1", opts: agentOpts{Tags: []string{"chaos"}, Concurrency: 8, Manager: proxy.Addr(), Endpoints: []string{awsURL}}},
		{name: "chaos-2", opts: agentOpts{Tags: []string{"chaos"}, Concurrency: 8, Manager: proxy.Addr(), Endpoints: []string{awsURL}}},
		{name: "chaos-3", opts: agentOpts{Tags: []string{"chaos"}, Concurrency: 8, Endpoints: []string{awsURL}}},
	}
	for _, a := range agents {
		a.proc = startAgent(t, m, a.name, a.opts)
	}
	createChaosConnectors(t, m, awsURL)

	chains := planChains(rand.New(rand.NewPCG(seed, 1)), n)
	chaosRng := rand.New(rand.NewPCG(seed, 2))
	gate := make(chan struct{})
	w := &workload{t: t, api: dialWaitForReady(t, apiProxy.Addr(), m.OperatorToken), emu: emu,
		known: map[string]*delegatev1.TaskInfo{}, gate: gate, gateAt: int64(n) * 4 / 5,
		marked: make(chan struct{}), markAt: max(1, int64(n*(35+chaosRng.IntN(31))/100))}

	budget := 4 * time.Minute
	if n > 500 {
		budget = 12 * time.Minute
	}
	ctx, cancel := context.WithTimeout(t.Context(), budget)
	defer cancel()
	started := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.run(ctx, chains, workers)
	}()
	// The chaos schedule and the checks use their own direct client.
	ctl := dialWaitForReady(t, m.Addr, m.OperatorToken)
	rig := &chaosRig{m: m, ctl: ctl, proxy: proxy, apiProxy: apiProxy, agents: agents}
	ev := rig.run(t, chaosRng, w, gate, done)
	if ctx.Err() != nil {
		t.Fatalf("the workload did not finish within %s: %d of %d tasks submitted, %d completed",
			budget, w.submitted.Load(), n, w.completed.Load())
	}
	t.Logf("workload done in %s", time.Since(started).Round(time.Millisecond))

	final := verifyTasks(t, ctl, w, n)
	dups := w.duplicates.Load()
	for _, c := range chains {
		if !c.broken { // a broken chain was reported; its model stops short
			dups += int64(checkSecret(t, emu, c))
		}
	}
	redispatched := 0
	for _, ti := range final {
		if ti.GetAttempt() > 1 {
			redispatched++
		}
	}
	if ev.agentKills > 0 && redispatched == 0 {
		t.Errorf("%d agent kills re-dispatched no task: the run proved nothing about re-runs", ev.agentKills)
	}
	t.Logf("chaos: seed=%d submitted=%d completed=%d redispatched=%d duplicates=%d agent_kills=%d stream_drops=%d manager_kills=%d "+
		"expected_failures=%d ambiguous_submits=%d adopted=%d resubmitted=%d sync_gets=%d get_retries=%d replayed_writes=%d",
		seed, w.submitted.Load(), w.completed.Load(), redispatched, dups, ev.agentKills, ev.drops, ev.managerKills,
		w.expectedFailures.Load(), w.ambiguous.Load(), w.adopted.Load(), w.resubmitted.Load(), w.gets.Load(), w.getRetries.Load(),
		replayedWrites(emu))
}

const (
	chaosConnector    = "chaos_update"
	chaosPutConnector = "chaos_put"
)

func chaosEnvInt(t testing.TB, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 1 {
		t.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return v
}

// createChaosConnectors creates, through the API, two access key
// connectors to the emulator with a builtin credential: one writes values
// with UpdateSecret, the other with PutSecretValue.
func createChaosConnectors(t testing.TB, m *manager, awsURL string) {
	t.Helper()
	ctx := t.Context()
	if _, err := m.API().PutCredential(ctx, &delegatev1.PutCredentialRequest{
		Name: "chaos_aws_secret_key", Value: []byte(awsemu.DefaultSecretAccessKey),
	}); err != nil {
		t.Fatalf("PutCredential() = %v", err)
	}
	for _, put := range []bool{false, true} {
		id := chaosConnector
		if put {
			id = chaosPutConnector
		}
		c := &delegatev1.Connector{
			Identifier: id, Name: id, CredentialType: delegatev1.CredentialType_ACCESS_KEY,
			AccessKeyId: awsemu.DefaultAccessKeyID, SecretAccessKey: "builtin:chaos_aws_secret_key",
			Region: "us-east-1", SecretNamePrefix: "chaos", UsePutSecretValue: put,
			DelegateSelectors: []string{"chaos"}, EndpointUrl: awsURL, StsEndpointUrl: awsURL,
		}
		if _, err := m.API().CreateConnector(ctx, &delegatev1.CreateConnectorRequest{Connector: c}); err != nil {
			t.Fatalf("CreateConnector(%s) = %v", id, err)
		}
	}
}

// chaosAgent is an agent the chaos schedule kills and starts again.
type chaosAgent struct {
	name string
	opts agentOpts
	proc *proc
}

// chaosEvents counts what the chaos schedule did.
type chaosEvents struct{ agentKills, drops, managerKills int }

// chaosRig is what the chaos schedule acts on.
type chaosRig struct {
	m               *manager
	ctl             delegatev1.ManagerServiceClient
	proxy, apiProxy *tcpProxy // the agents' streams; the API client's connections
	agents          []*chaosAgent
}

// run runs the chaos schedule on the test goroutine until the
// workload is done: every 1 to 2.5 s an agent kill (SIGKILL, a pause,
// start again under the same name; the victim is drawn among the agents
// holding leases) or a drop of every proxied stream, the agents' and the
// API client's, and once, as soon as the workload marks it (35 to 65 % of
// the tasks submitted), a manager SIGKILL and restart. Drops and the
// manager kill aim at a moment when submissions are under way, so that
// some are cut off before, and some after, the manager persisted them. It
// closes gate once it made at least one event of each kind.
func (r *chaosRig) run(t *testing.T, rng *rand.Rand, w *workload, gate chan struct{}, done <-chan struct{}) chaosEvents {
	var ev chaosEvents
	m := r.m
	marked := w.marked
	pause := func() time.Duration { return time.Duration(300+rng.IntN(1200)) * time.Millisecond }
	cycle := []string{"agent", "drop", "agent"}
	for i := 0; ; {
		killManager := false
		select {
		case <-done:
			return ev
		case <-marked:
			killManager, marked = true, nil
		case <-time.After(time.Duration(1000+rng.IntN(1500)) * time.Millisecond):
		}
		switch {
		case killManager:
			inflight := w.awaitInflight(2 * time.Second)
			m.proc.kill(t)
			d := pause()
			t.Logf("chaos: killed the manager at %d submitted, %d submissions under way; restarting it in %s",
				w.submitted.Load(), inflight, d)
			time.Sleep(d)
			m.restart(t)
			ev.managerKills++
		case cycle[i%len(cycle)] == "drop":
			i++
			ev.drops++
			inflight := w.awaitInflight(time.Second)
			agentConns, apiConns := r.proxy.DropAll(), r.apiProxy.DropAll()
			t.Logf("chaos: dropped %d agent streams and %d API connections, %d submissions under way", agentConns, apiConns, inflight)
		default:
			i++
			a, held := pickVictim(t, rng, r.ctl, r.agents)
			a.proc.kill(t)
			ev.agentKills++
			d := pause()
			t.Logf("chaos: killed %s holding %d leases; restarting it in %s", a.name, held, d)
			time.Sleep(d)
			a.proc = startAgent(t, m, a.name, a.opts)
		}
		if ev.agentKills > 0 && ev.drops > 0 && ev.managerKills > 0 && gate != nil {
			close(gate)
			gate = nil
		}
	}
}

// pickVictim draws an agent among those holding leases, or among all when
// none does, and returns how many leases it holds.
func pickVictim(t testing.TB, rng *rand.Rand, api delegatev1.ManagerServiceClient, agents []*chaosAgent) (*chaosAgent, int) {
	t.Helper()
	resp, err := retryUnavailable(t, func(ctx context.Context) (*delegatev1.ListDelegatesResponse, error) {
		return api.ListDelegates(ctx, &delegatev1.ListDelegatesRequest{})
	})
	if err != nil {
		t.Fatalf("ListDelegates() = %v", err)
	}
	held := map[string]int{}
	for _, d := range resp.GetDelegates() {
		held[d.GetName()] = len(d.GetRunningTasks())
	}
	var busy []*chaosAgent
	for _, a := range agents {
		if held[a.name] > 0 {
			busy = append(busy, a)
		}
	}
	if len(busy) == 0 {
		busy = agents
	}
	a := busy[rng.IntN(len(busy))]
	return a, held[a.name]
}

// verifyTasks checks the manager's ledger against the test's: every task
// the manager holds is one the test submitted (no duplicate submission, no
// task appearing from nowhere), and every one is final as the test saw it.
func verifyTasks(t *testing.T, ctl delegatev1.ManagerServiceClient, w *workload, n int) map[string]*delegatev1.TaskInfo {
	t.Helper()
	if got := w.submitted.Load(); got != int64(n) {
		t.Errorf("submitted %d tasks, want %d", got, n)
	}
	if got := w.completed.Load(); got != int64(n) {
		t.Errorf("%d tasks completed as planned, want %d", got, n)
	}
	all, err := retryUnavailable(t, func(ctx context.Context) ([]*delegatev1.TaskInfo, error) {
		return listAllTasks(ctx, ctl)
	})
	if err != nil {
		t.Fatalf("ListTasks() = %v", err)
	}
	final := map[string]*delegatev1.TaskInfo{}
	for _, ti := range all {
		final[ti.GetId()] = ti
		seen, ok := w.known[ti.GetId()]
		switch {
		case !ok:
			t.Errorf("the manager holds task %s (%s, %s, created %s) the test never submitted",
				ti.GetId(), ti.GetKind(), ti.GetState(), ti.GetCreatedAt().AsTime().Format(time.RFC3339Nano))
		case seen != nil && (ti.GetState() != seen.GetState() || ti.GetAttempt() != seen.GetAttempt() ||
			ti.GetOutcome().GetCode() != seen.GetOutcome().GetCode()):
			t.Errorf("task %s changed after it was final: %s attempt %d %s, then %s attempt %d %s", ti.GetId(),
				seen.GetState(), seen.GetAttempt(), seen.GetOutcome().GetCode(), ti.GetState(), ti.GetAttempt(), ti.GetOutcome().GetCode())
		}
	}
	for id := range w.known {
		if final[id] == nil {
			t.Errorf("task %s is missing from ListTasks", id)
		}
	}
	return final
}

// retryUnavailable calls f until it returns something other than
// Unavailable, at most five times: a connection the chaos broke can fail
// one call before the client notices.
func retryUnavailable[T any](t testing.TB, f func(ctx context.Context) (T, error)) (T, error) {
	for try := 1; ; try++ {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		v, err := f(ctx)
		cancel()
		if status.Code(err) != codes.Unavailable || try == 5 {
			return v, err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkSecret compares a chain's secret at AWS with its model: it exists
// or not, is scheduled for deletion or not, and holds exactly one version
// per version-creating task that succeeded since it was (re)created, with
// that task's value, the last one current, created in the order the tasks
// were submitted (per-secret order). It returns the number of
// versions no task accounts for: duplicates. Workers call it too, before
// a forced delete, so it reports through t.Errorf only.
func checkSecret(t testing.TB, emu *awsemu.Server, c *chain) int {
	st, ok := emu.Secret("chaos/" + c.name)
	if ok != c.model.exists {
		t.Errorf("secret %s exists at AWS: %v, want %v", c.name, ok, c.model.exists)
		return 0
	}
	if !ok {
		return 0
	}
	if got := !st.DeletedDate.IsZero(); got != c.model.scheduled {
		t.Errorf("secret %s scheduled for deletion: %v, want %v", c.name, got, c.model.scheduled)
	}
	dups := 0
	for _, v := range st.Versions {
		want, ok := c.model.values[v.VersionID]
		switch {
		case !ok:
			dups++
			t.Errorf("secret %s: version %s (stages %v) was made by no task that succeeded: a duplicate", c.name, v.VersionID, v.Stages)
		case v.SecretString != want:
			t.Errorf("secret %s: version %s holds %q, want %q", c.name, v.VersionID, v.SecretString, want)
		case slices.Contains(v.Stages, "AWSCURRENT") != (v.VersionID == c.model.current):
			t.Errorf("secret %s: version %s has stages %v; the current version should be %s", c.name, v.VersionID, v.Stages, c.model.current)
		}
	}
	for id := range c.model.values {
		if !slices.ContainsFunc(st.Versions, func(v awsemu.VersionState) bool { return v.VersionID == id }) {
			t.Errorf("secret %s: version %s of a task that succeeded is missing at AWS", c.name, id)
		}
	}
	var created []string // the model's versions, in the order AWS created them
	for _, v := range st.Versions {
		if _, ok := c.model.values[v.VersionID]; ok {
			created = append(created, v.VersionID)
		}
	}
	if len(created) == len(c.model.order) && !slices.Equal(created, c.model.order) {
		t.Errorf("secret %s: versions created in the order %v, want the submission order %v", c.name, created, c.model.order)
	}
	return dups
}

// replayedWrites counts the writes AWS received more than once under the
// same action and ClientRequestToken: a task re-run after its first run
// reached AWS.
func replayedWrites(emu *awsemu.Server) int {
	seen := map[string]int{}
	for _, r := range emu.Requests() {
		if tok, ok := r.Params["ClientRequestToken"].(string); ok {
			seen[r.Action+" "+tok]++
		}
	}
	n := 0
	for _, c := range seen {
		if c > 1 {
			n++
		}
	}
	return n
}
