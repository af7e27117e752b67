package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/smdelegate/smdelegate/internal/awsemu"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// mutationRun is one kind of async mutation in section 3.
type mutationRun struct {
	Kind       string // "create" or "update"
	Submitted  int
	Submit     latencies     // the submit calls: persisted before acknowledged
	Complete   time.Duration // first submit to the last AWS call
	Succeeded  int
	Lost       int // submitted but not SUCCEEDED
	Duplicates int // versions at AWS beyond one per task
}

func (r mutationRun) submitRate() float64   { return float64(r.Submitted) / r.Submit.elapsed.Seconds() }
func (r mutationRun) completeRate() float64 { return float64(r.Succeeded) / r.Complete.Seconds() }

// durableResult is section 3.
type durableResult struct {
	Workers int
	Runs    []mutationRun
}

// benchDurable submits async create tasks for distinct secrets, then an
// async update of each, through the manager with the bolt store syncing
// every acknowledged task to disk; it waits for all of them at AWS and
// counts what arrived there.
func benchDurable(ctx context.Context, m apiSource, emu *awsemu.Server, o options) (durableResult, error) {
	r := durableResult{Workers: o.durableWorkers}
	n := o.durableTasks
	name := func(i int) string { return fmt.Sprintf("durable/s%06d", i) }
	for _, kind := range []string{"create", "update"} {
		emu.ResetCounters()
		ids := make([]string, n)
		submit := func(ctx context.Context, i int) error {
			req := &delegatev1.SecretRequest{Connector: &delegatev1.ConnectorRef{Identifier: accessKeyConnector}, Async: true}
			v := &delegatev1.SecretValue{Value: &delegatev1.SecretValue_StringValue{StringValue: kind + "-" + name(i)}}
			if kind == "create" {
				req.Op = &delegatev1.SecretRequest_Create{Create: &delegatev1.CreateSecretOp{Name: name(i), Value: v}}
			} else {
				req.Op = &delegatev1.SecretRequest_Update{Update: &delegatev1.UpdateSecretOp{Name: name(i), Value: v}}
			}
			info, err := m.API().Secret(ctx, req)
			if err != nil {
				return err
			}
			ids[i] = info.GetId()
			return nil
		}
		action := map[string]string{"create": "secretsmanager.CreateSecret", "update": "secretsmanager.UpdateSecret"}[kind]
		start := time.Now()
		run := mutationRun{Kind: kind, Submitted: n}
		run.Submit = closedLoop(ctx, r.Workers, 0, n, submit)
		if run.Submit.errors > 0 {
			return r, fmt.Errorf("%s: %d submits failed, first: %v", kind, run.Submit.errors, run.Submit.firstErr)
		}
		// Wait for the AWS calls (in-process counter, no polling of the
		// manager), then for every task to be final.
		deadline := time.Now().Add(5 * time.Minute)
		for emu.Calls(action) < n && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(time.Millisecond)
		}
		run.Complete = time.Since(start)
		states, err := finalStates(ctx, m, ids)
		if err != nil {
			return r, err
		}
		run.Succeeded = states[delegatev1.TaskState_SUCCEEDED]
		run.Lost = n - run.Succeeded
		wantVersions := map[string]int{"create": 1, "update": 2}[kind]
		for i := range n {
			st, ok := emu.Secret("bench/" + name(i))
			if !ok {
				continue // counted as lost through its task
			}
			run.Duplicates += max(0, len(st.Versions)-wantVersions)
		}
		o.logf("  %-6s %d tasks, %d submitters: %.0f persisted submits/s (p50 %s, p99 %s); all at AWS after %s (%.0f/s); succeeded %d, lost %d, duplicate versions %d",
			kind, n, r.Workers, run.submitRate(), ms(run.Submit.P50), ms(run.Submit.P99), run.Complete.Round(time.Millisecond),
			run.completeRate(), run.Succeeded, run.Lost, run.Duplicates)
		r.Runs = append(r.Runs, run)
	}
	return r, nil
}

// finalStates waits for every task to be final and counts their states.
func finalStates(ctx context.Context, m apiSource, ids []string) (map[delegatev1.TaskState]int, error) {
	var (
		mu     sync.Mutex
		counts = map[delegatev1.TaskState]int{}
		wg     sync.WaitGroup
		errs   = make(chan error, 1)
	)
	work := make(chan string)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range work {
				for {
					info, err := m.API().GetTask(ctx, &delegatev1.GetTaskRequest{Id: id})
					if err != nil {
						select {
						case errs <- fmt.Errorf("get task %s: %w", id, err):
						default:
						}
						break
					}
					if s := info.GetState(); s == delegatev1.TaskState_SUCCEEDED || s == delegatev1.TaskState_FAILED {
						mu.Lock()
						counts[s]++
						mu.Unlock()
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	for _, id := range ids {
		work <- id
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		return counts, err
	default:
		return counts, nil
	}
}
