package awsauth

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// TestItem2EndpointsAWSOrAllowed: a connector's endpoint is AWS's own
// for the service, or allowed by the host's policy; AWS-hosted names an
// attacker can own (a bucket, an instance, an API) do not pass for one.
func TestItem2EndpointsAWSOrAllowed(t *testing.T) {
	t.Parallel()
	p, err := NewPolicy(PolicyConfig{AllowEndpoints: []string{
		"http://127.0.0.1:*", "https://*.vpce.internal.example", "https://proxy.example.com/aws",
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		service, url string
		ok           bool
	}{
		{serviceSecretsManager, "https://secretsmanager.us-east-1.amazonaws.com", true},
		{serviceSecretsManager, "https://secretsmanager-fips.us-gov-west-1.amazonaws.com/", true},
		{serviceSecretsManager, "https://secretsmanager.cn-north-1.amazonaws.com.cn", true},
		{serviceSecretsManager, "https://secretsmanager.eu-west-1.api.aws:443", true},
		{serviceSecretsManager, "https://vpce-0a1b2c-d3e4.secretsmanager.us-east-1.vpce.amazonaws.com", true},
		{serviceSTS, "https://sts.amazonaws.com", true},
		{serviceSTS, "https://sts.ap-southeast-2.amazonaws.com", true},
		{serviceSecretsManager, "http://127.0.0.1:4566", true},
		{serviceSTS, "http://127.0.0.1:9", true},
		{serviceSecretsManager, "https://a.b.vpce.internal.example", true},
		{serviceSecretsManager, "https://proxy.example.com/aws/sm", true},

		// Not AWS's own: http, another port, a path, another service, a
		// name under amazonaws.com that is not a regional endpoint.
		{serviceSecretsManager, "http://secretsmanager.us-east-1.amazonaws.com", false},
		{serviceSecretsManager, "https://secretsmanager.us-east-1.amazonaws.com:8443", false},
		{serviceSecretsManager, "https://secretsmanager.us-east-1.amazonaws.com/x", false},
		{serviceSecretsManager, "https://sts.us-east-1.amazonaws.com", false},
		{serviceSTS, "https://secretsmanager.us-east-1.amazonaws.com", false},
		{serviceSecretsManager, "https://secretsmanager.s3.amazonaws.com", false},
		{serviceSecretsManager, "https://secretsmanager.s3-website-us-east-1.amazonaws.com", false},
		{serviceSecretsManager, "https://ec2-1-2-3-4.compute-1.amazonaws.com", false},
		{serviceSecretsManager, "https://abc.execute-api.us-east-1.amazonaws.com", false},
		{serviceSecretsManager, "https://secretsmanager.us-east-1.amazonaws.com.evil.example", false},
		{serviceSecretsManager, "https://evil.example/secretsmanager.us-east-1.amazonaws.com", false},
		{serviceSTS, "https://vpce-1.vpce-svc-0123.us-east-1.vpce.amazonaws.com", false},
		// Not allowed by the policy: another host, port or path.
		{serviceSecretsManager, "http://127.0.0.2:4566", false},
		{serviceSecretsManager, "https://127.0.0.1:4566", false},
		{serviceSecretsManager, "https://vpce.internal.example", false},
		{serviceSecretsManager, "https://proxy.example.com/awsx", false},
		{serviceSecretsManager, "https://proxy.example.com/", false},
		{serviceSecretsManager, "https://proxy.example.com:444/aws", false},
	} {
		got, err := p.endpoint("endpoint_url", tc.service, tc.url)
		if tc.ok && (err != nil || got != tc.url) {
			t.Errorf("endpoint(%s, %q) = %q, %v; want it allowed", tc.service, tc.url, got, err)
		}
		if !tc.ok && (err == nil || !errors.Is(err, ErrNotAllowed) || !errors.Is(err, ErrInvalidSettings) ||
			!strings.Contains(err.Error(), "(endpoints.allow)")) {
			t.Errorf("endpoint(%s, %q) = %q, %v; want a refusal naming endpoints.allow", tc.service, tc.url, got, err)
		}
	}
	// Malformed URLs are invalid, whatever the policy.
	for _, u := range []string{"localhost:4566", "ftp://x", "http://u:p@127.0.0.1:1", "http://127.0.0.1:1/?a=b",
		"http://127.0.0.1:1/#f", "http://127.0.0.1:1/a/../b", "http://127.0.0.1:1/%2e%2e/b"} {
		if _, err := p.endpoint("endpoint_url", serviceSecretsManager, u); err == nil || errors.Is(err, ErrNotAllowed) || strings.Contains(err.Error(), "p@") {
			t.Errorf("endpoint(%q) = %v, want an invalid-URL error that does not quote it", u, err)
		}
	}
	// The manager's keys.
	m, _ := NewPolicy(PolicyConfig{Keys: PolicyKeys{Config: "the manager's config", Endpoints: "platform.endpoints.allow"}})
	_, err = m.endpoint("sts_endpoint_url", serviceSTS, "http://127.0.0.1:1")
	if want := "connector.sts_endpoint_url: http://127.0.0.1:1 is refused: it is not an AWS STS endpoint and the manager's config does not allow it (platform.endpoints.allow)"; err == nil || err.Error() != want {
		t.Errorf("manager endpoint refusal = %v, want %q", err, want)
	}
	// A nil policy is the default: AWS only.
	var none *Policy
	if _, err := none.endpoint("endpoint_url", serviceSecretsManager, "https://secretsmanager.us-east-1.amazonaws.com"); err != nil {
		t.Errorf("nil policy refused AWS: %v", err)
	}
	if _, err := none.endpoint("endpoint_url", serviceSecretsManager, "http://127.0.0.1:1"); !errors.Is(err, ErrNotAllowed) {
		t.Errorf("nil policy allowed a custom endpoint: %v", err)
	}
}

// TestItem2RegionCannotSteerTheEndpoint: the region names the default
// endpoint's host, so the delegate checks it is a region.
func TestItem2RegionCannotSteerTheEndpoint(t *testing.T) {
	t.Parallel()
	for _, r := range []string{"s3", "evil.example#", "us-east-1.evil.example", "us-east-1/x"} {
		_, err := resolve(&delegatev1.ConnectorSettings{CredentialType: delegatev1.CredentialType_INSTANCE_ROLE, Region: r}, nil)
		if err == nil || !strings.HasPrefix(err.Error(), "connector.region: must be an AWS region") {
			t.Errorf("resolve(region %q) = %v, want a connector.region error", r, err)
		}
	}
}

// TestItem2ReferencesOnlyWhereAllowed: env: and file: references resolve
// only where the host's policy allows them; smd's own variables and
// files, links to them, copies of the token, special files and big files
// never; no refusal holds the material.
func TestItem2ReferencesOnlyWhereAllowed(t *testing.T) {
	const token, planted = "smdd_TOKEN_item2_policy_0001", "PLANTED-key-material-item2"
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	if err := os.Mkdir(keys, 0o700); err != nil {
		t.Fatal(err)
	}
	write := func(p, content string) string {
		t.Helper()
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tokenFile := write(filepath.Join(keys, "agent.token"), token+"\n")
	good := write(filepath.Join(keys, "good.key"), planted+"\n")
	copyFile := write(filepath.Join(keys, "copy.key"), "x "+token)
	big := write(filepath.Join(keys, "big.key"), strings.Repeat("A", MaxRefFileSize+1))
	outside := write(filepath.Join(dir, "outside.key"), planted)
	link := filepath.Join(keys, "link.key")
	if err := os.Symlink(tokenFile, link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(keys, "fifo.key")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ITEM2_POLICY_KEY", planted)
	t.Setenv("ITEM2_POLICY_OTHER", planted)
	t.Setenv("ITEM2_POLICY_TOKEN", token)
	t.Setenv("SMD_ITEM2_POLICY", planted)

	p, err := NewPolicy(PolicyConfig{
		AllowEnv:       []string{"ITEM2_POLICY_KEY", "ITEM2_POLICY_TOKEN", "*_ITEM2_POLICY"},
		AllowFiles:     []string{keys + "/*"},
		ProtectedFiles: []string{tokenFile},
		Withheld:       []string{token},
	})
	if err != nil {
		t.Fatal(err)
	}
	env := func(n string) *delegatev1.SecretRef {
		return &delegatev1.SecretRef{Ref: &delegatev1.SecretRef_Env{Env: n}}
	}
	file := func(n string) *delegatev1.SecretRef {
		return &delegatev1.SecretRef{Ref: &delegatev1.SecretRef_File{File: n}}
	}
	for _, tc := range []struct {
		name       string
		ref        *delegatev1.SecretRef
		want       string // error text; "" for planted
		notAllowed bool
	}{
		{"allowed variable", env("ITEM2_POLICY_KEY"), "", false},
		{"allowed file", file(good), "", false},
		{"allowed file, unclean path", file(keys + "//./good.key"), "", false},
		{"variable not listed", env("ITEM2_POLICY_OTHER"), "env:ITEM2_POLICY_OTHER is refused: the agent's config does not allow it (references.allow_env)", true},
		{"SMD_ variable matched by a pattern", env("SMD_ITEM2_POLICY"), "env:SMD_ITEM2_POLICY is refused: SMD_* variables configure smd itself", true},
		{"variable holding the token", env("ITEM2_POLICY_TOKEN"), "env:ITEM2_POLICY_TOKEN is refused: it holds the host's own token", true},
		{"file outside the globs", file(outside), "(references.allow_files)", true},
		{"file escaping by ..", file(keys + "/../outside.key"), "(references.allow_files)", true},
		{"protected file", file(tokenFile), "is refused: it is the host's own token, key or config file", true},
		{"link to the protected file", file(link), "is refused: it is the host's own token, key or config file", true},
		{"copy of the token", file(copyFile), "is refused: it holds the host's own token", true},
		{"relative path", file("keys/good.key"), "file:keys/good.key must be an absolute path", false},
		{"fifo", file(fifo), "is not a regular file", false},
		{"big file", file(big), "is larger than 4096 bytes", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := p.ResolveRef("access_key_id", tc.ref)
			if tc.want == "" {
				if err != nil || got != planted {
					t.Fatalf("ResolveRef() = %q, %v; want the planted material", got, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "connector.access_key_id: ") {
				t.Fatalf("ResolveRef() = %q, %v; want an error with %q", got, err, tc.want)
			}
			if !errors.Is(err, ErrCredentials) || errors.Is(err, ErrNotAllowed) != tc.notAllowed {
				t.Errorf("ResolveRef() error %v: ErrCredentials %v, ErrNotAllowed %v; want true, %v",
					err, errors.Is(err, ErrCredentials), errors.Is(err, ErrNotAllowed), tc.notAllowed)
			}
			if strings.Contains(err.Error(), planted) || strings.Contains(err.Error(), token) || strings.Contains(err.Error(), "AAAA") {
				t.Errorf("ResolveRef() error quotes the material: %v", err)
			}
		})
	}

	// The manager has no reference allow-list: never.
	m, _ := NewPolicy(PolicyConfig{AllowFiles: []string{keys + "/*"}, Keys: PolicyKeys{Config: "the manager's config", Endpoints: "platform.endpoints.allow"}})
	if _, err := m.ResolveRef("access_key_id", file(good)); err == nil || !errors.Is(err, ErrNotAllowed) || !strings.Contains(err.Error(), "never read here") {
		t.Errorf("manager ResolveRef(file) = %v, want a refusal", err)
	}
	// nil is the default: no reference.
	var none *Policy
	if _, err := none.ResolveRef("access_key_id", env("ITEM2_POLICY_KEY")); !errors.Is(err, ErrNotAllowed) {
		t.Errorf("nil policy ResolveRef(env) = %v, want a refusal", err)
	}
}

// TestItem2PolicyConfigErrorsNameTheKey: NewPolicy refuses bad entries
// naming the key and index.
func TestItem2PolicyConfigErrorsNameTheKey(t *testing.T) {
	t.Parallel()
	_, err := NewPolicy(PolicyConfig{
		AllowEnv:       []string{"OK", "BAD NAME"},
		AllowFiles:     []string{"relative/*"},
		AllowEndpoints: []string{"https://ok.example", "127.0.0.1:4566"},
	})
	for _, want := range []string{"references.allow_env[1]: ", "references.allow_files[0]: ", "endpoints.allow[1]: "} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("NewPolicy() = %v, want an error naming %s", err, want)
		}
	}
}

// TestItem2NoRedirectToAnUncheckedHost: an allowed endpoint that answers
// 302 does not get the request re-sent elsewhere (net/http would follow
// it as a GET with the signed headers, Authorization included on the same
// host name).
func TestItem2NoRedirectToAnUncheckedHost(t *testing.T) {
	isolate(t)
	var elsewhere atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { elsewhere.Add(1) }))
	defer target.Close()
	allowed := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/", http.StatusFound)
	}))
	defer allowed.Close()
	policy, err := NewPolicy(PolicyConfig{AllowEndpoints: []string{allowed.URL}})
	if err != nil {
		t.Fatal(err)
	}
	p := NewPool(PoolOptions{Policy: policy, MaxAttempts: 1})
	value := func(v string) *delegatev1.SecretRef {
		return &delegatev1.SecretRef{Ref: &delegatev1.SecretRef_Value{Value: v}}
	}
	cl, err := p.SecretsManager(t.Context(), &delegatev1.ConnectorSettings{
		CredentialType: delegatev1.CredentialType_ACCESS_KEY, Region: "us-east-1", EndpointUrl: allowed.URL,
		AccessKeyId: value("AKIAREDIRECTTEST0001"), SecretAccessKey: value("redirect/secret/key"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.GetSecretValue(t.Context(), &secretsmanager.GetSecretValueInput{SecretId: aws.String("x")}); err == nil {
		t.Error("GetSecretValue through a redirect succeeded, want an error")
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("the redirect target received %d requests, want none", n)
	}
}
