package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/smdelegate/smdelegate/internal/awsemu"
	"github.com/smdelegate/smdelegate/internal/harness"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// replicaRun is one cluster size of section 8.
type replicaRun struct {
	Replicas int
	// Sustained is pings back to back, the callers spread over the
	// replicas.
	Sustained latencies
	Durable   durableResult
}

// replicasResult is section 8.
type replicasResult struct {
	Agents int
	Runs   []replicaRun
	// LocalGet and RemoteGet are sync gets of one secret whose only
	// eligible delegate is connected to replica 3: submitted to replica 3
	// (the delegate is local) and to replica 1 (the task is forwarded over
	// the peer link).
	LocalGet, RemoteGet latencies
	// Skipped says why the section did not run (no PostgreSQL here).
	Skipped string
}

// replicaSet is the replicas of one cluster; API hands out their clients
// in turn, as a load balancer in front of them would.
type replicaSet struct {
	ms   []*manager
	next atomic.Uint64
}

func (s *replicaSet) API() delegatev1.ManagerServiceClient {
	return s.ms[s.next.Add(1)%uint64(len(s.ms))].API()
}

func (s *replicaSet) close() {
	for _, m := range s.ms {
		m.close()
	}
}

// startReplicas starts n `smd manager` replicas of one cluster on the
// PostgreSQL database dsn.
func startReplicas(bin, dir, dsn string, n int) (*replicaSet, error) {
	su, err := newSetup(dir)
	if err != nil {
		return nil, err
	}
	peerFile := filepath.Join(dir, "peer.token")
	if err := os.WriteFile(peerFile, []byte(harness.RandomToken("smdp_")), 0o600); err != nil {
		return nil, err
	}
	su.Extra = map[string]any{
		"store":   map[string]any{"driver": "postgres", "dsn": dsn},
		"cluster": map[string]any{"name": "bench", "peer_token_file": peerFile},
	}
	s := &replicaSet{}
	for i := range n {
		m, err := startManagerWith(bin, filepath.Join(dir, fmt.Sprintf("replica-%d", i+1)), fmt.Sprintf("replica-%d", i+1), 4, su)
		if err != nil {
			s.close()
			return nil, err
		}
		s.ms = append(s.ms, m)
	}
	return s, nil
}

// benchReplicas is section 8: the same agents and load against one
// replica and against three, on a PostgreSQL server of its own per run;
// then, with three, a sync get served by a delegate on the replica that
// took the call beside one forwarded to another replica.
func benchReplicas(ctx context.Context, bin, dir string, agentEnv []string, o options) (replicasResult, error) {
	r := replicasResult{Agents: 3}
	if _, err := harness.PostgresBinDir(); err != nil {
		r.Skipped = err.Error()
		o.logf("  skipped: %v", err)
		return r, nil
	}
	for _, n := range []int{1, 3} {
		run, local, remote, err := benchCluster(ctx, bin, filepath.Join(dir, fmt.Sprintf("cluster-%d", n)), n, r.Agents, agentEnv, o)
		if err != nil {
			return r, fmt.Errorf("%d replicas: %w", n, err)
		}
		r.Runs = append(r.Runs, run)
		if n == 3 {
			r.LocalGet, r.RemoteGet = local, remote
		}
	}
	return r, nil
}

// benchCluster runs one cluster size.
func benchCluster(ctx context.Context, bin, dir string, n, agents int, agentEnv []string, o options) (run replicaRun, local, remote latencies, err error) {
	run.Replicas = n
	pg, err := harness.StartPostgres()
	if err != nil {
		return run, local, remote, err
	}
	defer pg.Close()
	emu := awsemu.New(awsemu.Options{})
	awsURL, err := emu.Start("127.0.0.1:0")
	if err != nil {
		return run, local, remote, err
	}
	defer emu.Close()
	set, err := startReplicas(bin, dir, pg.DSN, n)
	if err != nil {
		return run, local, remote, err
	}
	defer set.close()
	// One agent per replica (all on the one replica when n is 1); the
	// last one also serves the selector "far", which only it has.
	for i := range agents {
		m := set.ms[i%n]
		m.AgentEndpoints = []string{awsURL}
		tags := []string{"bench"}
		if i == agents-1 {
			tags = append(tags, "far")
		}
		p, _, err := m.startAgent(bin, fmt.Sprintf("bench-%d", i+1), tags, o.agentConcurrency, agentEnv)
		if err != nil {
			return run, local, remote, err
		}
		defer p.Stop(stopWait)
	}
	if err := setupConnectors(ctx, set.ms[0], awsURL); err != nil {
		return run, local, remote, err
	}

	closedLoop(ctx, 32, 0, 2000, pingCall(set, "bench"))
	workers := agents * o.agentConcurrency
	run.Sustained = closedLoop(ctx, workers, o.sustainDuration, 0, pingCall(set, "bench"))
	o.logf("  %d replica(s): pings, %d callers for %s: %.0f/s (%s)", n, workers, o.sustainDuration, run.Sustained.throughputPerSecond, run.Sustained)
	if run.Durable, err = benchDurable(ctx, set, emu, o); err != nil {
		return run, local, remote, err
	}
	if n < 3 {
		return run, local, remote, nil
	}

	// The far connector's only eligible delegate is on the last replica.
	const farConnector = "bench_far"
	if _, err := set.ms[0].API().CreateConnector(ctx, &delegatev1.CreateConnectorRequest{Connector: &delegatev1.Connector{
		Identifier: farConnector, Name: "bench far",
		CredentialType: delegatev1.CredentialType_ACCESS_KEY, AccessKeyId: awsemu.DefaultAccessKeyID,
		SecretAccessKey: "builtin:bench_secret_key", Region: "us-east-1", SecretNamePrefix: "bench",
		DelegateSelectors: []string{"far"}, EndpointUrl: awsURL, StsEndpointUrl: awsURL,
	}}); err != nil {
		return run, local, remote, fmt.Errorf("create connector %s: %w", farConnector, err)
	}
	const want = "bench-value"
	emu.PutSecretDirect("bench/"+getTarget, want, nil)
	near, far := set.ms[n-1], set.ms[0]
	closedLoop(ctx, 1, 0, 200, getViaSmd(near, farConnector, want))
	closedLoop(ctx, 1, 0, 200, getViaSmd(far, farConnector, want))
	local = closedLoop(ctx, 1, o.pathDuration, 0, getViaSmd(near, farConnector, want))
	remote = closedLoop(ctx, 1, o.pathDuration, 0, getViaSmd(far, farConnector, want))
	if local.errors+remote.errors > 0 {
		return run, local, remote, fmt.Errorf("gets: errors: local %d (%v), forwarded %d (%v)", local.errors, local.firstErr, remote.errors, remote.firstErr)
	}
	o.logf("  sync get, delegate on the replica taking the call: p50 %s p99 %s; on another replica: p50 %s p99 %s",
		ms(local.P50), ms(local.P99), ms(remote.P50), ms(remote.P99))
	return run, local, remote, nil
}
