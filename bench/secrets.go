package main

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/smdelegate/smdelegate/internal/awsemu"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// The connectors the bench registers, both under the prefix "bench" and
// served by delegates tagged "bench".
const (
	accessKeyConnector  = "bench_access_key"
	assumeRoleConnector = "bench_assume_role"
	benchRoleARN        = "arn:aws:iam::123456789012:role/smd-bench"
	benchExternalID     = "smd-bench-external-id"
	getTarget           = "get-target" // the secret of the get benchmarks
)

// setupConnectors stores the emulator's secret key as a builtin credential
// and registers an access-key and an assume-role connector pointing at the
// emulator, as an operator would.
func setupConnectors(ctx context.Context, m *manager, awsURL string) error {
	api := m.API()
	if _, err := api.PutCredential(ctx, &delegatev1.PutCredentialRequest{Name: "bench_secret_key", Value: []byte(awsemu.DefaultSecretAccessKey)}); err != nil {
		return fmt.Errorf("put credential: %w", err)
	}
	for _, c := range []*delegatev1.Connector{{
		Identifier: accessKeyConnector, Name: "bench access key",
		CredentialType: delegatev1.CredentialType_ACCESS_KEY, AccessKeyId: awsemu.DefaultAccessKeyID,
		SecretAccessKey: "builtin:bench_secret_key", Region: "us-east-1", SecretNamePrefix: "bench",
		DelegateSelectors: []string{"bench"}, EndpointUrl: awsURL, StsEndpointUrl: awsURL,
	}, {
		Identifier: assumeRoleConnector, Name: "bench assume role",
		CredentialType: delegatev1.CredentialType_ASSUME_ROLE, RoleArn: benchRoleARN, ExternalId: benchExternalID,
		AssumeRoleDurationSeconds: 3600, Region: "us-east-1", SecretNamePrefix: "bench",
		DelegateSelectors: []string{"bench"}, EndpointUrl: awsURL, StsEndpointUrl: awsURL,
	}} {
		if _, err := api.CreateConnector(ctx, &delegatev1.CreateConnectorRequest{Connector: c}); err != nil {
			return fmt.Errorf("create connector %s: %w", c.GetIdentifier(), err)
		}
	}
	return nil
}

// directClient is the SDK client the direct arm of section 2 uses: the
// same endpoint and credentials as the connector, no smdelegate between.
func directClient(awsURL string) *secretsmanager.Client {
	return secretsmanager.New(secretsmanager.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(awsURL),
		Credentials: aws.NewCredentialsCache(credentials.NewStaticCredentialsProvider(
			awsemu.DefaultAccessKeyID, awsemu.DefaultSecretAccessKey, "")),
	})
}

// getViaSmd gets the get-target secret through the manager and a delegate.
func getViaSmd(m apiSource, connectorID, want string) call {
	return func(ctx context.Context, _ int) error {
		info, err := m.API().Secret(ctx, &delegatev1.SecretRequest{
			Connector: &delegatev1.ConnectorRef{Identifier: connectorID},
			Op:        &delegatev1.SecretRequest_Get{Get: &delegatev1.GetSecretOp{Name: getTarget}},
		})
		if err != nil {
			return err
		}
		if got := info.GetOutcome().GetSecret().GetValue().GetStringValue(); info.GetState() != delegatev1.TaskState_SUCCEEDED || got != want {
			return fmt.Errorf("get %s: %s %s", info.GetId(), info.GetState(), info.GetOutcome().GetMessage())
		}
		return nil
	}
}

func getDirect(sm *secretsmanager.Client, want string) call {
	return func(ctx context.Context, _ int) error {
		out, err := sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String("bench/" + getTarget)})
		if err != nil {
			return err
		}
		if aws.ToString(out.SecretString) != want {
			return fmt.Errorf("direct get: wrong value")
		}
		return nil
	}
}

// pathRun is one setting of section 2: an AWS latency and a number of
// callers.
type pathRun struct {
	AWSLatency    time.Duration
	Workers       int
	Direct, ViaSm latencies
}

func (p pathRun) throughputRatio() float64 {
	return p.ViaSm.throughputPerSecond / p.Direct.throughputPerSecond
}

func (p pathRun) latencyRatio() float64 {
	return float64(p.ViaSm.P50) / float64(p.Direct.P50)
}

// secretsPathResult is section 2.
type secretsPathResult struct {
	Runs []pathRun
}

// benchSecretsPath runs GetSecretValue through manager and delegate and
// the same call made directly with the SDK, same callers, same emulator:
// one caller (the latency smdelegate adds to a call), then many callers as
// fast as the emulator answers, then many with an added AWS latency
// (GetSecretValue takes milliseconds at AWS, not the microseconds of a
// loopback emulator).
func benchSecretsPath(ctx context.Context, m *manager, emu *awsemu.Server, awsURL string, o options) (secretsPathResult, error) {
	const want = "bench-value"
	emu.PutSecretDirect("bench/"+getTarget, want, nil)
	sm := directClient(awsURL)
	var r secretsPathResult
	for _, run := range []pathRun{{Workers: 1}, {Workers: o.pathWorkers}, {Workers: o.pathWorkers, AWSLatency: o.awsLatency}} {
		emu.SetLatency("secretsmanager.GetSecretValue", run.AWSLatency)
		// Warm-up of both arms: connections, the agents' client pools.
		closedLoop(ctx, run.Workers, 0, 200, getDirect(sm, want))
		closedLoop(ctx, run.Workers, 0, 200, getViaSmd(m, accessKeyConnector, want))
		run.Direct = closedLoop(ctx, run.Workers, o.pathDuration, 0, getDirect(sm, want))
		run.ViaSm = closedLoop(ctx, run.Workers, o.pathDuration, 0, getViaSmd(m, accessKeyConnector, want))
		if run.Direct.errors+run.ViaSm.errors > 0 {
			return r, fmt.Errorf("secrets path, %d callers, AWS latency %s: errors: direct %d (%v), smd %d (%v)",
				run.Workers, run.AWSLatency, run.Direct.errors, run.Direct.firstErr, run.ViaSm.errors, run.ViaSm.firstErr)
		}
		o.logf("  %2d callers, AWS latency %-5s direct %6.0f/s p50 %s | via smd %6.0f/s p50 %s | throughput %.2fx, p50 latency %.2fx",
			run.Workers, run.AWSLatency, run.Direct.throughputPerSecond, ms(run.Direct.P50), run.ViaSm.throughputPerSecond, ms(run.ViaSm.P50),
			run.throughputRatio(), run.latencyRatio())
		r.Runs = append(r.Runs, run)
	}
	emu.SetLatency("secretsmanager.GetSecretValue", 0)
	return r, nil
}

// stsResult is section 6.
type stsResult struct {
	Tasks          int
	AssumeRole     int
	GetSecretValue int
	NewConnections int
	Errors         int
}

// benchSTS runs gets on the assume-role connector and reads the
// emulator's counters: how many AssumeRole calls and new TCP connections
// they cost.
func benchSTS(ctx context.Context, m *manager, emu *awsemu.Server, o options) (stsResult, error) {
	const want = "bench-value"
	emu.PutSecretDirect("bench/"+getTarget, want, nil)
	emu.ResetCounters()
	l := closedLoop(ctx, o.pathWorkers, 0, o.stsTasks, getViaSmd(m, assumeRoleConnector, want))
	r := stsResult{
		Tasks: l.N, Errors: l.errors,
		AssumeRole:     emu.Calls("sts.AssumeRole"),
		GetSecretValue: emu.Calls("secretsmanager.GetSecretValue"),
		NewConnections: emu.Connections(),
	}
	emu.ResetCounters()
	if l.errors > 0 {
		return r, fmt.Errorf("assume-role gets: %d errors, first: %v", l.errors, l.firstErr)
	}
	o.logf("  %d gets on one assume-role connector: %d AssumeRole calls, %d GetSecretValue calls, %d new TCP connections to AWS",
		r.Tasks, r.AssumeRole, r.GetSecretValue, r.NewConnections)
	return r, nil
}
