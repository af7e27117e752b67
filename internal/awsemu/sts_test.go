package awsemu_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/smdelegate/smdelegate/internal/awsemu"
)

const (
	plainRole    = "arn:aws:iam::123456789012:role/plain"
	externalRole = "arn:aws:iam::123456789012:role/path/external"
	longRole     = "arn:aws:iam::123456789012:role/long"
)

var testRoles = map[string]awsemu.Role{
	plainRole:    {},
	externalRole: {ExternalID: "ext-123"},
	longRole:     {MaxSessionDuration: 4 * time.Hour},
}

func TestGetCallerIdentity(t *testing.T) {
	t.Parallel()
	_, url := mustStart(t, awsemu.Options{AccountID: "111122223333"})
	out, err := stsClient(t, url, defaultCreds).GetCallerIdentity(t.Context(), &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatalf("GetCallerIdentity: %v", err)
	}
	got := []string{aws.ToString(out.Account), aws.ToString(out.Arn)}
	want := []string{"111122223333", "arn:aws:iam::111122223333:user/" + awsemu.DefaultAccessKeyID}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GetCallerIdentity (-want +got):\n%s", diff)
	}
	if !strings.HasPrefix(aws.ToString(out.UserId), "AIDA") {
		t.Errorf("UserId = %q, want an AIDA… id", aws.ToString(out.UserId))
	}
}

func TestAssumeRole(t *testing.T) {
	t.Parallel()
	s, url := mustStart(t, awsemu.Options{Roles: testRoles})
	s.PutSecretDirect("shared", "v", nil)
	st := stsClient(t, url, defaultCreds, func(o *sts.Options) { o.RetryMaxAttempts = 1 })

	tests := []struct {
		name     string
		in       sts.AssumeRoleInput
		wantCode string
		wantTTL  time.Duration
	}{
		{"default duration", sts.AssumeRoleInput{RoleArn: aws.String(plainRole), RoleSessionName: aws.String("delegate-1")}, "", time.Hour},
		{"shortest", sts.AssumeRoleInput{RoleArn: aws.String(plainRole), RoleSessionName: aws.String("s1"), DurationSeconds: aws.Int32(900)}, "", 15 * time.Minute},
		{"too short", sts.AssumeRoleInput{RoleArn: aws.String(plainRole), RoleSessionName: aws.String("s1"), DurationSeconds: aws.Int32(899)}, "ValidationError", 0},
		{"above role maximum", sts.AssumeRoleInput{RoleArn: aws.String(plainRole), RoleSessionName: aws.String("s1"), DurationSeconds: aws.Int32(3601)}, "ValidationError", 0},
		{"role with longer maximum", sts.AssumeRoleInput{RoleArn: aws.String(longRole), RoleSessionName: aws.String("s1"), DurationSeconds: aws.Int32(14400)}, "", 4 * time.Hour},
		{"above 12 hours", sts.AssumeRoleInput{RoleArn: aws.String(longRole), RoleSessionName: aws.String("s1"), DurationSeconds: aws.Int32(43201)}, "ValidationError", 0},
		{"unknown role", sts.AssumeRoleInput{RoleArn: aws.String("arn:aws:iam::123456789012:role/nope"), RoleSessionName: aws.String("s1")}, "AccessDenied", 0},
		{"external id", sts.AssumeRoleInput{RoleArn: aws.String(externalRole), RoleSessionName: aws.String("s1"), ExternalId: aws.String("ext-123")}, "", time.Hour},
		{"external id mismatch", sts.AssumeRoleInput{RoleArn: aws.String(externalRole), RoleSessionName: aws.String("s1"), ExternalId: aws.String("ext-999")}, "AccessDenied", 0},
		{"external id missing", sts.AssumeRoleInput{RoleArn: aws.String(externalRole), RoleSessionName: aws.String("s1")}, "AccessDenied", 0},
		{"session name too short", sts.AssumeRoleInput{RoleArn: aws.String(plainRole), RoleSessionName: aws.String("s")}, "ValidationError", 0},
		{"session name bad character", sts.AssumeRoleInput{RoleArn: aws.String(plainRole), RoleSessionName: aws.String("a b")}, "ValidationError", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			before := time.Now().Truncate(time.Second)
			out, err := st.AssumeRole(t.Context(), &tt.in)
			if code := errorCode(err); code != tt.wantCode {
				t.Fatalf("AssumeRole error = %v, want code %q", err, tt.wantCode)
			}
			if tt.wantCode == "AccessDenied" && httpStatus(err) != 403 {
				t.Errorf("AssumeRole HTTP status = %d, want 403", httpStatus(err))
			}
			if err != nil {
				return
			}
			c := out.Credentials
			if ttl := c.Expiration.Sub(before); ttl < tt.wantTTL || ttl > tt.wantTTL+2*time.Second {
				t.Errorf("Expiration - now = %v, want %v", ttl, tt.wantTTL)
			}
			if !strings.HasPrefix(aws.ToString(c.AccessKeyId), "ASIA") || aws.ToString(c.SessionToken) == "" {
				t.Errorf("credentials = %s / token %d bytes, want an ASIA key with a session token", aws.ToString(c.AccessKeyId), len(aws.ToString(c.SessionToken)))
			}
			roleName := (*tt.in.RoleArn)[strings.LastIndex(*tt.in.RoleArn, "/")+1:]
			wantARN := "arn:aws:sts::123456789012:assumed-role/" + roleName + "/" + *tt.in.RoleSessionName
			if got := aws.ToString(out.AssumedRoleUser.Arn); got != wantARN {
				t.Errorf("AssumedRoleUser.Arn = %q, want %q", got, wantARN)
			}

			// The temporary credentials work, and are who they say.
			temp := staticCreds(*c.AccessKeyId, *c.SecretAccessKey, *c.SessionToken)
			who, err := stsClient(t, url, temp).GetCallerIdentity(t.Context(), &sts.GetCallerIdentityInput{})
			if err != nil {
				t.Fatalf("GetCallerIdentity with temporary credentials: %v", err)
			}
			if aws.ToString(who.Arn) != wantARN || !strings.HasSuffix(aws.ToString(who.UserId), ":"+*tt.in.RoleSessionName) {
				t.Errorf("GetCallerIdentity = %s %s, want %s and AROA…:%s", aws.ToString(who.Arn), aws.ToString(who.UserId), wantARN, *tt.in.RoleSessionName)
			}
			if _, err := smClient(t, url, temp).GetSecretValue(t.Context(), &secretsmanager.GetSecretValueInput{SecretId: aws.String("shared")}); err != nil {
				t.Errorf("GetSecretValue with temporary credentials: %v", err)
			}
		})
	}
}

func TestTemporaryCredentials(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s, url := mustStart(t, awsemu.Options{Roles: testRoles, Now: clk.Now})
	s.PutSecretDirect("shared", "v", nil)
	ctx := t.Context()
	out, err := stsClient(t, url, defaultCreds).AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String(plainRole), RoleSessionName: aws.String("temp"), DurationSeconds: aws.Int32(900)})
	if err != nil {
		t.Fatalf("AssumeRole: %v", err)
	}
	c := out.Credentials
	temp := staticCreds(*c.AccessKeyId, *c.SecretAccessKey, *c.SessionToken)
	get := func(creds aws.CredentialsProvider) error {
		_, err := smClient(t, url, creds, noRetry).GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String("shared")})
		return err
	}

	if err := get(temp); err != nil {
		t.Fatalf("GetSecretValue with fresh credentials: %v", err)
	}
	if code := errorCode(get(staticCreds(*c.AccessKeyId, *c.SecretAccessKey, ""))); code != "UnrecognizedClientException" {
		t.Errorf("GetSecretValue without the session token: code %q, want UnrecognizedClientException", code)
	}
	if code := errorCode(get(staticCreds(*c.AccessKeyId, *c.SecretAccessKey, *c.SessionToken+"x"))); code != "UnrecognizedClientException" {
		t.Errorf("GetSecretValue with a wrong session token: code %q, want UnrecognizedClientException", code)
	}

	// Role chaining: a role session may assume another role for at most an hour.
	chained := stsClient(t, url, temp, func(o *sts.Options) { o.RetryMaxAttempts = 1 })
	_, err = chained.AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String(longRole), RoleSessionName: aws.String("chain"), DurationSeconds: aws.Int32(7200)})
	if code := errorCode(err); code != "ValidationError" {
		t.Errorf("chained AssumeRole for 2h: error %v, want ValidationError", err)
	}
	if _, err := chained.AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String(longRole), RoleSessionName: aws.String("chain")}); err != nil {
		t.Errorf("chained AssumeRole for 1h: %v", err)
	}

	clk.Advance(15*time.Minute - time.Second)
	if err := get(temp); err != nil {
		t.Fatalf("GetSecretValue a second before expiry: %v", err)
	}
	clk.Advance(time.Second)
	err = get(temp)
	if code := errorCode(err); code != "ExpiredTokenException" {
		t.Errorf("GetSecretValue with expired credentials: error %v, want ExpiredTokenException", err)
	}
	_, err = stsClient(t, url, temp, func(o *sts.Options) { o.RetryMaxAttempts = 1 }).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if code := errorCode(err); code != "ExpiredToken" {
		t.Errorf("GetCallerIdentity with expired credentials: error %v, want ExpiredToken", err)
	}
}

// TestAssumeRoleProviderCaches runs the SDK's own assume-role provider behind
// a credentials cache: many calls, one AssumeRole, all made by the role.
func TestAssumeRoleProviderCaches(t *testing.T) {
	t.Parallel()
	s, url := mustStart(t, awsemu.Options{Roles: testRoles})
	s.PutSecretDirect("shared", "v", nil)
	provider := stscreds.NewAssumeRoleProvider(stsClient(t, url, defaultCreds), externalRole, func(o *stscreds.AssumeRoleOptions) {
		o.ExternalID = aws.String("ext-123")
		o.RoleSessionName = "delegate-a"
	})
	sm := smClient(t, url, aws.NewCredentialsCache(provider))
	for range 5 {
		if _, err := sm.GetSecretValue(t.Context(), &secretsmanager.GetSecretValueInput{SecretId: aws.String("shared")}); err != nil {
			t.Fatalf("GetSecretValue: %v", err)
		}
	}
	if n := s.Calls("sts.AssumeRole"); n != 1 {
		t.Errorf("Calls(sts.AssumeRole) = %d, want 1", n)
	}
	for _, r := range s.Requests() {
		if r.Service == "secretsmanager" && !strings.HasPrefix(r.AccessKeyID, "ASIA") {
			t.Errorf("secretsmanager.%s made with %q, want the role's ASIA key", r.Action, r.AccessKeyID)
		}
	}
	// A refused secret read from the role is a typed SDK error as usual.
	_, err := sm.GetSecretValue(t.Context(), &secretsmanager.GetSecretValueInput{SecretId: aws.String("missing")})
	var nf *types.ResourceNotFoundException
	if !errors.As(err, &nf) {
		t.Errorf("GetSecretValue(missing) = %v, want ResourceNotFoundException", err)
	}
}

// TestIssuedSessions: IssuedSessions returns exactly the temporary
// credentials STS handed out, secret halves and tokens included, and no
// long-term key.
func TestIssuedSessions(t *testing.T) {
	t.Parallel()
	s, url := mustStart(t, awsemu.Options{Roles: testRoles})
	if got := s.IssuedSessions(); len(got) != 0 {
		t.Fatalf("IssuedSessions() before any AssumeRole = %v, want none", got)
	}
	st := stsClient(t, url, defaultCreds)
	var want []awsemu.SessionCredentials
	for _, session := range []string{"first", "second"} {
		out, err := st.AssumeRole(t.Context(), &sts.AssumeRoleInput{RoleArn: aws.String(plainRole), RoleSessionName: aws.String(session)})
		if err != nil {
			t.Fatalf("AssumeRole(%s): %v", session, err)
		}
		c := out.Credentials
		want = append(want, awsemu.SessionCredentials{AccessKeyID: *c.AccessKeyId, SecretAccessKey: *c.SecretAccessKey,
			SessionToken: *c.SessionToken, Expires: c.Expiration.UTC()})
	}
	got := s.IssuedSessions()
	for i := range got {
		got[i].Expires = got[i].Expires.UTC()
	}
	sortByKey := cmpopts.SortSlices(func(a, b awsemu.SessionCredentials) bool { return a.AccessKeyID < b.AccessKeyID })
	if diff := cmp.Diff(want, got, sortByKey); diff != "" {
		t.Errorf("IssuedSessions() (-AssumeRole responses +got):\n%s", diff)
	}
}
