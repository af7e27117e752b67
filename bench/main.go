// Command bench is smdelegate's benchmark harness: it starts a manager, N
// agents (the real smd binary, built first) and internal/awsemu, all on
// 127.0.0.1, and measures eight things:
//
//  1. dispatch overhead: ping tasks' submit-to-result latency at offered
//     rates of 100/s, 1,000/s and 10,000/s, and the highest sustained rate;
//  2. the secrets path: GetSecretValue through manager and delegate against
//     the same call made directly with the SDK, same concurrency;
//  3. durable async mutations: create and update tasks per second with the
//     bolt store syncing to disk, and a count that nothing was lost;
//  4. agent footprint: RSS idle and under load, binary size, start to ready;
//  5. manager scale: 1,000 and 10,000 simulated delegate streams;
//  6. STS calls and new TCP connections per 10,000 tasks on one
//     assume-role connector;
//  7. what a delegate that never reads its stream costs the manager;
//  8. replicas: sustained pings and durable mutations with one and three
//     managers on one PostgreSQL server, and a sync get forwarded to
//     another replica beside one served locally.
//
// Usage, from the module root:
//
//	go run ./bench          # the full run (bench/README.md has its results)
//	go run ./bench -quick   # a short run of every section, under 2 minutes
//
// Speed is measured here, never in tests. See bench/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/smdelegate/smdelegate/internal/awsemu"
	"github.com/smdelegate/smdelegate/internal/harness"
)

// options are the sizes of a run.
type options struct {
	quick            bool
	only             string
	agents           int
	agentConcurrency int
	rateDuration     time.Duration // per offered rate in sections 1 and 5
	sustainDuration  time.Duration
	pathWorkers      int
	pathDuration     time.Duration
	awsLatency       time.Duration
	durableTasks     int
	durableWorkers   int
	stsTasks         int
	scaleSteps       []int
	scalePingRate    float64
	starts           int
	verbose          bool
}

// runs reports whether section n is part of this run.
func (o options) runs(n int) bool {
	return o.only == "" || strings.Contains(","+o.only+",", fmt.Sprintf(",%d,", n))
}

func (o options) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}

func parseFlags(args []string) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	quick := fs.Bool("quick", false, "a short run of every section (under 2 minutes)")
	agents := fs.Int("agents", 2, "agent processes")
	conc := fs.Int("concurrency", 256, "concurrency of each agent")
	awsLatency := fs.Duration("aws-latency", 10*time.Millisecond, "latency added to GetSecretValue in the second run of section 2")
	submitters := fs.Int("submitters", 256, "concurrent submitters of section 3")
	only := fs.String("only", "", "run only these sections, e.g. 1,2 (the report shows the others empty)")
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	o := options{
		only: *only, quick: *quick, agents: *agents, agentConcurrency: *conc, awsLatency: *awsLatency,
		rateDuration: 10 * time.Second, sustainDuration: 10 * time.Second,
		pathWorkers: 32, pathDuration: 10 * time.Second,
		durableTasks: 10000, durableWorkers: *submitters,
		stsTasks:   10000,
		scaleSteps: []int{1000, 10000}, scalePingRate: 1000,
		starts: 10,
	}
	if o.quick {
		o.rateDuration, o.sustainDuration, o.pathDuration = 2*time.Second, 2*time.Second, 2*time.Second
		o.durableTasks = 2000
		o.starts = 3
	}
	if o.agents < 1 || o.agentConcurrency < 1 {
		return o, errors.New("-agents and -concurrency must be at least 1")
	}
	return o, nil
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// results are the eight sections.
type results struct {
	started   time.Time
	took      time.Duration
	dispatch  dispatchResult
	path      secretsPathResult
	durable   durableResult
	footprint footprintResult
	scale     scaleResult
	sts       stsResult
	deaf      deafResult
	replicas  replicasResult
}

func run(ctx context.Context, o options) error {
	res := results{started: time.Now()}
	dir, err := os.MkdirTemp("", "smd-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	o.logf("building smd ...")
	bin, err := buildSmd(dir)
	if err != nil {
		return err
	}
	emu := awsemu.New(awsemu.Options{Roles: map[string]awsemu.Role{
		benchRoleARN: {ExternalID: benchExternalID, MaxSessionDuration: 12 * time.Hour},
	}})
	awsURL, err := emu.Start("127.0.0.1:0")
	if err != nil {
		return err
	}
	defer emu.Close()

	m, err := startManager(bin, dir+"/main", "manager", 4)
	if err != nil {
		return err
	}
	defer m.close()
	m.AgentEndpoints = []string{awsURL}
	// The agents' own AWS identity (the default chain the assume-role
	// connector starts from) is the emulator's key, from the environment.
	agentEnv := []string{
		"AWS_ACCESS_KEY_ID=" + awsemu.DefaultAccessKeyID, "AWS_SECRET_ACCESS_KEY=" + awsemu.DefaultSecretAccessKey,
		"AWS_REGION=us-east-1", "AWS_EC2_METADATA_DISABLED=true",
	}
	var agents []*harness.Proc
	for i := range o.agents {
		p, _, err := m.startAgent(bin, fmt.Sprintf("bench-%d", i+1), []string{"bench"}, o.agentConcurrency, agentEnv)
		if err != nil {
			return err
		}
		defer p.Stop(stopWait)
		agents = append(agents, p)
	}
	if err := setupConnectors(ctx, m, awsURL); err != nil {
		return err
	}

	if o.runs(4) {
		o.logf("4. agent footprint (measured first, on an idle manager)")
		if res.footprint, err = measureStarts(m, bin, o.starts, 3*time.Second, o); err != nil {
			return err
		}
	}
	if o.runs(1) {
		o.logf("1. dispatch overhead (ping tasks, %d agents x %d slots)", o.agents, o.agentConcurrency)
		res.dispatch = benchDispatch(ctx, m, o)
	}
	if o.runs(2) {
		o.logf("2. secrets path: GetSecretValue via manager and delegate vs the SDK directly")
		if res.path, err = benchSecretsPath(ctx, m, emu, awsURL, o); err != nil {
			return err
		}
	}
	if o.runs(3) {
		o.logf("3. durable async mutations (bolt, fsync per batch)")
		if res.durable, err = benchDurable(ctx, m, emu, o); err != nil {
			return err
		}
	}
	if o.runs(6) {
		o.logf("6. STS calls and new connections per %d tasks on one assume-role connector", o.stsTasks)
		if res.sts, err = benchSTS(ctx, m, emu, o); err != nil {
			return err
		}
	}
	if o.runs(4) {
		for _, p := range agents {
			if mem, err := readMem(p.Pid()); err == nil {
				res.footprint.LoadRSS = max(res.footprint.LoadRSS, mem.Peak)
			}
		}
		o.logf("  agent peak RSS after the load sections: %s", mib(res.footprint.LoadRSS))
	}
	for _, p := range agents {
		p.Stop(stopWait)
	}
	m.close()
	if ctx.Err() != nil {
		return ctx.Err()
	}

	if o.runs(5) {
		o.logf("5. manager scale (simulated delegate streams, one TCP connection each)")
		if res.scale, err = benchScale(ctx, bin, dir+"/scale", o); err != nil {
			return err
		}
	}
	if o.runs(7) {
		o.logf("7. a delegate that never reads its stream (heartbeats of unknown tasks)")
		if res.deaf, err = benchDeaf(ctx, bin, dir+"/deaf", 3*time.Second, o); err != nil {
			return err
		}
	}
	if o.runs(8) {
		o.logf("8. replicas on one PostgreSQL server (1 and 3 managers, %d agents)", 3)
		if res.replicas, err = benchReplicas(ctx, bin, dir+"/replicas", agentEnv, o); err != nil {
			return err
		}
	}
	res.took = time.Since(res.started)
	printReport(os.Stdout, res, o)
	return nil
}

// machine describes where the run happened.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("%s, %d CPUs, %s %s/%s", model, runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
