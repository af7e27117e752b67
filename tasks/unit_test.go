package tasks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/smdelegate/smdelegate/tasks/awsauth"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

func TestPrefix(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ prefix, name, want string }{
		{"devops", "mysecret", "devops/mysecret"},
		{"/devops/", "mysecret", "devops/mysecret"},
		{"devops/team/", "db", "devops/team/db"},
		{"devops", "devops/mysecret", "devops/mysecret"}, // already prefixed: not again
		{"devops", "devopsx", "devops/devopsx"},
		{"", "mysecret", "mysecret"},
		{"//", "a/b", "a/b"},
	} {
		p := NewPrefix(tc.prefix)
		if got := p.Apply(tc.name); got != tc.want {
			t.Errorf("NewPrefix(%q).Apply(%q) = %q, want %q", tc.prefix, tc.name, got, tc.want)
		}
		if got := p.Strip(p.Apply(tc.name)); p != "" && got != strings.TrimPrefix(tc.name, string(p)+"/") {
			t.Errorf("Strip(Apply(%q)) = %q", tc.name, got)
		}
	}
}

func TestValidation(t *testing.T) {
	t.Parallel()
	str := func(s string) *delegatev1.SecretValue {
		return &delegatev1.SecretValue{Value: &delegatev1.SecretValue_StringValue{StringValue: s}}
	}
	for _, tc := range []struct {
		name string
		err  *Error
		want string
	}{
		{"empty name", second(fullName("", "")), "name: is required"},
		{"bad char", second(fullName("", "a b")), "name: must be 1-512 characters of letters, digits and /_+=.@-"},
		{"too long after prefix", second(fullName("p", strings.Repeat("a", 511))), "name: must be 1-512 characters of letters, digits and /_+=.@-"},
		{"max length", second(fullName("p", strings.Repeat("a", 510))), ""},
		{"all allowed chars", second(fullName("", "aZ09/_+=.@-")), ""},
		{"no value", third(secretValue(nil, true)), "value: is required"},
		{"empty value", third(secretValue(str(""), true)), "value: must be 1-65536 bytes"},
		{"big value", third(secretValue(str(strings.Repeat("x", 65537)), true)), "value: must be 1-65536 bytes"},
		{"max value", third(secretValue(str(strings.Repeat("x", 65536)), true)), ""},
		{"description", checkDescription(strings.Repeat("d", 2049)), "description: must be at most 2048 characters"},
		{"aws tag", checkTags(map[string]string{"aws:x": "1"}), `tags["aws:x"]: key must not start with aws:`},
		{"long tag key", checkTags(map[string]string{strings.Repeat("k", 128): "1"}), `tags["` + strings.Repeat("k", 128) + `"]: key must be 1-127 characters`},
		{"long tag value", checkTags(map[string]string{"k": strings.Repeat("v", 256)}), `tags["k"]: value must be at most 255 characters`},
		{"too many tags", checkTags(manyTags(51)), "tags: must be at most 50 tags"},
		{"50 tags", checkTags(manyTags(50)), ""},
		{"version id", checkVersion("short", ""), "version_id: must be 32-64 characters"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ""
			if tc.err != nil {
				got = tc.err.Error()
			}
			if got != tc.want {
				t.Errorf("error = %q, want %q", got, tc.want)
			}
		})
	}
}

func second[A any](_ A, e *Error) *Error        { return e }
func third[A, B any](_ A, _ B, e *Error) *Error { return e }

func manyTags(n int) map[string]string {
	m := map[string]string{}
	for i := range n {
		m[fmt.Sprintf("k%d", i)] = "v"
	}
	return m
}

func TestExtractJSON(t *testing.T) {
	t.Parallel()
	const planted = "PLANTED-s3cr3t-VALUE"
	doc := `{"user":"admin","password":"` + planted + `","port":5432,"tls":true,"none":null,` +
		`"db":{"host":"h","opts":{"ssl":"on"},"list":[1, 2]},"a.b":"literal","a":{"b":"path"},"x.y":{"z":"mixed"}}`
	for _, tc := range []struct {
		ref      string
		want     string
		wantCode delegatev1.Code
	}{
		{"password", planted, delegatev1.Code_OK},
		{"port", "5432", delegatev1.Code_OK},
		{"tls", "true", delegatev1.Code_OK},
		{"none", "null", delegatev1.Code_OK},
		{"db", `{"host":"h","opts":{"ssl":"on"},"list":[1,2]}`, delegatev1.Code_OK},
		{"db.host", "h", delegatev1.Code_OK},
		{"db.opts.ssl", "on", delegatev1.Code_OK},
		{"db.list", "[1,2]", delegatev1.Code_OK},
		{"a.b", "literal", delegatev1.Code_OK}, // the literal dotted key wins
		{"x.y.z", "mixed", delegatev1.Code_OK},
		{"missing", "", delegatev1.Code_NOT_FOUND},
		{"db.missing", "", delegatev1.Code_NOT_FOUND},
		{"password.x", "", delegatev1.Code_INVALID_ARGUMENT}, // not an object
	} {
		t.Run(tc.ref, func(t *testing.T) {
			t.Parallel()
			got, err := ExtractJSON([]byte(doc), tc.ref)
			if tc.wantCode == delegatev1.Code_OK {
				if err != nil || got != tc.want {
					t.Fatalf("ExtractJSON(%q) = %q, %v, want %q", tc.ref, got, err, tc.want)
				}
				return
			}
			if err == nil || err.Code != tc.wantCode {
				t.Fatalf("ExtractJSON(%q) = %q, %v, want code %v", tc.ref, got, err, tc.wantCode)
			}
			if strings.Contains(err.Error(), planted) || strings.Contains(err.Error(), "admin") {
				t.Errorf("ExtractJSON(%q) error %q echoes the secret", tc.ref, err)
			}
		})
	}
	for _, bad := range []string{planted, "[1,2]", `"` + planted + `"`, "42", "null", "{not json " + planted} {
		_, err := ExtractJSON([]byte(bad), "k")
		if err == nil || err.Code != delegatev1.Code_INVALID_ARGUMENT {
			t.Errorf("ExtractJSON(non-object) = %v, want INVALID_ARGUMENT", err)
			continue
		}
		if strings.Contains(err.Error(), planted) {
			t.Errorf("ExtractJSON error %q echoes the secret", err)
		}
	}
}

func TestSplitRef(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, name, ref string }{
		{"db", "db", ""},
		{"db#password", "db", "password"},
		{"db#a.b#c", "db", "a.b#c"},
	} {
		name, ref, _ := SplitRef(tc.in)
		if name != tc.name || ref != tc.ref {
			t.Errorf("SplitRef(%q) = %q, %q, want %q, %q", tc.in, name, ref, tc.name, tc.ref)
		}
	}
}

func TestRequestToken(t *testing.T) {
	t.Parallel()
	a, b := RequestToken("task-1"), RequestToken("task-1")
	if a != b {
		t.Errorf("RequestToken is not deterministic: %q != %q", a, b)
	}
	if len(a) < 32 || len(a) > 64 {
		t.Errorf("len(RequestToken) = %d, want 32-64", len(a))
	}
	if RequestToken("task-2") == a {
		t.Error("different task ids gave the same token")
	}
}

func TestDeletePlan(t *testing.T) {
	t.Parallel()
	yes, no := true, false
	for _, tc := range []struct {
		name      string
		op        *delegatev1.DeleteSecretOp
		conn      *delegatev1.ConnectorSettings
		wantForce bool
		wantDays  int32
		wantErr   string
	}{
		{"defaults", &delegatev1.DeleteSecretOp{}, &delegatev1.ConnectorSettings{}, false, 30, ""},
		{"connector window", &delegatev1.DeleteSecretOp{}, &delegatev1.ConnectorSettings{RecoveryWindowDays: 7}, false, 7, ""},
		{"connector force", &delegatev1.DeleteSecretOp{}, &delegatev1.ConnectorSettings{ForceDeleteWithoutRecovery: true}, true, 0, ""},
		{"op window overrides connector force", &delegatev1.DeleteSecretOp{RecoveryWindowDays: 10}, &delegatev1.ConnectorSettings{ForceDeleteWithoutRecovery: true}, false, 10, ""},
		{"op force", &delegatev1.DeleteSecretOp{ForceDeleteWithoutRecovery: &yes}, &delegatev1.ConnectorSettings{RecoveryWindowDays: 7}, true, 0, ""},
		{"op no force", &delegatev1.DeleteSecretOp{ForceDeleteWithoutRecovery: &no}, &delegatev1.ConnectorSettings{ForceDeleteWithoutRecovery: true, RecoveryWindowDays: 8}, false, 8, ""},
		{"op both", &delegatev1.DeleteSecretOp{ForceDeleteWithoutRecovery: &yes, RecoveryWindowDays: 7}, &delegatev1.ConnectorSettings{}, false, 0,
			"recovery_window_days: must not be set together with force_delete_without_recovery"},
		{"connector both", &delegatev1.DeleteSecretOp{}, &delegatev1.ConnectorSettings{ForceDeleteWithoutRecovery: true, RecoveryWindowDays: 7}, false, 0,
			"connector.recovery_window_days: must not be set together with connector.force_delete_without_recovery"},
		{"window low", &delegatev1.DeleteSecretOp{RecoveryWindowDays: 6}, &delegatev1.ConnectorSettings{}, false, 0, "recovery_window_days: must be 7-30 days"},
		{"window high", &delegatev1.DeleteSecretOp{RecoveryWindowDays: 31}, &delegatev1.ConnectorSettings{}, false, 0, "recovery_window_days: must be 7-30 days"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			force, days, err := deletePlan(tc.op, tc.conn)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr || err.Code != delegatev1.Code_INVALID_ARGUMENT {
					t.Fatalf("deletePlan() error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || force != tc.wantForce || days != tc.wantDays {
				t.Fatalf("deletePlan() = %v, %d, %v, want %v, %d", force, days, err, tc.wantForce, tc.wantDays)
			}
		})
	}
}

// apiErr builds the error the SDK returns for an AWS error code.
func apiErr(op, code, msg string, status int) error {
	var err error = &smithy.GenericAPIError{Code: code, Message: msg}
	err = &awshttp.ResponseError{ResponseError: &smithyhttp.ResponseError{
		Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}}, Err: err}}
	return &smithy.OperationError{ServiceID: "Secrets Manager", OperationName: op, Err: err}
}

func TestTranslateTable(t *testing.T) {
	t.Parallel()
	const planted = "PLANTED-value-xyz-123"
	c := call{op: "get", name: "db", secrets: []string{planted}}
	deadline, cancel := context.WithTimeout(context.Background(), 0)
	defer cancel()
	for _, tc := range []struct {
		name          string
		ctx           context.Context
		err           error
		wantCode      delegatev1.Code
		wantRetryable bool
		wantIn        string
	}{
		{"not found", nil, apiErr("GetSecretValue", "ResourceNotFoundException", "Secrets Manager can't find the specified secret.", 400), delegatev1.Code_NOT_FOUND, false, `secret "db" not found`},
		{"exists", nil, apiErr("CreateSecret", "ResourceExistsException", "exists", 400), delegatev1.Code_ALREADY_EXISTS, false, "already exists"},
		{"marked", nil, apiErr("GetSecretValue", "InvalidRequestException", "You can't perform this operation on the secret because it was marked for deletion.", 400),
			delegatev1.Code_SCHEDULED_FOR_DELETION, false, "restore it with `smd secret restore db` or wait until the deletion date"},
		{"scheduled", nil, apiErr("CreateSecret", "InvalidRequestException", "a secret with this name is already scheduled for deletion.", 400),
			delegatev1.Code_SCHEDULED_FOR_DELETION, false, "smd secret restore db"},
		{"invalid request", nil, apiErr("UpdateSecret", "InvalidRequestException", "other", 400), delegatev1.Code_INVALID_ARGUMENT, false, "InvalidRequestException: other"},
		{"invalid parameter", nil, apiErr("DeleteSecret", "InvalidParameterException", "bad "+planted, 400), delegatev1.Code_INVALID_ARGUMENT, false, "InvalidParameterException"},
		{"validation", nil, apiErr("CreateSecret", "ValidationException", "v", 400), delegatev1.Code_INVALID_ARGUMENT, false, "ValidationException"},
		{"access denied", nil, apiErr("GetSecretValue", "AccessDeniedException", "no", 400), delegatev1.Code_ACCESS_DENIED, false, "secretsmanager:GetSecretValue"},
		{"decryption", nil, apiErr("GetSecretValue", "DecryptionFailure", "kms", 400), delegatev1.Code_ACCESS_DENIED, false, "kms:Decrypt"},
		{"throttled", nil, &retry.MaxAttemptsError{Attempt: 3, Err: apiErr("GetSecretValue", "ThrottlingException", "slow", 400)}, delegatev1.Code_THROTTLED, true, "after 3 attempts"},
		{"unrecognized", nil, apiErr("GetSecretValue", "UnrecognizedClientException", "The security token included in the request is invalid.", 400), delegatev1.Code_CREDENTIALS, false, "credentials"},
		{"signature", nil, apiErr("GetSecretValue", "InvalidSignatureException", "Signature=abcdef0123", 400), delegatev1.Code_CREDENTIALS, false, "InvalidSignatureException"},
		{"expired", nil, apiErr("GetSecretValue", "ExpiredTokenException", "expired", 400), delegatev1.Code_CREDENTIALS, false, "ExpiredTokenException"},
		{"internal service", nil, apiErr("GetSecretValue", "InternalServiceError", "oops", 500), delegatev1.Code_UNAVAILABLE, true, "unavailable"},
		{"unmodeled 503", nil, apiErr("GetSecretValue", "Weird", "x", 503), delegatev1.Code_UNAVAILABLE, true, "unavailable"},
		{"unmodeled 429", nil, apiErr("GetSecretValue", "Weird", "x", 429), delegatev1.Code_THROTTLED, true, "throttled"},
		{"network", nil, &smithy.OperationError{ServiceID: "Secrets Manager", OperationName: "GetSecretValue",
			Err: &smithyhttp.RequestSendError{Err: &net.OpError{Op: "dial", Err: errors.New("connection refused")}}}, delegatev1.Code_UNAVAILABLE, true, "could not be reached"},
		{"deadline", nil, &smithy.OperationError{ServiceID: "Secrets Manager", OperationName: "GetSecretValue", Err: context.DeadlineExceeded}, delegatev1.Code_TIMEOUT, false, "deadline"},
		{"ctx deadline", deadline, errors.New("something"), delegatev1.Code_TIMEOUT, false, "deadline"},
		{"cancelled", nil, fmt.Errorf("x: %w", context.Canceled), delegatev1.Code_CANCELLED, false, "cancelled"},
		{"credential provider", nil, &smithy.OperationError{ServiceID: "Secrets Manager", OperationName: "GetSecretValue",
			Err: &awsauth.CredentialError{CredentialType: "ASSUME_ROLE", Err: &smithy.OperationError{ServiceID: "STS", OperationName: "AssumeRole",
				Err: &smithy.GenericAPIError{Code: "AccessDenied", Message: "not authorized to perform sts:AssumeRole"}}}},
			delegatev1.Code_CREDENTIALS, false, "could not obtain ASSUME_ROLE credentials"},
		{"field", nil, &awsauth.FieldError{Field: "connector.access_key_id", Reason: "env var AWS_KEY_X is not set", Kind: awsauth.ErrCredentials},
			delegatev1.Code_CREDENTIALS, false, "connector.access_key_id: env var AWS_KEY_X is not set"},
		{"invalid field", nil, &awsauth.FieldError{Field: "connector.region", Reason: "is not set", Kind: awsauth.ErrInvalidSettings},
			delegatev1.Code_INVALID_ARGUMENT, false, "connector.region: is not set"},
		{"unknown code", nil, apiErr("GetSecretValue", "SomethingNew", "secret detail "+planted, 400), delegatev1.Code_INTERNAL, false, "secretsmanager:GetSecretValue failed with AWS error code SomethingNew (HTTP 400)"},
		{"unknown code quoting a value", nil, apiErr("GetSecretValue", planted, "x", 400), delegatev1.Code_INTERNAL, false, "AWS error code (code withheld: it quoted task material)"},
		{"unknown code not a name", nil, apiErr("GetSecretValue", "bad code <x>", "x", 400), delegatev1.Code_INTERNAL, false, "(code withheld"},
		{"unknown operation", nil, apiErr("ListSecrets", "UnknownOperationException", "x", 400), delegatev1.Code_UNSUPPORTED, false, "does not support secretsmanager:ListSecrets: it answered UnknownOperationException"},
		{"invalid action", nil, apiErr("GetSecretValue", "InvalidAction", "x", 400), delegatev1.Code_UNSUPPORTED, false, "InvalidAction"},
		{"not implemented", nil, apiErr("GetSecretValue", "NotImplemented", "x", 501), delegatev1.Code_UNSUPPORTED, false, "NotImplemented (HTTP 501)"},
		{"501 with a 5xx code", nil, apiErr("GetSecretValue", "InternalFailure", "not yet implemented", 501), delegatev1.Code_UNSUPPORTED, false, "InternalFailure (HTTP 501)"},
		{"501 quoting a value as code", nil, apiErr("GetSecretValue", planted, planted, 501), delegatev1.Code_UNSUPPORTED, false, "code withheld"},
		{"unmodeled 503 quoting a value as code", nil, apiErr("GetSecretValue", planted, "x", 503), delegatev1.Code_UNAVAILABLE, true, "code withheld"},
		{"plain", nil, errors.New("boom " + planted), delegatev1.Code_INTERNAL, false, "internal error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := tc.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			e, detail := translate(ctx, c, tc.err)
			if e.Code != tc.wantCode || e.Retryable != tc.wantRetryable {
				t.Errorf("translate(%v) = %v retryable=%v, want %v retryable=%v", tc.err, e.Code, e.Retryable, tc.wantCode, tc.wantRetryable)
			}
			if !strings.Contains(e.Error(), tc.wantIn) {
				t.Errorf("translate(%v) message = %q, want it to contain %q", tc.err, e.Error(), tc.wantIn)
			}
			if !errors.Is(e, codeSentinels[tc.wantCode]) {
				t.Errorf("errors.Is(%v, sentinel of %v) = false", e, tc.wantCode)
			}
			for _, s := range []string{e.Error(), detail} {
				if strings.Contains(s, planted) || strings.Contains(s, "abcdef0123") {
					t.Errorf("translate leaked a secret: %q", s)
				}
			}
		})
	}
}

func TestSanitize(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, leak string }{
		{"Authorization: AWS4-HMAC-SHA256 Credential=AKIAABCDEFGHIJKLMNOP/20240101/us-east-1/secretsmanager/aws4_request, SignedHeaders=host, Signature=0123456789abcdef", "0123456789abcdef"},
		{"key AKIAABCDEFGHIJKLMNOP used", "AKIAABCDEFGHIJKLMNOP"},
		{"token eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl here", "eyJzdWIiOiJ4In0"},
		{"X-Amz-Security-Token=FwoGZXIvYXdzEMU//abc&x=1", "FwoGZXIvYXdzEMU"},
		{`{"SecretAccessKey":"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}`, "wJalrXUtnFEMI"},
		{"opaque wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY run", "wJalrXUtnFEMI"},
	} {
		if got := sanitize(tc.in, ""); strings.Contains(got, tc.leak) {
			t.Errorf("sanitize(%q) = %q, still holds %q", tc.in, got, tc.leak)
		}
	}
	if got := sanitize("secret devops/team/database-password-for-production not found", ""); !strings.Contains(got, "devops/team/database-password-for-production") {
		t.Errorf("sanitize removed a plain secret name: %q", got)
	}
	if got := sanitize("value abc here", "withheld", "abc"); got != "withheld" {
		t.Errorf("sanitize with a short planted secret = %q, want the fallback", got)
	}
	if got := sanitize("InvalidParameterException", "withheld", "v"); got != "InvalidParameterException" {
		t.Errorf("sanitize with a short secret inside a word = %q, want the text unchanged", got)
	}
	if got := sanitize("value PLANTED-long here", "withheld", "PLANTED-long"); got != "value [REDACTED] here" {
		t.Errorf("sanitize = %q", got)
	}
}
