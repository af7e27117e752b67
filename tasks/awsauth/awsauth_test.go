package awsauth

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

func TestSessionName(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"agent-1", "agent-1"},
		{"host.example.com", "host.example.com"},
		{"my agent/01", "my-agent-01"},
		{"", "smdelegate"},
		{"x", "smdelegate"},
		{"é", "smdelegate"},
		{strings.Repeat("a", 80), strings.Repeat("a", 64)},
		{"a+b=c,d.e@f-g_h", "a+b=c,d.e@f-g_h"},
	} {
		if got := SessionName(tc.in); got != tc.want {
			t.Errorf("SessionName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestResolveRef(t *testing.T) {
	const planted = "PLANTED-secret-material-42"
	t.Setenv("AWSAUTH_TEST_KEY_SET", "  "+planted+"\n")
	t.Setenv("AWSAUTH_TEST_KEY_EMPTY", "")
	dir := t.TempDir()
	file := filepath.Join(dir, "key")
	if err := os.WriteFile(file, []byte(planted+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := NewPolicy(PolicyConfig{AllowEnv: []string{"AWSAUTH_TEST_KEY_*", "AWS_KEY_X_UNSET"}, AllowFiles: []string{filepath.Join(dir, "*")}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		ref     *delegatev1.SecretRef
		want    string
		wantErr string
	}{
		{"value", &delegatev1.SecretRef{Ref: &delegatev1.SecretRef_Value{Value: planted}}, planted, ""},
		{"env", &delegatev1.SecretRef{Ref: &delegatev1.SecretRef_Env{Env: "AWSAUTH_TEST_KEY_SET"}}, planted, ""},
		{"file", &delegatev1.SecretRef{Ref: &delegatev1.SecretRef_File{File: file}}, planted, ""},
		{"nil", nil, "", "connector.access_key_id: is required"},
		{"env unset", &delegatev1.SecretRef{Ref: &delegatev1.SecretRef_Env{Env: "AWS_KEY_X_UNSET"}}, "", "connector.access_key_id: env var AWS_KEY_X_UNSET is not set"},
		{"env empty", &delegatev1.SecretRef{Ref: &delegatev1.SecretRef_Env{Env: "AWSAUTH_TEST_KEY_EMPTY"}}, "", "connector.access_key_id: is empty"},
		{"file missing", &delegatev1.SecretRef{Ref: &delegatev1.SecretRef_File{File: filepath.Join(dir, "nope")}}, "", "connector.access_key_id: file " + filepath.Join(dir, "nope") + " does not exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := p.ResolveRef("access_key_id", tc.ref)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("ResolveRef() error = %v, want %q", err, tc.wantErr)
				}
				if !errors.Is(err, ErrCredentials) {
					t.Errorf("ResolveRef() error %v is not ErrCredentials", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ResolveRef() = %q, %v, want %q", got, err, tc.want)
			}
		})
	}
}

func TestResolveValidates(t *testing.T) {
	t.Parallel()
	role := "arn:aws:iam::123456789012:role/r"
	for _, tc := range []struct {
		name string
		c    *delegatev1.ConnectorSettings
		want string // error text; "" for success
	}{
		{"nil", nil, "connector.credential_type: connector settings are missing"},
		{"unspecified type", &delegatev1.ConnectorSettings{}, "connector.credential_type: must be one of ACCESS_KEY, INSTANCE_ROLE, ASSUME_ROLE, OIDC"},
		{"instance role", &delegatev1.ConnectorSettings{CredentialType: delegatev1.CredentialType_INSTANCE_ROLE}, ""},
		{"assume role no arn", &delegatev1.ConnectorSettings{CredentialType: delegatev1.CredentialType_ASSUME_ROLE}, "connector.role_arn: is required for credential type ASSUME_ROLE"},
		{"assume role bad arn", &delegatev1.ConnectorSettings{CredentialType: delegatev1.CredentialType_ASSUME_ROLE, RoleArn: "role/x"}, "connector.role_arn: must be an IAM role ARN (arn:PARTITION:iam::ACCOUNT:role/NAME)"},
		{"duration low", &delegatev1.ConnectorSettings{CredentialType: delegatev1.CredentialType_ASSUME_ROLE, RoleArn: role, AssumeRoleDurationSeconds: 899}, "connector.assume_role_duration_seconds: must be between 900 and 43200 seconds"},
		{"duration high", &delegatev1.ConnectorSettings{CredentialType: delegatev1.CredentialType_OIDC, RoleArn: role, AssumeRoleDurationSeconds: 43201}, "connector.assume_role_duration_seconds: must be between 900 and 43200 seconds"},
		{"duration ok", &delegatev1.ConnectorSettings{CredentialType: delegatev1.CredentialType_ASSUME_ROLE, RoleArn: role, AssumeRoleDurationSeconds: 43200}, ""},
		{"bad endpoint", &delegatev1.ConnectorSettings{CredentialType: delegatev1.CredentialType_INSTANCE_ROLE, EndpointUrl: "localhost:4566"}, "connector.endpoint_url: must be an absolute http or https URL"},
		{"bad sts endpoint", &delegatev1.ConnectorSettings{CredentialType: delegatev1.CredentialType_INSTANCE_ROLE, StsEndpointUrl: "ftp://x"}, "connector.sts_endpoint_url: must be an absolute http or https URL"},
		{"access key missing secret", &delegatev1.ConnectorSettings{CredentialType: delegatev1.CredentialType_ACCESS_KEY,
			AccessKeyId: &delegatev1.SecretRef{Ref: &delegatev1.SecretRef_Value{Value: "AKIAEXAMPLE"}}}, "connector.secret_access_key: is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := resolve(tc.c, nil)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("resolve() = %v, want success", err)
			case tc.want != "" && (err == nil || err.Error() != tc.want):
				t.Fatalf("resolve() = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestCacheKeyIgnoresWebIdentityToken(t *testing.T) {
	t.Parallel()
	c := &delegatev1.ConnectorSettings{Id: "c1", CredentialType: delegatev1.CredentialType_OIDC, RoleArn: "arn:aws:iam::1:role/r", WebIdentityToken: "t1"}
	r1, err := resolve(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.WebIdentityToken = "t2"
	r2, _ := resolve(c, nil)
	if r1.cacheKey("s") != r2.cacheKey("s") {
		t.Error("cache key changed with the web identity token")
	}
	c.RoleArn = "arn:aws:iam::1:role/other"
	r3, _ := resolve(c, nil)
	if r1.cacheKey("s") == r3.cacheKey("s") {
		t.Error("cache key did not change with the role ARN")
	}
}

// isolate points the SDK away from the host's AWS configuration.
func isolate(t *testing.T) {
	t.Helper()
	for _, k := range []string{"AWS_CA_BUNDLE", "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
		"AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SECRETS_MANAGER", "AWS_ENDPOINT_URL_STS", "AWS_REGION", "AWS_DEFAULT_REGION"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

func TestPoolLRUAndTTL(t *testing.T) {
	isolate(t)
	now := time.Unix(1_000_000, 0)
	p := NewPool(PoolOptions{MaxClients: 2, TTL: time.Minute})
	p.now = func() time.Time { return now }
	conn := func(id string) *delegatev1.ConnectorSettings {
		return &delegatev1.ConnectorSettings{Id: id, Region: "us-east-1", CredentialType: delegatev1.CredentialType_ACCESS_KEY,
			AccessKeyId:     &delegatev1.SecretRef{Ref: &delegatev1.SecretRef_Value{Value: "AKIAEXAMPLE" + id}},
			SecretAccessKey: &delegatev1.SecretRef{Ref: &delegatev1.SecretRef_Value{Value: "secret" + id}}}
	}
	ctx := t.Context()
	a1, err := p.SecretsManager(ctx, conn("a"))
	if err != nil {
		t.Fatal(err)
	}
	a2, _ := p.SecretsManager(ctx, conn("a"))
	if a1 != a2 {
		t.Error("same connector gave two clients")
	}
	b, _ := p.SecretsManager(ctx, conn("b"))
	if b == a1 {
		t.Error("different connectors share a client")
	}
	p.SecretsManager(ctx, conn("a")) // a is now most recent
	p.SecretsManager(ctx, conn("c")) // evicts b
	if p.Len() != 2 {
		t.Errorf("Len() = %d, want 2", p.Len())
	}
	if a3, _ := p.SecretsManager(ctx, conn("a")); a3 != a1 {
		t.Error("most recently used client was evicted")
	}
	if b2, _ := p.SecretsManager(ctx, conn("b")); b2 == b {
		t.Error("least recently used client was not evicted")
	}
	now = now.Add(2 * time.Minute)
	if a4, _ := p.SecretsManager(ctx, conn("a")); a4 == a1 {
		t.Error("client outlived its TTL")
	}
}

func TestPoolCABundle(t *testing.T) {
	isolate(t)
	missing := filepath.Join(t.TempDir(), "missing.pem")
	t.Setenv("AWS_CA_BUNDLE", missing)
	p := NewPool(PoolOptions{})
	_, err := p.SecretsManager(t.Context(), &delegatev1.ConnectorSettings{Region: "us-east-1", CredentialType: delegatev1.CredentialType_INSTANCE_ROLE})
	if want := "AWS_CA_BUNDLE: file " + missing + " cannot be read"; err == nil || err.Error() != want || !errors.Is(err, ErrInvalidSettings) {
		t.Fatalf("SecretsManager() = %v, want %q", err, want)
	}
}

func TestPoolNeedsRegion(t *testing.T) {
	isolate(t)
	p := NewPool(PoolOptions{})
	_, err := p.SecretsManager(t.Context(), &delegatev1.ConnectorSettings{CredentialType: delegatev1.CredentialType_INSTANCE_ROLE})
	if err == nil || !errors.Is(err, ErrInvalidSettings) || !strings.HasPrefix(err.Error(), "connector.region:") {
		t.Fatalf("SecretsManager() = %v, want a connector.region error", err)
	}
	t.Setenv("AWS_REGION", "eu-west-1")
	cl, err := p.SecretsManager(t.Context(), &delegatev1.ConnectorSettings{CredentialType: delegatev1.CredentialType_INSTANCE_ROLE})
	if err != nil {
		t.Fatal(err)
	}
	if got := cl.Options().Region; got != "eu-west-1" {
		t.Errorf("region = %q, want the AWS_REGION fallback eu-west-1", got)
	}
}

func TestTokenHolder(t *testing.T) {
	t.Parallel()
	var h tokenHolder
	if _, err := h.GetIdentityToken(); err == nil || !strings.Contains(err.Error(), "connector.web_identity_token") {
		t.Errorf("GetIdentityToken() on empty holder = %v, want a web_identity_token error", err)
	}
	h.set("a")
	h.set("")
	if b, _ := h.GetIdentityToken(); string(b) != "a" {
		t.Errorf("GetIdentityToken() = %q, want the last non-empty token", b)
	}
}
