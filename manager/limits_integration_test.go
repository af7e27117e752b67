package manager_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/manager"
	"github.com/smdelegate/smdelegate/manager/connector"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// Item 6 of issue 9: no limits on submission. Each test floods the
// manager as an operator token would and checks the refusal (code,
// details, message), that nothing beyond the limit was stored, and that
// other tokens and scopes are not affected.

// refusal is what a limit refusal carries.
type refusal struct {
	msg   string
	quota *errdetails.QuotaFailure
	retry *errdetails.RetryInfo
}

// wantRefusal checks err is a ResourceExhausted refusal by limit
// ("limits.submit_rate", ...) and returns its details.
func wantRefusal(t *testing.T, call string, err error, limit string) refusal {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted {
		t.Fatalf("%s = %v, want ResourceExhausted", call, err)
	}
	r := refusal{msg: st.Message()}
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.QuotaFailure:
			r.quota = d
		case *errdetails.RetryInfo:
			r.retry = d
		}
	}
	if r.quota == nil || len(r.quota.GetViolations()) != 1 || r.quota.GetViolations()[0].GetDescription() != limit {
		t.Fatalf("%s: details %v, want a QuotaFailure of %s", call, st.Details(), limit)
	}
	if !strings.Contains(r.msg, limit) {
		t.Errorf("%s: message %q does not name %s", call, r.msg, limit)
	}
	return r
}

// listIDs lists the ids of the tasks ctx's token sees, following pages.
func listIDs(t *testing.T, c delegatev1.ManagerServiceClient, ctx context.Context) []string {
	t.Helper()
	var out []string
	req := &delegatev1.ListTasksRequest{Limit: 1000}
	for {
		resp, err := c.ListTasks(ctx, req)
		if err != nil {
			t.Fatalf("ListTasks(%v) = %v", req, err)
		}
		for _, ti := range resp.GetTasks() {
			out = append(out, ti.GetId())
		}
		if resp.GetNextPageToken() == "" {
			return out
		}
		req.PageToken = resp.GetNextPageToken()
	}
}

// sameIDs reports whether got holds exactly the ids of want, once each.
func sameIDs(got, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	seen := map[string]int{}
	for _, id := range want {
		seen[id]++
	}
	for _, id := range got {
		if seen[id]--; seen[id] < 0 {
			return false
		}
	}
	return true
}

// scrapeMetrics returns the manager's /metrics text.
func scrapeMetrics(t *testing.T, srv *manager.Server) string {
	t.Helper()
	resp, err := http.Get("http://" + srv.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// metricValue is the value of one series in a /metrics text, 0 if absent.
func metricValue(text, series string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// TestItem6SubmitRateFlood: a project-scoped operator token floods async
// pings. Past its burst it is refused ResourceExhausted with RetryInfo
// (a delay within one refill) naming limits.submit_rate and the token's
// name, never its value; only the accepted tasks are stored; the refusals
// are counted by token name; another token and the admin submit at once.
func TestItem6SubmitRateFlood(t *testing.T) {
	t.Parallel()
	const burst, flood = 10, 60
	srv := mustManager(t, func(c *manager.Config) {
		withScopedTokens(c)
		c.HTTPListen = "127.0.0.1:0"
		c.Limits.SubmitRate, c.Limits.SubmitBurst = 1, burst
	})
	attacker, actx := operatorAs(t, srv.Addr(), operatorAP)
	var accepted []string
	refused := 0
	start := time.Now()
	for i := range flood {
		info, err := attacker.Ping(actx, &delegatev1.PingRequest{Async: true})
		if err == nil {
			accepted = append(accepted, info.GetId())
			continue
		}
		refused++
		r := wantRefusal(t, fmt.Sprintf("Ping #%d", i), err, "limits.submit_rate")
		if d := r.retry.GetRetryDelay().AsDuration(); r.retry == nil || d <= 0 || d > time.Second {
			t.Fatalf("Ping #%d: RetryInfo %v, want a delay in (0, 1s]: one token a second", i, r.retry)
		}
		if strings.Contains(r.msg, operatorAP.token) || !strings.Contains(r.msg, `"o-acct_a/org1/proj1"`) {
			t.Fatalf("Ping #%d: message %q, want the token's name and never its value", i, r.msg)
		}
	}
	// The bucket holds burst tokens and gains one a second.
	most := burst + int(time.Since(start)/time.Second) + 1
	if len(accepted) < burst || len(accepted) > most {
		t.Errorf("%d of %d pings accepted, want between %d and %d", len(accepted), flood, burst, most)
	}
	if got := listIDs(t, attacker, actx); !sameIDs(got, accepted) {
		t.Errorf("stored tasks of the flooding token: %d %v, want exactly the %d accepted", len(got), got, len(accepted))
	}

	// Other tokens have buckets of their own.
	for _, tok := range []scopedToken{operatorB, {operatorToken, nil}} {
		c, ctx := operatorAs(t, srv.Addr(), tok)
		for i := range burst {
			if _, err := c.Ping(ctx, &delegatev1.PingRequest{Async: true}); err != nil {
				t.Fatalf("Ping #%d as %s after the flood = %v, want accepted", i, connector.ScopeKey(tok.scope), err)
			}
		}
	}

	text := scrapeMetrics(t, srv)
	series := `smd_limit_refusals_total{limit="submit_rate",token="o-acct_a/org1/proj1"}`
	if got := metricValue(text, series); got != float64(refused) {
		t.Errorf("%s = %v, want %d", series, got, refused)
	}
	for _, tok := range []string{operatorAP.token, operatorToken, operatorB.token} {
		if strings.Contains(text, tok) {
			t.Errorf("/metrics holds a token value")
		}
	}
}

// TestItem6ScopeUnfinishedCap: a project token submits 20 async pings at
// once into a scope capped at 5 unfinished tasks, with no delegate to run
// them. Exactly 5 are stored; the rest are refused with a QuotaFailure
// naming the scope and no RetryInfo (retrying at once cannot help). Other
// scopes, the parent account's own included, still submit. Once a
// delegate has run the 5, the scope takes tasks again.
func TestItem6ScopeUnfinishedCap(t *testing.T) {
	t.Parallel()
	const limit, flood = 5, 20
	srv := mustManager(t, func(c *manager.Config) {
		withScopedTokens(c)
		c.HTTPListen = "127.0.0.1:0"
		c.Limits.ScopeUnfinishedTasks = limit
		c.Dispatch.QueueTimeout = config.Duration(time.Minute)
	})
	attacker, actx := operatorAs(t, srv.Addr(), operatorAP)
	var mu sync.Mutex // guards accepted, errs
	var accepted []string
	var errs []error
	var wg sync.WaitGroup
	for range flood {
		wg.Go(func() {
			info, err := attacker.Ping(actx, &delegatev1.PingRequest{Async: true})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			accepted = append(accepted, info.GetId())
		})
	}
	wg.Wait()
	if len(accepted) != limit {
		t.Fatalf("%d of %d concurrent pings accepted (errors %v), want exactly %d", len(accepted), flood, errs, limit)
	}
	for _, err := range errs {
		r := wantRefusal(t, "Ping beyond the cap", err, "limits.scope_unfinished_tasks")
		if r.retry != nil {
			t.Errorf("refusal %q carries RetryInfo %v, want none", r.msg, r.retry)
		}
		if got := r.quota.GetViolations()[0].GetSubject(); got != "scope acct_a/org1/proj1" {
			t.Errorf("QuotaFailure subject %q, want scope acct_a/org1/proj1", got)
		}
	}
	if got := listIDs(t, attacker, actx); !sameIDs(got, accepted) {
		t.Errorf("stored tasks of the scope: %v, want exactly the %d accepted", got, limit)
	}
	series := `smd_limit_refusals_total{limit="scope_unfinished_tasks",token="o-acct_a/org1/proj1"}`
	if got := metricValue(scrapeMetrics(t, srv), series); got != flood-limit {
		t.Errorf("%s = %v, want %d", series, got, flood-limit)
	}

	// Other scopes have caps of their own: another account, and the
	// account above the full project.
	for _, tok := range []scopedToken{operatorB, operatorA} {
		c, ctx := operatorAs(t, srv.Addr(), tok)
		for i := range limit {
			if _, err := c.Ping(ctx, &delegatev1.PingRequest{Async: true}); err != nil {
				t.Fatalf("Ping #%d as %s = %v, want accepted", i, connector.ScopeKey(tok.scope), err)
			}
		}
	}

	// A delegate of the project runs the 5; then the scope has room.
	startAgentWith(t, srv.Addr(), delegateAP, "dlg-a-proj1", 5, nil)
	waitFor(t, 10*time.Second, func() bool {
		for _, id := range accepted {
			ti, err := attacker.GetTask(actx, &delegatev1.GetTaskRequest{Id: id})
			if err != nil || ti.GetOutcome() == nil {
				return false
			}
		}
		return true
	}, "the scope's tasks to finish")
	if _, err := attacker.Ping(actx, &delegatev1.PingRequest{Async: true}); err != nil {
		t.Errorf("Ping after the scope's tasks finished = %v, want accepted", err)
	}
}

// TestItem6ScopePayloadBytesCap: async creates of 60,000-byte values into
// a scope capped at 200,000 payload bytes: three fit, the others are
// refused naming limits.scope_payload_bytes and are not stored, while a
// small ping still fits in what is left: the cap is on bytes, not tasks.
func TestItem6ScopePayloadBytesCap(t *testing.T) {
	t.Parallel()
	srv := mustManager(t, func(c *manager.Config) {
		withScopedTokens(c)
		c.Limits.ScopePayloadBytes = 200_000
		c.Dispatch.QueueTimeout = config.Duration(time.Minute)
	})
	c, ctx := operatorAs(t, srv.Addr(), operatorAP)
	ref := &delegatev1.ConnectorRef{Scope: scopeAP, Identifier: "aws_big"}
	if _, err := c.CreateConnector(ctx, &delegatev1.CreateConnectorRequest{Connector: &delegatev1.Connector{
		Identifier: ref.GetIdentifier(), Name: "big", Scope: scopeAP, CredentialType: delegatev1.CredentialType_ACCESS_KEY,
		AccessKeyId: "AKIAEXAMPLE", SecretAccessKey: "env:AWS_SECRET_ACCESS_KEY", Region: "eu-west-1",
	}}); err != nil {
		t.Fatalf("CreateConnector: %v", err)
	}
	value := strings.Repeat("v", 60_000)
	var accepted []string
	for i := range 6 {
		info, err := c.Secret(ctx, &delegatev1.SecretRequest{Connector: ref, Async: true, Op: &delegatev1.SecretRequest_Create{
			Create: &delegatev1.CreateSecretOp{Name: fmt.Sprintf("big-%d", i), Value: &delegatev1.SecretValue{
				Value: &delegatev1.SecretValue_StringValue{StringValue: value}}}}})
		if err != nil {
			wantRefusal(t, fmt.Sprintf("Secret(create big-%d)", i), err, "limits.scope_payload_bytes")
			continue
		}
		accepted = append(accepted, info.GetId())
	}
	if len(accepted) != 3 {
		t.Fatalf("%d creates of 60,000 bytes accepted under a 200,000-byte cap, want 3", len(accepted))
	}
	info, err := c.Ping(ctx, &delegatev1.PingRequest{Async: true})
	if err != nil {
		t.Fatalf("small Ping in the full scope = %v, want accepted", err)
	}
	if got := listIDs(t, c, ctx); !sameIDs(got, append(accepted, info.GetId())) {
		t.Errorf("stored tasks of the scope: %v, want the 3 creates and the ping", got)
	}
}

// TestItem6RecoveredTasksCount: the unfinished tasks a restarted manager
// recovers count against their scope, so a restart does not reset the
// cap.
func TestItem6RecoveredTasksCount(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tweak := func(c *manager.Config) {
		withScopedTokens(c)
		c.DataDir = dir
		c.Limits.ScopeUnfinishedTasks = 3
		c.Dispatch.QueueTimeout = config.Duration(time.Minute)
	}
	srv := mustManager(t, tweak)
	c, ctx := operatorAs(t, srv.Addr(), operatorAP)
	for i := range 3 {
		if _, err := c.Ping(ctx, &delegatev1.PingRequest{Async: true}); err != nil {
			t.Fatalf("Ping #%d = %v", i, err)
		}
	}
	if err := srv.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	srv = mustManager(t, tweak)
	c, ctx = operatorAs(t, srv.Addr(), operatorAP)
	_, err := c.Ping(ctx, &delegatev1.PingRequest{Async: true})
	wantRefusal(t, "Ping after a restart with 3 tasks recovered", err, "limits.scope_unfinished_tasks")
	if got := listIDs(t, c, ctx); len(got) != 3 {
		t.Errorf("stored tasks after the refused ping: %v, want the 3 recovered", got)
	}
}

// TestItem6ListTasksPaging: a limit of 1,000,000 gets one page of 1000
// and a page token; following the tokens lists every task exactly once,
// newest first; a scoped token given another's page token still sees
// only its scope; a forged token is InvalidArgument naming page_token.
func TestItem6ListTasksPaging(t *testing.T) {
	t.Parallel()
	const n, nB = 1050, 20
	srv := mustManager(t, func(c *manager.Config) {
		withScopedTokens(c)
		// The test stores more tasks than the defaults allow.
		c.Limits.SubmitRate, c.Limits.SubmitBurst, c.Limits.ScopeUnfinishedTasks = 100000, 100000, 100000
	})
	admin, actx := operator(t, srv.Addr())
	opB, bctx := operatorAs(t, srv.Addr(), operatorB)
	submitted := make([]string, n+nB)
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < n+nB; i += 16 {
				c, ctx := admin, actx
				if i >= n {
					c, ctx = opB, bctx
				}
				info, err := c.Ping(ctx, &delegatev1.PingRequest{Async: true})
				if err != nil {
					t.Errorf("Ping #%d = %v", i, err)
					return
				}
				submitted[i] = info.GetId()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	first, err := admin.ListTasks(actx, &delegatev1.ListTasksRequest{Limit: 1_000_000})
	if err != nil {
		t.Fatalf("ListTasks(limit 1000000) = %v", err)
	}
	if len(first.GetTasks()) != 1000 || first.GetNextPageToken() == "" {
		t.Fatalf("ListTasks(limit 1000000) = %d tasks, next page token %q; want 1000 and a token", len(first.GetTasks()), first.GetNextPageToken())
	}
	var all []*delegatev1.TaskInfo
	req := &delegatev1.ListTasksRequest{Limit: 1_000_000}
	for pages := 1; ; pages++ {
		resp, err := admin.ListTasks(actx, req)
		if err != nil {
			t.Fatalf("ListTasks page %d = %v", pages, err)
		}
		all = append(all, resp.GetTasks()...)
		if resp.GetNextPageToken() == "" {
			break
		}
		if pages > 10 {
			t.Fatal("ListTasks pages do not end")
		}
		req.PageToken = resp.GetNextPageToken()
	}
	var got []string
	for i, ti := range all {
		got = append(got, ti.GetId())
		if i > 0 && ti.GetCreatedAt().AsTime().After(all[i-1].GetCreatedAt().AsTime()) {
			t.Errorf("task %d (%s) is newer than the one before it: pages are not newest first", i, ti.GetId())
		}
	}
	if !sameIDs(got, submitted) {
		t.Errorf("pages list %d tasks, want each of the %d submitted exactly once", len(got), len(submitted))
	}

	if resp, err := admin.ListTasks(actx, &delegatev1.ListTasksRequest{}); err != nil || len(resp.GetTasks()) != 100 {
		t.Errorf("ListTasks() = %d tasks, %v; want the default page of 100", len(resp.GetTasks()), err)
	}
	// The admin's page token does not widen B's view.
	resp, err := opB.ListTasks(bctx, &delegatev1.ListTasksRequest{PageToken: first.GetNextPageToken(), Limit: 1000})
	if err != nil {
		t.Fatalf("ListTasks as B with the admin's page token = %v", err)
	}
	for _, ti := range resp.GetTasks() {
		if !within(scopeB, ti.GetScope()) {
			t.Errorf("ListTasks as B with the admin's page token lists task %s of scope %q", ti.GetId(), connector.ScopeKey(ti.GetScope()))
		}
	}
	for _, bad := range []*delegatev1.ListTasksRequest{{PageToken: "not-a-token"}, {PageToken: "AQ"}, {Limit: -1}} {
		_, err := admin.ListTasks(actx, bad)
		field := "page_token"
		if bad.GetLimit() < 0 {
			field = "limit"
		}
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), field) {
			t.Errorf("ListTasks(%v) = %v, want InvalidArgument naming %s", bad, err, field)
		}
	}
}

// TestItem6PingSleepCapped: a ping may not sleep longer than
// limits.ping_max_sleep (10s by default, half the test deadline here):
// sync or async, it is refused InvalidArgument naming "sleep", and
// nothing is stored.
func TestItem6PingSleepCapped(t *testing.T) {
	t.Parallel()
	srv := mustManager(t, nil)
	c, ctx := operator(t, srv.Addr())
	for _, async := range []bool{false, true} {
		for _, sleep := range []time.Duration{10*time.Second + time.Millisecond, time.Hour, -time.Second} {
			_, err := c.Ping(ctx, &delegatev1.PingRequest{Sleep: durationpb.New(sleep), Async: async})
			msg, fields := fieldViolations(t, fmt.Sprintf("Ping(sleep %s, async %v)", sleep, async), err)
			if !strings.Contains(msg, "sleep: must be between 0 and 10s (limits.ping_max_sleep)") || len(fields) != 1 || fields[0] != "sleep" {
				t.Errorf("Ping(sleep %s, async %v) = %q, fields %v; want InvalidArgument naming sleep and limits.ping_max_sleep", sleep, async, msg, fields)
			}
		}
	}
	if got := listIDs(t, c, ctx); len(got) != 0 {
		t.Errorf("stored tasks after refused pings: %v, want none", got)
	}
	if _, err := c.Ping(ctx, &delegatev1.PingRequest{Sleep: durationpb.New(10 * time.Second), Async: true}); err != nil {
		t.Errorf("Ping(sleep 10s, async) = %v, want accepted (the cap itself)", err)
	}
}

// TestItem6LimitsConfig: every limit must be at least 1, and a ping's
// sleep at most half the task deadline; errors name the YAML key.
func TestItem6LimitsConfig(t *testing.T) {
	t.Parallel()
	valid := func() manager.Config {
		c := manager.DefaultConfig()
		c.TLS.Insecure = true
		c.MasterKey = testMasterKey
		c.Auth.DelegateTokens = []manager.TokenConfig{{Name: "d", SHA256: manager.HashToken("x")}}
		c.Auth.OperatorTokens = []manager.TokenConfig{{Name: "o", SHA256: manager.HashToken("y")}}
		return c
	}
	if c := valid(); c.Validate() != nil {
		t.Fatalf("defaults: %v", c.Validate())
	}
	for _, tc := range []struct {
		name  string
		tweak func(*manager.Config)
		want  string
	}{
		{"no rate", func(c *manager.Config) { c.Limits.SubmitRate = 0 }, "limits.submit_rate: must be at least 1"},
		{"no burst", func(c *manager.Config) { c.Limits.SubmitBurst = 0 }, "limits.submit_burst: must be at least 1"},
		{"no tasks", func(c *manager.Config) { c.Limits.ScopeUnfinishedTasks = -1 }, "limits.scope_unfinished_tasks: must be at least 1"},
		{"no bytes", func(c *manager.Config) { c.Limits.ScopePayloadBytes = 0 }, "limits.scope_payload_bytes: must be at least 1"},
		{"sleep past half the deadline", func(c *manager.Config) { c.Limits.PingMaxSleep = config.Duration(31 * time.Second) },
			"limits.ping_max_sleep: must be between 0 and half of dispatch.task_deadline (30s)"},
		{"deadline shortened below twice the sleep", func(c *manager.Config) { c.Dispatch.TaskDeadline = config.Duration(10 * time.Second) },
			"limits.ping_max_sleep: must be between 0 and half of dispatch.task_deadline (5s)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.tweak(&c)
			if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}
