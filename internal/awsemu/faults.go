package awsemu

import (
	"context"
	"time"
)

// FailNext makes the next n calls of action ("secretsmanager.GetSecretValue",
// "sts.AssumeRole", or "" for any action) fail with the AWS error code
// awsErrorCode, with the HTTP status AWS uses for it: 500 for
// InternalServiceError and InternalFailure, 503 for ServiceUnavailable, 501
// for NotImplemented, 403 for STS's AccessDenied and credential errors, 400
// for everything else (ThrottlingException included). Faults apply after the
// request's credentials are verified, and each failed call still counts in
// Calls. Calling FailNext again queues more faults behind the pending ones;
// n <= 0 clears the action's pending faults.
//
// The SDK retries throttling and 5xx errors: a test that wants the error to
// surface either queues as many faults as the retryer makes attempts or
// configures a retryer with one attempt.
func (s *Server) FailNext(action string, n int, awsErrorCode string) {
	s.InjectFault(action, n, Fault{Code: awsErrorCode})
}

// Fault is an injected error reply.
type Fault struct {
	// Code is the AWS error code ("__type" or the XML Code).
	Code string
	// Status is the HTTP status; 0 means the one FailNext uses for Code.
	// Another status imitates an endpoint that is not AWS, such as an
	// emulator answering 501 with "InternalFailure".
	Status int
	// Message is the error message; empty means
	// "awsemu: injected fault CODE". It is the test's own text, so a test
	// may plant a value in it to check that the client keeps it out of
	// what it shows.
	Message string
}

// InjectFault is FailNext with the whole reply given: the next n calls of
// action fail with f. n <= 0 clears the action's pending faults.
func (s *Server) InjectFault(action string, n int, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n <= 0 {
		delete(s.faults, action)
		return
	}
	for range n {
		s.faults[action] = append(s.faults[action], f)
	}
}

// SetLatency delays every call of action ("" = every action) by d before it
// is served; the delays for "" and for the action add up. d <= 0 removes the
// delay. A client that gives up stops the wait.
func (s *Server) SetLatency(action string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d <= 0 {
		delete(s.latency, action)
		return
	}
	s.latency[action] = d
}

// takeFault pops the next fault for action, the action's own before the
// ones for any action.
func (s *Server) takeFault(action string) (Fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, key := range []string{action, ""} {
		if q := s.faults[key]; len(q) > 0 {
			if len(q) == 1 {
				delete(s.faults, key)
			} else {
				s.faults[key] = q[1:]
			}
			return q[0], true
		}
	}
	return Fault{}, false
}

// wait applies the configured latency for action.
func (s *Server) wait(ctx context.Context, action string) error {
	s.mu.Lock()
	d := s.latency[""] + s.latency[action]
	s.mu.Unlock()
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// faultError is the reply for an injected fault.
func faultError(service string, f Fault) *apiError {
	status := 400
	switch f.Code {
	case "InternalServiceError", "InternalFailure", "InternalError", "InternalServerError":
		status = 500
	case "ServiceUnavailable", "ServiceUnavailableException":
		status = 503
	case "NotImplemented":
		status = 501
	case "AccessDenied", "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken", "MissingAuthenticationToken":
		if service == serviceSTS {
			status = 403
		}
	}
	if f.Status != 0 {
		status = f.Status
	}
	msg := f.Message
	if msg == "" {
		msg = "awsemu: injected fault " + f.Code
	}
	return &apiError{status: status, code: f.Code, message: msg}
}
