package awsemu_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/google/go-cmp/cmp"

	"github.com/smdelegate/smdelegate/internal/awsemu"
)

func TestFailNext(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		action     string
		n          int
		code       string
		retries    bool // use the SDK's default retryer (3 attempts)
		wantCode   string
		wantStatus int
		wantCalls  int
		wantType   any
	}{
		{"throttling surfaces with one attempt", "secretsmanager.GetSecretValue", 1, "ThrottlingException", false, "ThrottlingException", 400, 1, nil},
		{"typed not found", "secretsmanager.GetSecretValue", 1, "ResourceNotFoundException", false, "ResourceNotFoundException", 400, 1, new(*types.ResourceNotFoundException)},
		{"internal error is a 500", "secretsmanager.GetSecretValue", 1, "InternalServiceError", false, "InternalServiceError", 500, 1, new(*types.InternalServiceError)},
		{"retries absorb two 500s", "secretsmanager.GetSecretValue", 2, "InternalServiceError", true, "", 200, 3, nil},
		{"three 500s exhaust the retries", "secretsmanager.GetSecretValue", 3, "InternalServiceError", true, "InternalServiceError", 500, 3, nil},
		{"another action is untouched", "secretsmanager.DescribeSecret", 1, "ThrottlingException", false, "", 200, 1, nil},
		{"any action", "", 1, "AccessDeniedException", false, "AccessDeniedException", 400, 1, nil},
		{"not implemented is a 501", "secretsmanager.GetSecretValue", 1, "NotImplemented", false, "NotImplemented", 501, 1, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, url := mustStart(t, awsemu.Options{})
			s.PutSecretDirect("f", "v", nil)
			opts := []func(*secretsmanager.Options){noRetry}
			if tt.retries {
				opts = nil
			}
			sm := smClient(t, url, defaultCreds, opts...)
			s.FailNext(tt.action, tt.n, tt.code)
			_, err := sm.GetSecretValue(t.Context(), &secretsmanager.GetSecretValueInput{SecretId: aws.String("f")})
			if code := errorCode(err); code != tt.wantCode {
				t.Fatalf("GetSecretValue error = %v, want code %q", err, tt.wantCode)
			}
			if err != nil && httpStatus(err) != tt.wantStatus {
				t.Errorf("HTTP status = %d, want %d", httpStatus(err), tt.wantStatus)
			}
			if tt.wantType != nil && !errors.As(err, tt.wantType) {
				t.Errorf("error = %T, want %T", err, tt.wantType)
			}
			if n := s.Calls("secretsmanager.GetSecretValue"); n != tt.wantCalls {
				t.Errorf("Calls(GetSecretValue) = %d, want %d", n, tt.wantCalls)
			}
		})
	}
}

// TestInjectFault: a fault with its own status and message reaches the
// SDK as given, and FailNext faults queue behind it.
func TestInjectFault(t *testing.T) {
	t.Parallel()
	s, url := mustStart(t, awsemu.Options{})
	s.PutSecretDirect("f", "v", nil)
	sm := smClient(t, url, defaultCreds, noRetry)
	s.InjectFault("secretsmanager.GetSecretValue", 1, awsemu.Fault{Code: "InternalFailure", Status: http.StatusNotImplemented, Message: "API action not yet implemented"})
	s.FailNext("secretsmanager.GetSecretValue", 1, "UnknownOperationException")
	_, err := sm.GetSecretValue(t.Context(), &secretsmanager.GetSecretValueInput{SecretId: aws.String("f")})
	var api interface{ ErrorMessage() string }
	if errorCode(err) != "InternalFailure" || httpStatus(err) != http.StatusNotImplemented || !errors.As(err, &api) || api.ErrorMessage() != "API action not yet implemented" {
		t.Errorf("GetSecretValue error = %v (status %d), want InternalFailure 501 with the given message", err, httpStatus(err))
	}
	_, err = sm.GetSecretValue(t.Context(), &secretsmanager.GetSecretValueInput{SecretId: aws.String("f")})
	if errorCode(err) != "UnknownOperationException" || httpStatus(err) != http.StatusBadRequest {
		t.Errorf("second GetSecretValue error = %v (status %d), want UnknownOperationException 400", err, httpStatus(err))
	}
	if _, err := sm.GetSecretValue(t.Context(), &secretsmanager.GetSecretValueInput{SecretId: aws.String("f")}); err != nil {
		t.Errorf("third GetSecretValue: %v, want the faults used up", err)
	}
}

func TestFailNextSTS(t *testing.T) {
	t.Parallel()
	s, url := mustStart(t, awsemu.Options{})
	st := stsClient(t, url, defaultCreds, func(o *sts.Options) { o.RetryMaxAttempts = 1 })
	s.FailNext("sts.GetCallerIdentity", 1, "AccessDenied")
	_, err := st.GetCallerIdentity(t.Context(), &sts.GetCallerIdentityInput{})
	if errorCode(err) != "AccessDenied" || httpStatus(err) != http.StatusForbidden {
		t.Errorf("GetCallerIdentity error = %v (status %d), want AccessDenied 403", err, httpStatus(err))
	}
	s.FailNext("sts.GetCallerIdentity", 2, "Throttling")
	s.FailNext("sts.GetCallerIdentity", 0, "") // clears them
	if _, err := st.GetCallerIdentity(t.Context(), &sts.GetCallerIdentityInput{}); err != nil {
		t.Errorf("GetCallerIdentity after clearing faults: %v", err)
	}
}

func TestSetLatency(t *testing.T) {
	t.Parallel()
	s, url := mustStart(t, awsemu.Options{})
	s.PutSecretDirect("slow", "v", nil)
	sm := smClient(t, url, defaultCreds, noRetry)
	s.SetLatency("secretsmanager.GetSecretValue", 150*time.Millisecond)

	start := time.Now()
	if _, err := sm.GetSecretValue(t.Context(), &secretsmanager.GetSecretValueInput{SecretId: aws.String("slow")}); err != nil {
		t.Fatalf("GetSecretValue: %v", err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("GetSecretValue took %v, want at least 150ms", d)
	}
	start = time.Now()
	if _, err := sm.DescribeSecret(t.Context(), &secretsmanager.DescribeSecretInput{SecretId: aws.String("slow")}); err != nil {
		t.Fatalf("DescribeSecret: %v", err)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("DescribeSecret took %v, want no added latency", d)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Millisecond)
	defer cancel()
	_, err := sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String("slow")})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("GetSecretValue with a 30ms deadline: error %v, want context.DeadlineExceeded", err)
	}
	s.SetLatency("secretsmanager.GetSecretValue", 0)
}

// TestCountersAndConnections is not parallel: it counts TCP connections,
// and Go's transport gives connections up when the machine is too busy
// (see below).
func TestCountersAndConnections(t *testing.T) {
	clk := newClock()
	s, url := mustStart(t, awsemu.Options{Now: clk.Now})
	ctx := t.Context()
	sm := smClient(t, url, defaultCreds)
	for range 3 {
		if _, err := sm.ListSecrets(ctx, &secretsmanager.ListSecretsInput{MaxResults: aws.Int32(5)}); err != nil {
			t.Fatalf("ListSecrets: %v", err)
		}
	}
	// The failing call goes through a client of its own: after an error
	// response the SDK sometimes gives up its connection (it closes the
	// body before the transport has seen its end), which would make the
	// connection count below depend on timing.
	_, _ = smClient(t, url, defaultCreds).DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String("missing")})
	if _, err := stsClient(t, url, defaultCreds).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}); err != nil {
		t.Fatalf("GetCallerIdentity: %v", err)
	}

	got := map[string]int{}
	for _, a := range []string{"secretsmanager.ListSecrets", "secretsmanager.DescribeSecret", "sts.GetCallerIdentity", "sts.AssumeRole"} {
		got[a] = s.Calls(a)
	}
	want := map[string]int{"secretsmanager.ListSecrets": 3, "secretsmanager.DescribeSecret": 1, "sts.GetCallerIdentity": 1, "sts.AssumeRole": 0}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Calls (-want +got):\n%s", diff)
	}

	reqs := s.Requests()
	var actions []string
	for _, r := range reqs {
		actions = append(actions, r.Service+"."+r.Action)
		if r.AccessKeyID != awsemu.DefaultAccessKeyID || !r.Time.Equal(clk.Now()) {
			t.Errorf("request %s: AccessKeyID %q Time %v, want %q at %v", r.Action, r.AccessKeyID, r.Time, awsemu.DefaultAccessKeyID, clk.Now())
		}
	}
	wantActions := []string{"secretsmanager.ListSecrets", "secretsmanager.ListSecrets", "secretsmanager.ListSecrets",
		"secretsmanager.DescribeSecret", "sts.GetCallerIdentity"}
	if diff := cmp.Diff(wantActions, actions); diff != "" {
		t.Errorf("Requests actions (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]any{"MaxResults": float64(5)}, reqs[0].Params); diff != "" {
		t.Errorf("Requests[0].Params (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]any{"Action": "GetCallerIdentity", "Version": "2011-06-15"}, reqs[4].Params); diff != "" {
		t.Errorf("Requests[4].Params (-want +got):\n%s", diff)
	}

	// Each client reuses a keep-alive connection. Go's transport gives a
	// connection up when its writer has not reported the request written
	// within 50 ms of the response's end (maxWriteWaitBeforeConnReuse),
	// which happens on a loaded machine (seen here under -race with other
	// tests running), so a little slack is allowed; without reuse there
	// would be a connection per call.
	if n := s.Connections(); n < 3 || n > 5 {
		t.Errorf("Connections() = %d, want 3 (one per client) to 5 (two given up under load)", n)
	}
	s.ResetCounters()
	if n, r, c := s.Calls("secretsmanager.ListSecrets"), len(s.Requests()), s.Connections(); n+r+c != 0 {
		t.Errorf("after ResetCounters: Calls %d, Requests %d, Connections %d; want 0", n, r, c)
	}
	for range 10 {
		if _, err := sm.ListSecrets(ctx, &secretsmanager.ListSecretsInput{}); err != nil {
			t.Fatalf("ListSecrets: %v", err)
		}
	}
	if n := s.Connections(); n > 5 {
		t.Errorf("Connections() after 10 more calls on a warm client = %d, want at most 5 (0 but for load; 10 without reuse)", n)
	}
	before := s.Connections()
	fresh := smClient(t, url, defaultCreds)
	if _, err := fresh.ListSecrets(ctx, &secretsmanager.ListSecretsInput{}); err != nil {
		t.Fatalf("ListSecrets: %v", err)
	}
	if n := s.Connections() - before; n != 1 {
		t.Errorf("new connections for a new client's first call = %d, want 1", n)
	}
}
