package e2e

import (
	"context"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/smdelegate/smdelegate/internal/awsemu"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// TestChaosReplicas (issue 11) is TestChaos against a cluster: three
// replicas on one PostgreSQL database, three agents that list every
// replica (each through a proxy of its own, whose connections the chaos
// breaks), and the workload's client behind a TCP load balancer over the
// replicas. The chaos SIGKILLs agents and restarts them, drops every
// proxied stream, and SIGKILLs one replica at a time and restarts it, at
// least twice per run. Every task must complete exactly once with the
// outcome its operation calls for, AWS must hold exactly one version per
// version-creating task, in submission order per secret.
//
//	go test -count=1 -race -run TestChaosReplicas -v ./test/e2e/                        # short: 300 tasks (CI)
//	SMD_CHAOS_TASKS=2000 go test -count=1 -race -run TestChaosReplicas -v ./test/e2e/   # full: 2,000 tasks
//
// The last line is the summary:
//
//	chaos-replicas: seed=N submitted=300 completed=300 redispatched=K duplicates=0 agent_kills=.. stream_drops=.. replica_kills=2 ...
func TestChaosReplicas(t *testing.T) {
	n := chaosEnvInt(t, "SMD_CHAOS_TASKS", 300)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("SMD_CHAOS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SMD_CHAOS_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("chaos-replicas: seed=%d tasks=%d (reproduce with SMD_CHAOS_SEED=%d SMD_CHAOS_TASKS=%d)", seed, n, seed, n)
	workers := 8
	if n > 500 {
		workers = 16
	}

	emu := awsemu.New(awsemu.Options{})
	emu.SetLatency("", 30*time.Millisecond)
	awsURL := heldAWS(t, emu, 150*time.Millisecond)

	// Short leases and heartbeats, so that tasks of a killed replica's
	// streams come back within seconds; ten attempts survive repeated
	// kills; queue timeout and deadline outlive every restart.
	rs := startReplicas(t, 3, managerOpts{
		Lease: 2 * time.Second, Heartbeat: 500 * time.Millisecond, MaxAttempts: 10,
		QueueTimeout: 2 * time.Minute, TaskDeadline: 3 * time.Minute,
	})
	var proxies []*tcpProxy
	var agentAddrs, replicaAddrs []string
	for _, r := range rs {
		p := startProxy(t, r.Addr)
		proxies = append(proxies, p)
		agentAddrs = append(agentAddrs, p.Addr())
		replicaAddrs = append(replicaAddrs, r.Addr)
	}
	balancer := startBalancer(t, replicaAddrs...)
	var agents []*chaosAgent
	for i := range 3 {
		// Each agent lists the replicas starting at another one.
		addrs := append(append([]string{}, agentAddrs[i:]...), agentAddrs[:i]...)
		agents = append(agents, &chaosAgent{name: "chaos-" + strconv.Itoa(i+1), opts: agentOpts{
			Tags: []string{"chaos"}, Concurrency: 8, Managers: addrs, Endpoints: []string{awsURL},
		}})
	}
	for _, a := range agents {
		a.proc = startAgent(t, rs[0], a.name, a.opts)
	}
	ctl := dialWaitForReady(t, balancer.Addr(), rs[0].OperatorToken)
	waitDelegates(t, ctl, len(agents))
	createChaosConnectors(t, rs[0], awsURL)

	chains := planChains(rand.New(rand.NewPCG(seed, 1)), n)
	chaosRng := rand.New(rand.NewPCG(seed, 2))
	gate := make(chan struct{})
	w := &workload{t: t, api: dialWaitForReady(t, balancer.Addr(), rs[0].OperatorToken), emu: emu,
		known: map[string]*delegatev1.TaskInfo{}, gate: gate, gateAt: int64(n) * 4 / 5,
		marked: make(chan struct{}), markAt: max(1, int64(n*(20+chaosRng.IntN(21))/100))}

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
	rig := &replicaRig{replicas: rs, ctl: ctl, proxies: proxies, balancer: balancer, agents: agents}
	ev := rig.run(t, chaosRng, w, gate, done)
	if ctx.Err() != nil {
		t.Fatalf("the workload did not finish within %s: %d of %d tasks submitted, %d completed",
			budget, w.submitted.Load(), n, w.completed.Load())
	}
	t.Logf("workload done in %s", time.Since(started).Round(time.Millisecond))

	final := verifyTasks(t, ctl, w, n)
	dups := w.duplicates.Load()
	for _, c := range chains {
		if !c.broken {
			dups += int64(checkSecret(t, emu, c))
		}
	}
	redispatched := 0
	for _, ti := range final {
		if ti.GetAttempt() > 1 {
			redispatched++
		}
	}
	if ev.replicaKills < 2 {
		t.Errorf("%d replica kills, want at least 2", ev.replicaKills)
	}
	t.Logf("chaos-replicas: seed=%d submitted=%d completed=%d redispatched=%d duplicates=%d agent_kills=%d stream_drops=%d replica_kills=%d "+
		"expected_failures=%d ambiguous_submits=%d adopted=%d resubmitted=%d sync_gets=%d get_retries=%d replayed_writes=%d",
		seed, w.submitted.Load(), w.completed.Load(), redispatched, dups, ev.agentKills, ev.drops, ev.replicaKills,
		w.expectedFailures.Load(), w.ambiguous.Load(), w.adopted.Load(), w.resubmitted.Load(), w.gets.Load(), w.getRetries.Load(),
		replayedWrites(emu))
}

// waitDelegates waits until n delegates are connected to the cluster.
func waitDelegates(t testing.TB, api delegatev1.ManagerServiceClient, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := retryUnavailable(t, func(ctx context.Context) (*delegatev1.ListDelegatesResponse, error) {
			return api.ListDelegates(ctx, &delegatev1.ListDelegatesRequest{})
		})
		connected := 0
		for _, d := range resp.GetDelegates() {
			if d.GetConnected() {
				connected++
			}
		}
		if err == nil && connected >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d delegates connected after 30s (last error: %v)", connected, n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// replicaEvents counts what the replica chaos schedule did.
type replicaEvents struct{ agentKills, drops, replicaKills int }

// replicaRig is what the replica chaos schedule acts on.
type replicaRig struct {
	replicas []*manager
	ctl      delegatev1.ManagerServiceClient
	proxies  []*tcpProxy // the agents' streams, one proxy per replica
	balancer *tcpProxy   // the workload's API connections
	agents   []*chaosAgent
}

// run runs the schedule on the test goroutine until the workload is done:
// every 1 to 2.5 s, in turn, an agent kill (SIGKILL, a pause, start again
// under the same name), a drop of every proxied stream (the agents' and
// the API client's), or a replica kill (SIGKILL of one replica, drawn at
// random, a pause, restart on the same config); the first replica kill
// comes as soon as the workload marks it (20 to 40 % of the tasks
// submitted). It closes gate once it made an agent kill, a drop and two
// replica kills.
func (r *replicaRig) run(t *testing.T, rng *rand.Rand, w *workload, gate chan struct{}, done <-chan struct{}) replicaEvents {
	var ev replicaEvents
	marked := w.marked
	pause := func() time.Duration { return time.Duration(300+rng.IntN(1200)) * time.Millisecond }
	cycle := []string{"agent", "drop", "replica", "agent", "drop"}
	for i := 0; ; {
		what := ""
		select {
		case <-done:
			return ev
		case <-marked:
			what, marked = "replica", nil
		case <-time.After(time.Duration(1000+rng.IntN(1500)) * time.Millisecond):
			what = cycle[i%len(cycle)]
			i++
		}
		switch what {
		case "replica":
			m := r.replicas[rng.IntN(len(r.replicas))]
			inflight := w.awaitInflight(2 * time.Second)
			m.proc.kill(t)
			ev.replicaKills++
			d := pause()
			t.Logf("chaos: killed replica %s at %d submitted, %d submissions under way; restarting it in %s",
				m.Addr, w.submitted.Load(), inflight, d)
			time.Sleep(d)
			m.restart(t)
		case "drop":
			ev.drops++
			inflight := w.awaitInflight(time.Second)
			agentConns := 0
			for _, p := range r.proxies {
				agentConns += p.DropAll()
			}
			apiConns := r.balancer.DropAll()
			t.Logf("chaos: dropped %d agent streams and %d API connections, %d submissions under way", agentConns, apiConns, inflight)
		default:
			a, held := pickVictim(t, rng, r.ctl, r.agents)
			a.proc.kill(t)
			ev.agentKills++
			d := pause()
			t.Logf("chaos: killed %s holding %d leases; restarting it in %s", a.name, held, d)
			time.Sleep(d)
			a.proc = startAgent(t, r.replicas[0], a.name, a.opts)
		}
		if ev.agentKills > 0 && ev.drops > 0 && ev.replicaKills >= 2 && gate != nil {
			close(gate)
			gate = nil
		}
	}
}
