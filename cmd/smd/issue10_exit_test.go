package main

import (
	"bytes"
	"errors"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/smdelegate/smdelegate/manager/api"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// managerStatus is the gRPC code the manager answers for each failure
// code when it refuses a call with it: its one table, api.GRPCCode
// (TestIssue10GRPCCodeCoversEveryCode holds that to the enum).
func managerStatus() map[delegatev1.Code]codes.Code {
	m := map[delegatev1.Code]codes.Code{}
	for _, c := range allCodes() {
		if c != delegatev1.Code_OK {
			m[c] = api.GRPCCode(c)
		}
	}
	return m
}

// exitOfErr is the exit code smd ends with for err.
func exitOfErr(err error) int {
	var ce *codedError
	if errors.As(err, &ce) {
		return ce.code
	}
	if err == nil {
		return exitOK
	}
	return exitError
}

// allCodes is every value of the Code enum, read from its descriptor, so
// that a code added to common.proto is covered by the tests below.
func allCodes() []delegatev1.Code {
	values := delegatev1.Code(0).Descriptor().Values()
	var out []delegatev1.Code
	for i := range values.Len() {
		out = append(out, delegatev1.Code(values.Get(i).Number()))
	}
	return out
}

// TestIssue10EveryCodeHasAnExit: the one table has an exit code for every
// outcome code, and the manager a gRPC code for every failure code, so
// a new code without them fails here.
func TestIssue10EveryCodeHasAnExit(t *testing.T) {
	t.Parallel()
	for _, c := range allCodes() {
		if _, ok := outcomeExits[c]; !ok {
			t.Errorf("outcomeExits has no exit code for %v", c)
		}
		if gc := api.GRPCCode(c); gc == codes.Internal && c != delegatev1.Code_INTERNAL {
			t.Errorf("api.GRPCCode has no gRPC code for %v", c)
		}
	}
	if len(outcomeExits) != len(allCodes()) {
		t.Errorf("outcomeExits has %d entries for %d codes", len(outcomeExits), len(allCodes()))
	}
}

// TestIssue10REQUESTIDReusedIsInvalidInput: the manager's AlreadyExists
// for a request id used for another request is the invocation's fault
// (exit 2), not a secret that exists (exit 6).
func TestIssue10RequestIDReusedIsInvalidInput(t *testing.T) {
	t.Parallel()
	st, err := status.New(codes.AlreadyExists, `request_id "r" was used for a different request`).WithDetails(&errdetails.ErrorInfo{Reason: requestIDReused, Domain: "smdelegate"})
	if err != nil {
		t.Fatal(err)
	}
	if got := exitOfErr(apiErr(st.Err())); got != exitInvalid {
		t.Errorf("exit for REQUEST_ID_REUSED = %d, want %d", got, exitInvalid)
	}
	if got := exitOfErr(apiErr(status.Error(codes.AlreadyExists, "connector exists"))); got != exitFailed {
		t.Errorf("exit for AlreadyExists = %d, want %d like ALREADY_EXISTS", got, exitFailed)
	}
}

// TestIssue10READMEExitCodes holds the README to the one table: the
// "Outcome codes" table gives every code with its exit code, and each
// row of the "Exit codes" table lists only outcome codes with that exit.
func TestIssue10READMEExitCodes(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	section := func(title string) string {
		i := strings.Index(readme, "\n"+title+"\n")
		if i < 0 {
			t.Fatalf("README has no %q section", title)
		}
		rest := readme[i+len(title)+2:]
		if j := strings.Index(rest, "\n#"); j >= 0 {
			rest = rest[:j]
		}
		return rest
	}
	names := map[string]delegatev1.Code{}
	for _, c := range allCodes() {
		names[c.String()] = c
	}

	outcomeRow := regexp.MustCompile("(?m)^\\| `([A-Z_]+)` \\|.*\\| ([0-9]+) \\|$")
	seen := map[delegatev1.Code]bool{}
	for _, m := range outcomeRow.FindAllStringSubmatch(section("### Outcome codes"), -1) {
		c, ok := names[m[1]]
		if !ok {
			t.Errorf("README Outcome codes lists %s, which is not a Code", m[1])
			continue
		}
		seen[c] = true
		if n, _ := strconv.Atoi(m[2]); n != exitFor(c) {
			t.Errorf("README Outcome codes: %s exits %d, the table says %d", c, n, exitFor(c))
		}
	}
	for _, c := range allCodes() {
		if !seen[c] {
			t.Errorf("README Outcome codes has no row for %v", c)
		}
	}

	exitRow := regexp.MustCompile("(?m)^\\| ([0-9]+) \\|(.*)\\|$")
	quoted := regexp.MustCompile("`([A-Z_]+)`")
	listed := map[delegatev1.Code]bool{}
	for _, m := range exitRow.FindAllStringSubmatch(section("### Exit codes"), -1) {
		n, _ := strconv.Atoi(m[1])
		for _, q := range quoted.FindAllStringSubmatch(m[2], -1) {
			c, ok := names[q[1]]
			if !ok {
				continue
			}
			listed[c] = true
			if exitFor(c) != n {
				t.Errorf("README Exit codes lists %s under %d, the table says %d", c, n, exitFor(c))
			}
		}
	}
	for _, c := range allCodes() {
		if !listed[c] && c != delegatev1.Code_OK {
			t.Errorf("README Exit codes does not list %v", c)
		}
	}
}

// TestIssue10SameExitOnBothPaths: an outcome code gives one exit code,
// whether it comes as a task's outcome (a sync task that ran, task watch)
// or as the manager's gRPC refusal of the call (the dispatcher failed the
// task before it ran, a limit, a store outage).
func TestIssue10SameExitOnBothPaths(t *testing.T) {
	t.Parallel()
	for c, gc := range managerStatus() {
		if got := outcomeOfStatus(status.New(gc, "m")); exitFor(got) != exitFor(c) {
			t.Errorf("the manager's %v for %v reads as %v", gc, c, got)
		}
		info := &delegatev1.TaskInfo{Id: "t1", Outcome: &delegatev1.Outcome{Code: c, Message: "m"}}
		asOutcome := exitOfErr(taskErr(info))
		asStatus := exitOfErr(apiErr(status.Error(gc, "m")))
		if asOutcome != asStatus {
			t.Errorf("%v: exit %d as a task outcome, %d as the manager's %v", c, asOutcome, asStatus, gc)
		}
	}
}

// TestIssue10RetryGivesUpOnRateLimit: a call the manager's rate limit kept
// refusing until smd gave up ends like THROTTLED (exit 4: retry later),
// not with the generic exit 1; a stored submission likewise.
func TestIssue10RetryGivesUpOnRateLimit(t *testing.T) {
	t.Parallel()
	st, err := status.New(codes.ResourceExhausted, "limits.submit_rate").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(fastRetry.window / 4)})
	if err != nil {
		t.Fatal(err)
	}
	for _, requestID := range []string{"", "rid-10"} {
		s := &script{errs: make([]error, 100)}
		for i := range s.errs {
			s.errs[i] = st.Err()
		}
		_, err := fastRetry.retry(t.Context(), &bytes.Buffer{}, requestID, true, s.call)
		if got := exitOfErr(err); got != exitUnavailable {
			t.Errorf("request id %q: gave up with %v: exit %d, want %d", requestID, err, got, exitUnavailable)
		}
	}
}
