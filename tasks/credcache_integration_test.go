package tasks_test

// The pool's cache of role-session credentials: refreshed near expiry
// with the latest task's token, shared by concurrent tasks.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// TestOIDCRefreshesNearExpiryWithLatestToken: role-session credentials that
// are close to expiry are refreshed on the next task, with the token that
// task brought. The emulator's clock runs 14 minutes behind, so a 900 s
// session expires a minute after it is issued, inside the pool's expiry
// window.
func TestOIDCRefreshesNearExpiryWithLatestToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{maxAttempts: 1, emuNow: func() time.Time { return time.Now().Add(-14 * time.Minute) }})
	conn := e.connector(t, delegatev1.CredentialType_OIDC)
	conn.AssumeRoleDurationSeconds = 900
	e.emu.PutSecretDirect(prefix+"/x", "v", nil)
	for i := range 2 {
		c := proto.Clone(conn).(*delegatev1.ConnectorSettings)
		c.WebIdentityToken = testIssuer(t).token(t, fmt.Sprintf("task-%d", i))
		mustOK(t, "get", e.run(t, fmt.Sprintf("near-%d", i), getTask(c, "x")))
	}
	if n := e.emu.Calls("sts.AssumeRoleWithWebIdentity"); n != 2 {
		t.Errorf("AssumeRoleWithWebIdentity calls = %d, want 2 (a refresh per task near expiry)", n)
	}
	// The refresh uses the latest task's token: an untrusted one fails it.
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	c := proto.Clone(conn).(*delegatev1.ConnectorSettings)
	c.WebIdentityToken = signToken(t, other, testIssuer(t).url, "intruder")
	wantCode(t, "get with an untrusted token", e.run(t, "near-bad", getTask(c, "x")), delegatev1.Code_CREDENTIALS, "InvalidIdentityToken")
}

// TestThousandGetsOneAssumeRole shows the pool's credentials cache: 1,000
// concurrent gets on one assume-role connector make one AssumeRole call and
// reuse a handful of connections.
func TestThousandGetsOneAssumeRole(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	conn := e.connector(t, delegatev1.CredentialType_ASSUME_ROLE)
	e.emu.PutSecretDirect(prefix+"/hot", "hot-value", nil)
	const n, workers = 1000, 32
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > n {
					return
				}
				out := e.runner.Run(context.Background(), "get", &delegatev1.SecretTask{Connector: conn,
					Op: &delegatev1.SecretTask_Get{Get: &delegatev1.GetSecretOp{Name: "hot"}}})
				if out.GetCode() != delegatev1.Code_OK || out.GetSecret().GetValue().GetStringValue() != "hot-value" {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if f := failed.Load(); f != 0 {
		t.Fatalf("%d of %d gets failed", f, n)
	}
	if got := e.emu.Calls("secretsmanager.GetSecretValue"); got != n {
		t.Errorf("GetSecretValue calls = %d, want %d", got, n)
	}
	if got := e.emu.Calls("sts.AssumeRole"); got != 1 {
		t.Errorf("sts.AssumeRole calls = %d, want exactly 1", got)
	}
	// net/http may dial a spare connection while a busy one is being
	// returned to the idle pool, so allow up to two per worker: without
	// reuse it would be one per call.
	if got := e.emu.Connections(); got > 2*workers {
		t.Errorf("connections = %d for %d calls from %d workers, want reuse (at most %d)", got, n, workers, 2*workers)
	}
}
