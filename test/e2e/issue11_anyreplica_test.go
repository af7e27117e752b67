package e2e

import (
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/smdelegate/smdelegate/internal/awsemu"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// TestIssue11AnyReplicaReachesAnyDelegate (Done 1): three replicas on one
// PostgreSQL, one agent on each, and one connector per agent whose only
// eligible delegate is that agent. Through each of the two other
// replicas: an async create (the shared queue), a sync get of the value
// it wrote (forwarded over the peer link) and a connection test (sync,
// forwarded) all run on that agent and succeed, so a connector whose
// only delegate sits on replica C works through A and B; and a create
// with a generated value shown to its caller (async in the shared queue,
// the value carried over the peer link to the replica where the caller
// waits) shows the value AWS holds, which no replica logs.
func TestIssue11AnyReplicaReachesAnyDelegate(t *testing.T) {
	emu := awsemu.New(awsemu.Options{})
	aws := httptest.NewServer(emu)
	t.Cleanup(aws.Close)
	rs := startReplicas(t, 3, managerOpts{})
	ctx := t.Context()
	if _, err := rs[0].API().PutCredential(ctx, &delegatev1.PutCredentialRequest{
		Name: "any_aws_secret_key", Value: []byte(awsemu.DefaultSecretAccessKey),
	}); err != nil {
		t.Fatalf("PutCredential() = %v", err)
	}
	for i, r := range rs {
		tag := fmt.Sprintf("on-r%d", i)
		startAgent(t, r, "agent-"+tag, agentOpts{Tags: []string{tag}, Endpoints: []string{aws.URL}})
		// Created on another replica: the catalog is shared.
		c := &delegatev1.Connector{
			Identifier: "conn_" + fmt.Sprint(i), Name: tag, CredentialType: delegatev1.CredentialType_ACCESS_KEY,
			AccessKeyId: awsemu.DefaultAccessKeyID, SecretAccessKey: "builtin:any_aws_secret_key",
			Region: "us-east-1", SecretNamePrefix: "any", DelegateSelectors: []string{tag},
			EndpointUrl: aws.URL, StsEndpointUrl: aws.URL,
		}
		if _, err := rs[(i+1)%3].API().CreateConnector(ctx, &delegatev1.CreateConnectorRequest{Connector: c}); err != nil {
			t.Fatalf("CreateConnector(%s) = %v", c.Identifier, err)
		}
	}

	var generated []string
	for i := range rs {
		conn := &delegatev1.ConnectorRef{Identifier: "conn_" + fmt.Sprint(i)}
		agent := fmt.Sprintf("agent-on-r%d", i)
		for j, via := range rs {
			if j == i {
				continue
			}
			name, value := fmt.Sprintf("s-%d-via-%d", i, j), fmt.Sprintf("value of connector %d through replica %d", i, j)
			what := fmt.Sprintf("connector %d (agent on replica %d) through replica %d", i, i, j)

			info, err := via.API().Secret(ctx, &delegatev1.SecretRequest{Connector: conn, Async: true,
				Op: &delegatev1.SecretRequest_Create{Create: &delegatev1.CreateSecretOp{Name: name,
					Value: &delegatev1.SecretValue{Value: &delegatev1.SecretValue_StringValue{StringValue: value}}}}})
			if err != nil {
				t.Fatalf("async create, %s: %v", what, err)
			}
			final := via.waitFinal(t, 60*time.Second, []string{info.GetId()})[info.GetId()]
			if final.GetState() != delegatev1.TaskState_SUCCEEDED || final.GetDelegate() != agent {
				t.Errorf("async create, %s = %s on %q (%v), want SUCCEEDED on %s", what, final.GetState(), final.GetDelegate(), final.GetOutcome(), agent)
			}

			got, err := via.API().Secret(ctx, &delegatev1.SecretRequest{Connector: conn,
				Op: &delegatev1.SecretRequest_Get{Get: &delegatev1.GetSecretOp{Name: name}}})
			if err != nil || got.GetState() != delegatev1.TaskState_SUCCEEDED || got.GetDelegate() != agent ||
				got.GetOutcome().GetSecret().GetValue().GetStringValue() != value {
				t.Errorf("sync get, %s = %v, %v; want SUCCEEDED on %s with the value written", what, got.GetState(), err, agent)
			}

			test, err := via.API().TestConnector(ctx, &delegatev1.TestConnectorRequest{Ref: conn})
			if err != nil || test.GetState() != delegatev1.TaskState_SUCCEEDED || test.GetDelegate() != agent {
				t.Errorf("connection test, %s = %v on %q, %v; want SUCCEEDED on %s", what, test.GetState(), test.GetDelegate(), err, agent)
			}

			// A generated value shown to the caller that waits on this
			// replica, from a delegate on the other one; never stored.
			gname := fmt.Sprintf("g-%d-via-%d", i, j)
			gen, err := via.API().Secret(ctx, &delegatev1.SecretRequest{Connector: conn,
				Op: &delegatev1.SecretRequest_Create{Create: &delegatev1.CreateSecretOp{Name: gname,
					Generate: &delegatev1.GeneratePassword{}, ReturnValue: true}}})
			shown := gen.GetOutcome().GetSecret().GetValue().GetStringValue()
			st, ok := emu.Secret("any/" + gname)
			if err != nil || gen.GetState() != delegatev1.TaskState_SUCCEEDED || gen.GetDelegate() != agent ||
				!ok || len(st.Versions) != 1 || shown == "" || shown != st.Versions[0].SecretString {
				t.Errorf("create --generate --show, %s = %v on %q, %v: shown %d characters; want SUCCEEDED on %s showing the value AWS holds",
					what, gen.GetState(), gen.GetDelegate(), err, len(shown), agent)
			}
			if shown != "" {
				generated = append(generated, shown)
			}
		}
	}
	// No replica logged a generated value.
	for _, r := range rs {
		for _, v := range generated {
			if strings.Contains(r.proc.log(), v) {
				t.Errorf("a replica's log holds a generated value")
			}
		}
	}
}
