package main

import (
	"context"
	"fmt"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// pingCall submits one sync ping task with selectors and checks that it
// succeeded.
func pingCall(m apiSource, selectors ...string) call {
	return func(ctx context.Context, _ int) error {
		info, err := m.API().Ping(ctx, &delegatev1.PingRequest{Selectors: selectors})
		if err != nil {
			return err
		}
		if info.GetState() != delegatev1.TaskState_SUCCEEDED {
			return fmt.Errorf("ping %s: %s %s", info.GetId(), info.GetState(), info.GetOutcome().GetMessage())
		}
		return nil
	}
}

// rateRun is one offered rate of section 1: ping tasks, and as a
// baseline the gRPC health check of the same manager at the same rate (one
// round trip, no task).
type rateRun struct {
	Rate     float64
	Lat      latencies
	Baseline latencies
}

// healthCall is one gRPC health check of the manager.
func healthCall(m *manager) call {
	return func(ctx context.Context, _ int) error {
		_, err := healthpb.NewHealthClient(m.conns[0]).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
}

// dispatchResult is section 1.
type dispatchResult struct {
	Rates     []rateRun
	Sustained latencies // closed loop at saturation
	Workers   int
}

// benchDispatch measures ping tasks' submit-to-result latency at fixed
// offered rates, then the highest sustained rate: as many callers as the
// agents have slots, back to back.
func benchDispatch(ctx context.Context, m *manager, o options) dispatchResult {
	var r dispatchResult
	// Warm up connections, goroutines and the agents' pools.
	closedLoop(ctx, 32, 0, 2000, pingCall(m, "bench"))
	for _, rate := range []float64{100, 1000, 10000} {
		d := o.rateDuration
		if rate == 100 && d < 3*time.Second {
			d = 3 * time.Second // at least 300 samples for the p99
		}
		base := openLoop(ctx, rate, min(d, 2*time.Second), 20000, healthCall(m))
		l := openLoop(ctx, rate, d, 20000, pingCall(m, "bench"))
		r.Rates = append(r.Rates, rateRun{Rate: rate, Lat: l, Baseline: base})
		o.logf("  offered %6.0f/s for %s: %s achieved=%.0f/s dropped=%d (health check round trip: p50 %s p99 %s)",
			rate, d, l, l.throughputPerSecond, l.dropped, ms(base.P50), ms(base.P99))
	}
	r.Workers = o.agents * o.agentConcurrency
	r.Sustained = closedLoop(ctx, r.Workers, o.sustainDuration, 0, pingCall(m, "bench"))
	o.logf("  closed loop, %d callers for %s: %.0f tasks/s, %s", r.Workers, o.sustainDuration, r.Sustained.throughputPerSecond, r.Sustained)
	return r
}
