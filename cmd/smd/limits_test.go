package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/smdelegate/smdelegate/internal/seal"
	"github.com/smdelegate/smdelegate/manager"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// Item 6 of issue 9, the CLI's side: smd waits out the manager's rate
// limit (ResourceExhausted with RetryInfo) and only that; it pages through
// ListTasks.

// rateRefusal is the manager's refusal by limits.submit_rate.
func rateRefusal(t *testing.T, wait time.Duration) error {
	t.Helper()
	st, err := status.New(codes.ResourceExhausted, "too many submissions (limits.submit_rate)").WithDetails(
		&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{Subject: "operator token ci", Description: "limits.submit_rate"}}},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(wait)})
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}

// TestItem6RetryHonoursRetryInfo: a rate refusal is retried after the
// delay it names, for stored submissions and for reads alike; a
// ResourceExhausted without RetryInfo (a scope at its cap, or THROTTLED
// from AWS) is an answer and never retried; reads are never retried on
// Unavailable (only stored submissions are).
func TestItem6RetryHonoursRetryInfo(t *testing.T) {
	t.Parallel()
	const told = 40 * time.Millisecond
	throttled := status.Error(codes.ResourceExhausted, "THROTTLED: Rate exceeded")
	scopeFull := func() error {
		st, _ := status.New(codes.ResourceExhausted, "5 tasks of scope acme are unfinished").WithDetails(
			&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{Subject: "scope acme", Description: "limits.scope_unfinished_tasks"}}})
		return st.Err()
	}()
	tests := []struct {
		name      string
		stored    bool
		errs      []error
		wantCalls int
		wantCode  codes.Code
	}{
		{name: "stored, rate refusal", stored: true, errs: []error{rateRefusal(t, told)}, wantCalls: 2},
		{name: "read, rate refusal", errs: []error{rateRefusal(t, told), rateRefusal(t, told)}, wantCalls: 3},
		{name: "stored, throttled by AWS", stored: true, errs: []error{throttled}, wantCalls: 1, wantCode: codes.ResourceExhausted},
		{name: "read, throttled by AWS", errs: []error{throttled}, wantCalls: 1, wantCode: codes.ResourceExhausted},
		{name: "stored, scope full", stored: true, errs: []error{scopeFull}, wantCalls: 1, wantCode: codes.ResourceExhausted},
		{name: "read, unavailable", errs: []error{status.Error(codes.Unavailable, "down")}, wantCalls: 1, wantCode: codes.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := &script{errs: tt.errs}
			var stderr bytes.Buffer
			start := time.Now()
			var err error
			if tt.stored {
				_, err = fastRetry.submit(t.Context(), &stderr, "rid-6", false, s.call)
			} else {
				_, err = fastRetry.send(t.Context(), &stderr, s.call)
			}
			if s.calls != tt.wantCalls || status.Code(err) != tt.wantCode {
				t.Fatalf("%d attempts, error %v; want %d attempts and code %v (stderr %q)", s.calls, err, tt.wantCalls, tt.wantCode, stderr.String())
			}
			// Each retry waited at least what the manager asked (fastRetry
			// alone would pause at most 20ms).
			if retries := tt.wantCalls - 1; retries > 0 && tt.wantCode == codes.OK {
				if took := time.Since(start); took < time.Duration(retries)*told {
					t.Errorf("%d retries took %s, want at least %s each (RetryInfo)", retries, took, told)
				}
				if !strings.Contains(stderr.String(), "limits.submit_rate") {
					t.Errorf("stderr %q does not say why smd waits", stderr.String())
				}
			}
		})
	}

	// A wait past the window is not waited for.
	s := &script{errs: []error{rateRefusal(t, time.Hour)}}
	if _, err := fastRetry.submit(t.Context(), &bytes.Buffer{}, "rid-7", false, s.call); s.calls != 1 ||
		!strings.Contains(err.Error(), "gave up") || strings.Contains(err.Error(), "may have been made") {
		t.Errorf("submit with RetryInfo of 1h: %d attempts, %v; want one attempt and a plain give-up", s.calls, err)
	}
}

// limitedManager starts a manager on 127.0.0.1:0 with an operator token
// (returned) and tweak applied.
func limitedManager(t *testing.T, tweak func(*manager.Config)) (addr, token string) {
	t.Helper()
	key, err := seal.LoadKey("", seal.GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	token = "item6-operator-token"
	cfg := manager.DefaultConfig()
	cfg.Listen, cfg.HTTPListen, cfg.DataDir = "127.0.0.1:0", "", t.TempDir()
	cfg.TLS.Insecure, cfg.MasterKey = true, key
	cfg.Auth.DelegateTokens = []manager.TokenConfig{{Name: "d", SHA256: manager.HashToken("item6-delegate-token")}}
	cfg.Auth.OperatorTokens = []manager.TokenConfig{{Name: "cli", SHA256: manager.HashToken(token)}}
	cfg.Dispatch.QueueTimeout = cfg.Dispatch.TaskDeadline // no delegate: tasks stay queued
	tweak(&cfg)
	srv, err := manager.New(cfg, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close(context.Background()) })
	return srv.Addr(), token
}

// smdIn runs smd ARGS in this process against addr with token.
func smdIn(t *testing.T, addr, token string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	root := newRoot()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(append(args, "--manager", addr, "--token", token, "--insecure"))
	err = root.Execute()
	return out.String(), errb.String(), err
}

// TestItem6CLIWaitsOutRateLimit: against a manager allowing one
// submission a second, back-to-back `smd delegate ping --async` calls all
// succeed: the refused one waits the delay the manager names and says so.
func TestItem6CLIWaitsOutRateLimit(t *testing.T) {
	t.Parallel()
	addr, token := limitedManager(t, func(c *manager.Config) { c.Limits.SubmitRate, c.Limits.SubmitBurst = 1, 1 })
	retried := false
	for i := 0; i < 5 && !retried; i++ {
		out, stderr, err := smdIn(t, addr, token, "delegate", "ping", "--async")
		if err != nil || strings.TrimSpace(out) == "" {
			t.Fatalf("smd delegate ping --async #%d = %q, %v (stderr %q), want a task id", i, out, err, stderr)
		}
		retried = strings.Contains(stderr, "retrying in") && strings.Contains(stderr, "limits.submit_rate")
	}
	if !retried {
		t.Error("no back-to-back ping was refused and retried, want the second one to wait")
	}
}

// TestItem6CLITaskListPages: with more tasks than one page (1000),
// `smd task list --limit 0` lists them all, and a short list says how to
// go on, with a token that continues exactly after it.
func TestItem6CLITaskListPages(t *testing.T) {
	t.Parallel()
	const n = 1010
	addr, token := limitedManager(t, func(c *manager.Config) {
		c.Limits.SubmitRate, c.Limits.SubmitBurst, c.Limits.ScopeUnfinishedTasks = 100000, 100000, 100000
	})
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	api := delegatev1.NewManagerServiceClient(conn)
	ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+token)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				if _, err := api.Ping(ctx, &delegatev1.PingRequest{Async: true}); err != nil {
					t.Errorf("Ping = %v", err)
					return
				}
			}
		})
	}
	wg.Wait()

	type listing struct {
		Tasks []struct {
			ID string `json:"id"`
		} `json:"tasks"`
		NextPageToken string `json:"next_page_token"`
	}
	list := func(args ...string) (listing, string) {
		out, stderr, err := smdIn(t, addr, token, append([]string{"task", "list", "-o", "json"}, args...)...)
		if err != nil {
			t.Fatalf("smd task list %v = %v (stderr %q)", args, err, stderr)
		}
		var l listing
		if err := json.Unmarshal([]byte(out), &l); err != nil {
			t.Fatalf("smd task list %v: %v\n%s", args, err, out)
		}
		return l, stderr
	}
	all, _ := list("--limit", "0")
	seen := map[string]bool{}
	for _, tk := range all.Tasks {
		seen[tk.ID] = true
	}
	if len(all.Tasks) != n || len(seen) != n || all.NextPageToken != "" {
		t.Errorf("smd task list --limit 0 = %d tasks (%d distinct), next %q; want all %d once and no next page",
			len(all.Tasks), len(seen), all.NextPageToken, n)
	}
	first, _ := list("--limit", "3")
	if len(first.Tasks) != 3 || first.NextPageToken == "" {
		t.Fatalf("smd task list --limit 3 = %d tasks, next %q; want 3 and a token", len(first.Tasks), first.NextPageToken)
	}
	next, _ := list("--limit", "3", "--page-token", first.NextPageToken)
	for i, tk := range next.Tasks {
		if want := all.Tasks[3+i].ID; tk.ID != want {
			t.Errorf("page 2, task %d = %s, want %s (the 4th newest on)", i, tk.ID, want)
		}
	}
	// The table says how to go on, on stderr.
	_, stderr, err := smdIn(t, addr, token, "task", "list", "--limit", "2")
	if err != nil || !strings.Contains(stderr, "smd task list --page-token ") {
		t.Errorf("smd task list --limit 2 = %v, stderr %q; want a hint with --page-token", err, stderr)
	}
}
