package awsemu_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"

	"github.com/smdelegate/smdelegate/internal/awsemu"
)

const testRegion = "us-east-1"

// mustStart starts an emulator on 127.0.0.1 and closes it when the test ends.
func mustStart(tb testing.TB, opts awsemu.Options) (*awsemu.Server, string) {
	tb.Helper()
	s := awsemu.New(opts)
	url, err := s.Start("127.0.0.1:0")
	if err != nil {
		tb.Fatalf("Start: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return s, url
}

// staticCreds is a credentials provider for a key pair, with an optional
// session token.
func staticCreds(id, secret, token string) aws.CredentialsProvider {
	return credentials.NewStaticCredentialsProvider(id, secret, token)
}

var defaultCreds = staticCreds(awsemu.DefaultAccessKeyID, awsemu.DefaultSecretAccessKey, "")

// mustConfig returns an SDK config isolated from the host: it is built
// directly rather than by config.LoadDefaultConfig, so no environment
// variable, shared config file or instance metadata can leak in, and tests
// stay free to run in parallel (no t.Setenv).
func mustConfig(tb testing.TB, creds aws.CredentialsProvider) aws.Config {
	tb.Helper()
	return aws.Config{Region: testRegion, Credentials: aws.NewCredentialsCache(creds)}
}

func smClient(tb testing.TB, url string, creds aws.CredentialsProvider, optFns ...func(*secretsmanager.Options)) *secretsmanager.Client {
	tb.Helper()
	cfg := mustConfig(tb, creds)
	return secretsmanager.NewFromConfig(cfg, append([]func(*secretsmanager.Options){
		func(o *secretsmanager.Options) { o.BaseEndpoint = aws.String(url) },
	}, optFns...)...)
}

func stsClient(tb testing.TB, url string, creds aws.CredentialsProvider, optFns ...func(*sts.Options)) *sts.Client {
	tb.Helper()
	cfg := mustConfig(tb, creds)
	return sts.NewFromConfig(cfg, append([]func(*sts.Options){
		func(o *sts.Options) { o.BaseEndpoint = aws.String(url) },
	}, optFns...)...)
}

// noRetry makes a client try once.
func noRetry(o *secretsmanager.Options) { o.RetryMaxAttempts = 1 }

// errorCode returns the AWS error code of err, or "" when err is not an API error.
func errorCode(err error) string {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode()
	}
	return ""
}

// httpStatus returns the HTTP status of the response that produced err.
func httpStatus(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// clock is an adjustable Options.Now.
type clock struct {
	mu sync.Mutex // guards t
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now().Truncate(time.Second)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// token returns a valid ClientRequestToken derived from s.
func token(s string) *string {
	const pad = "00000000000000000000000000000000"
	if len(s) < 32 {
		s += pad[:32-len(s)]
	}
	return aws.String(s)
}
