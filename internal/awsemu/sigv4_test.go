package awsemu_test

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/smdelegate/smdelegate/internal/awsemu"
)

func TestCredentialsRefused(t *testing.T) {
	t.Parallel()
	_, url := mustStart(t, awsemu.Options{Credentials: map[string]string{"AKIAGOOD": "good-secret"}})

	tests := []struct {
		name    string
		creds   aws.CredentialsProvider
		region  string
		smCode  string
		stsCode string
	}{
		{"registered key", staticCreds("AKIAGOOD", "good-secret", ""), testRegion, "", ""},
		{"wrong secret key", staticCreds("AKIAGOOD", "bad-secret", ""), testRegion, "InvalidSignatureException", "SignatureDoesNotMatch"},
		{"unknown key", staticCreds("AKIAUNKNOWN", "good-secret", ""), testRegion, "UnrecognizedClientException", "InvalidClientTokenId"},
		{"default key not registered", defaultCreds, testRegion, "UnrecognizedClientException", "InvalidClientTokenId"},
		{"session token on a long-term key", staticCreds("AKIAGOOD", "good-secret", "token"), testRegion, "UnrecognizedClientException", "InvalidClientTokenId"},
		{"other region", staticCreds("AKIAGOOD", "good-secret", ""), "eu-west-1", "InvalidSignatureException", "SignatureDoesNotMatch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			region := func(r *string) { *r = tt.region }
			sm := smClient(t, url, tt.creds, noRetry, func(o *secretsmanager.Options) { region(&o.Region) })
			_, err := sm.ListSecrets(t.Context(), &secretsmanager.ListSecretsInput{})
			if code := errorCode(err); code != tt.smCode {
				t.Errorf("ListSecrets error = %v, want code %q", err, tt.smCode)
			}
			st := stsClient(t, url, tt.creds, func(o *sts.Options) { o.RetryMaxAttempts = 1; region(&o.Region) })
			_, err = st.GetCallerIdentity(t.Context(), &sts.GetCallerIdentityInput{})
			if code := errorCode(err); code != tt.stsCode {
				t.Errorf("GetCallerIdentity error = %v, want code %q", err, tt.stsCode)
			}
			if tt.stsCode != "" && httpStatus(err) != http.StatusForbidden {
				t.Errorf("GetCallerIdentity HTTP status = %d, want 403", httpStatus(err))
			}
		})
	}
}

// signedRequest builds a Secrets Manager request signed with the SDK's own
// signer; mutate runs after signing.
func signedRequest(t *testing.T, url, action string, body []byte, encoding string, mutate func(*http.Request)) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url+"/", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set("X-Amz-Target", "secretsmanager."+action)
	if encoding != "" {
		req.Header.Set("Content-Encoding", encoding)
	}
	sum := sha256.Sum256(body)
	creds := aws.Credentials{AccessKeyID: awsemu.DefaultAccessKeyID, SecretAccessKey: awsemu.DefaultSecretAccessKey}
	if err := v4.NewSigner().SignHTTP(t.Context(), creds, req, hex.EncodeToString(sum[:]), "secretsmanager", testRegion, time.Now()); err != nil {
		t.Fatalf("SignHTTP: %v", err)
	}
	if mutate != nil {
		mutate(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestRawSignedRequests(t *testing.T) {
	t.Parallel()
	s, url := mustStart(t, awsemu.Options{})
	s.PutSecretDirect("raw", "raw-value", nil)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	fmt.Fprint(zw, `{"SecretId":"raw"}`)
	zw.Close()

	tests := []struct {
		name       string
		body       []byte
		encoding   string
		mutate     func(*http.Request)
		wantStatus int
		wantType   string
	}{
		{"signed", []byte(`{"SecretId":"raw"}`), "", nil, 200, ""},
		{"gzip body", gz.Bytes(), "gzip", nil, 200, ""},
		{"unsigned payload claim", []byte(`{"SecretId":"raw"}`), "", func(r *http.Request) {
			// The header is not signed here, so the signature no longer matches.
			r.Header.Set("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")
		}, 400, "InvalidSignatureException"},
		{"no Authorization", []byte(`{"SecretId":"raw"}`), "", func(r *http.Request) { r.Header.Del("Authorization") }, 400, "MissingAuthenticationTokenException"},
		{"tampered body", []byte(`{"SecretId":"raw"}`), "", func(r *http.Request) {
			r.Body = io.NopCloser(strings.NewReader(`{"SecretId":"RAW"}`))
		}, 400, "InvalidSignatureException"},
		{"tampered target", []byte(`{"SecretId":"raw"}`), "", func(r *http.Request) {
			r.Header.Set("X-Amz-Target", "secretsmanager.DescribeSecret")
		}, 400, "InvalidSignatureException"},
		{"garbled Authorization", []byte(`{"SecretId":"raw"}`), "", func(r *http.Request) {
			r.Header.Set("Authorization", "AWS4-HMAC-SHA256 nonsense")
		}, 400, "IncompleteSignatureException"},
		{"unknown action", []byte(`{}`), "", func(r *http.Request) {}, 400, "UnknownOperationException"},
		{"JSON without X-Amz-Target", []byte(`{"SecretId":"raw"}`), "", func(r *http.Request) {
			r.Header.Del("X-Amz-Target")
		}, 400, "UnknownOperationException"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			action := "GetSecretValue"
			if tt.name == "unknown action" {
				action = "RotateSecret"
			}
			resp := signedRequest(t, url, action, tt.body, tt.encoding, tt.mutate)
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d, want %d (body %s)", resp.StatusCode, tt.wantStatus, body)
			}
			if got := resp.Header.Get("X-Amzn-Errortype"); got != tt.wantType {
				t.Errorf("x-amzn-ErrorType = %q, want %q", got, tt.wantType)
			}
			if tt.wantType != "" && !strings.Contains(string(body), `"__type":"`+tt.wantType+`"`) {
				t.Errorf("error body = %s, want __type %s", body, tt.wantType)
			}
			if resp.Header.Get("X-Amzn-Requestid") == "" {
				t.Errorf("no x-amzn-RequestId header")
			}
		})
	}
}

// TestNoSecretMaterialLeaks plants a secret value, secret keys and a
// session token, makes calls that fail in every credential path, and checks
// that neither the errors nor the recorded requests hold any of them.
func TestNoSecretMaterialLeaks(t *testing.T) {
	t.Parallel()
	const (
		value     = "planted-secret-value-5f1e"
		wrongKey  = "planted-wrong-secret-key-77ab"
		fakeToken = "planted-session-token-c0de"
	)
	clk := newClock()
	s, url := mustStart(t, awsemu.Options{Now: clk.Now, Roles: map[string]awsemu.Role{"arn:aws:iam::123456789012:role/r": {}}})
	ctx := t.Context()

	sm := smClient(t, url, defaultCreds, noRetry)
	if _, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String("leak"), SecretString: aws.String(value)}); err != nil {
		t.Fatalf("CreateSecret: %v", err)
	}
	_, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String("leak"), SecretString: aws.String(value)})
	errs := []error{err}
	if _, err := sm.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{SecretId: aws.String("leak"), SecretString: aws.String(value + "x"),
		ClientRequestToken: aws.String(strings.Repeat("t", 32))}); err != nil {
		t.Fatalf("PutSecretValue: %v", err)
	}
	_, err = sm.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{SecretId: aws.String("leak"), SecretString: aws.String(value),
		ClientRequestToken: aws.String(strings.Repeat("t", 32))})
	errs = append(errs, err)

	bad := smClient(t, url, staticCreds(awsemu.DefaultAccessKeyID, wrongKey, ""), noRetry)
	_, err = bad.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{SecretId: aws.String("leak"), SecretString: aws.String(value)})
	errs = append(errs, err)

	assumed, err := stsClient(t, url, defaultCreds).AssumeRole(ctx, &sts.AssumeRoleInput{RoleArn: aws.String("arn:aws:iam::123456789012:role/r"), RoleSessionName: aws.String("leak-test")})
	if err != nil {
		t.Fatalf("AssumeRole: %v", err)
	}
	c := assumed.Credentials
	wrongToken := smClient(t, url, staticCreds(*c.AccessKeyId, *c.SecretAccessKey, fakeToken), noRetry)
	_, err = wrongToken.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String("leak")})
	errs = append(errs, err)
	clk.Advance(2 * time.Hour)
	expired := smClient(t, url, staticCreds(*c.AccessKeyId, *c.SecretAccessKey, *c.SessionToken), noRetry)
	_, err = expired.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String("leak")})
	errs = append(errs, err)

	planted := []string{value, wrongKey, fakeToken, awsemu.DefaultSecretAccessKey, *c.SecretAccessKey, *c.SessionToken}
	for i, err := range errs {
		if err == nil {
			t.Errorf("call %d succeeded, want an error", i)
			continue
		}
		for _, p := range planted {
			if strings.Contains(err.Error(), p) {
				t.Errorf("error %d %q contains planted material", i, err)
			}
		}
	}
	recorded := fmt.Sprint(s.Requests())
	for _, p := range planted {
		if strings.Contains(recorded, p) {
			t.Errorf("Requests() contains planted material %q", p)
		}
	}
	if !strings.Contains(recorded, "<redacted>") {
		t.Errorf("Requests() = %s, want SecretString redacted", recorded)
	}
}
