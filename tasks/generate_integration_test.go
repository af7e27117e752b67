package tasks_test

import (
	"context"
	"strings"
	"testing"
	"unicode"

	"google.golang.org/protobuf/proto"

	"github.com/smdelegate/smdelegate/tasks"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// currentValue is the AWSCURRENT string value of the secret full.
func (e *env) currentValue(t testing.TB, full string) string {
	t.Helper()
	st, ok := e.emu.Secret(full)
	if !ok {
		t.Fatalf("secret %s missing", full)
	}
	for _, v := range st.Versions {
		for _, s := range v.Stages {
			if s == "AWSCURRENT" {
				return v.SecretString
			}
		}
	}
	t.Fatalf("secret %s has no AWSCURRENT version", full)
	return ""
}

// TestGeneratedPassword creates secrets with a value GetRandomPassword
// made on the delegate: the parameters reach AWS, the stored value obeys
// them, and the value is in the result only when return_value asks.
func TestGeneratedPassword(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	conn := e.connector(t, delegatev1.CredentialType_ACCESS_KEY)
	const punct = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"

	// Defaults: AWS's 32 characters of every type; the value is not returned.
	res := mustOK(t, "generate", e.run(t, "gen-1", secretTask(conn, &delegatev1.CreateSecretOp{Name: "g1", Generate: &delegatev1.GeneratePassword{}})))
	if res.GetValue() != nil {
		t.Error("the generated value is in the result without return_value")
	}
	if !res.GetCreated() || res.GetVersionId() != tasks.RequestToken("gen-1") {
		t.Errorf("result = %v", res)
	}
	pw := e.currentValue(t, prefix+"/g1")
	if len(pw) != 32 || !strings.ContainsFunc(pw, unicode.IsUpper) || !strings.ContainsFunc(pw, unicode.IsLower) ||
		!strings.ContainsFunc(pw, unicode.IsDigit) || !strings.ContainsAny(pw, punct) {
		t.Errorf("default generated value has length %d or lacks a type", len(pw))
	}
	if r := e.lastRequest(t, "GetRandomPassword"); len(r.Params) != 0 {
		t.Errorf("GetRandomPassword params = %v, want none (AWS's defaults)", r.Params)
	}
	if st, _ := e.emu.Secret(prefix + "/g1"); st.Tags["managed-by"] != "smdelegate" {
		t.Errorf("generated secret tags = %v, want managed-by=smdelegate", st.Tags)
	}

	// Options, and the value returned.
	res = mustOK(t, "generate options", e.run(t, "gen-2", secretTask(conn, &delegatev1.CreateSecretOp{Name: "g2", ReturnValue: true,
		Generate: &delegatev1.GeneratePassword{Length: 64, ExcludeCharacters: "abcXYZ012", ExcludePunctuation: true, RequireEachIncludedType: proto.Bool(false)}})))
	pw = e.currentValue(t, prefix+"/g2")
	if got := res.GetValue().GetStringValue(); got != pw {
		t.Error("the returned value is not the stored one")
	}
	if len(pw) != 64 || strings.ContainsAny(pw, "abcXYZ012"+punct) {
		t.Errorf("generated value breaks the options: length %d", len(pw))
	}
	r := e.lastRequest(t, "GetRandomPassword")
	if r.Params["PasswordLength"] != float64(64) || param(r, "ExcludeCharacters") != "abcXYZ012" ||
		r.Params["ExcludePunctuation"] != true || r.Params["RequireEachIncludedType"] != false || r.Params["ExcludeNumbers"] != nil {
		t.Errorf("GetRandomPassword params = %v", r.Params)
	}

	// A re-run after a lost lease generates another password, but AWS keeps
	// the first: no second version, and the value returned is the kept one.
	rerun := secretTask(conn, &delegatev1.CreateSecretOp{Name: "g3", ReturnValue: true, Generate: &delegatev1.GeneratePassword{}})
	first := mustOK(t, "generate run 1", e.runCtx(tasks.WithAttempt(context.Background(), 1), t, "gen-3", rerun))
	second := mustOK(t, "generate run 2", e.runCtx(tasks.WithAttempt(context.Background(), 2), t, "gen-3", rerun))
	kept := e.currentValue(t, prefix+"/g3")
	if first.GetValue().GetStringValue() != kept || second.GetValue().GetStringValue() != kept {
		t.Error("a re-run returned a value AWS did not keep")
	}
	if st, _ := e.emu.Secret(prefix + "/g3"); len(st.Versions) != 1 {
		t.Errorf("versions after a re-run = %d, want 1", len(st.Versions))
	}
	if n := e.emu.Calls("secretsmanager.GetRandomPassword"); n != 4 {
		t.Errorf("GetRandomPassword calls = %d, want 4", n)
	}

	// Refused before AWS is called.
	before := e.emu.Calls("secretsmanager.GetRandomPassword")
	for _, tc := range []struct {
		name string
		op   *delegatev1.CreateSecretOp
		msg  string
	}{
		{"value and generate", &delegatev1.CreateSecretOp{Name: "x", Value: str("v"), Generate: &delegatev1.GeneratePassword{}}, "value: must be empty when the value is generated"},
		{"return a given value", &delegatev1.CreateSecretOp{Name: "x", Value: str("v"), ReturnValue: true}, "return_value: only with generate"},
		{"too long", &delegatev1.CreateSecretOp{Name: "x", Generate: &delegatev1.GeneratePassword{Length: 4097}}, "generate.length: must be 1-4096"},
		{"negative", &delegatev1.CreateSecretOp{Name: "x", Generate: &delegatev1.GeneratePassword{Length: -1}}, "generate.length"},
		{"exclusions too long", &delegatev1.CreateSecretOp{Name: "x", Generate: &delegatev1.GeneratePassword{ExcludeCharacters: strings.Repeat("a", 4097)}}, "generate.exclude_characters"},
		{"bad name", &delegatev1.CreateSecretOp{Name: "bad name", Generate: &delegatev1.GeneratePassword{}}, "name: must be"},
	} {
		wantCode(t, tc.name, e.run(t, "gen-bad", secretTask(conn, tc.op)), delegatev1.Code_INVALID_ARGUMENT, tc.msg)
	}
	if n := e.emu.Calls("secretsmanager.GetRandomPassword"); n != before {
		t.Errorf("invalid generate ops called GetRandomPassword %d times", n-before)
	}
	// AWS's own refusal (every type excluded) is INVALID_ARGUMENT, no secret.
	wantCode(t, "every type excluded", e.run(t, "gen-aws-bad", secretTask(conn, &delegatev1.CreateSecretOp{Name: "none",
		Generate: &delegatev1.GeneratePassword{ExcludeNumbers: true, ExcludePunctuation: true, ExcludeUppercase: true, ExcludeLowercase: true}})),
		delegatev1.Code_INVALID_ARGUMENT, "InvalidParameterException")
	if _, ok := e.emu.Secret(prefix + "/none"); ok {
		t.Error("a failed generation created the secret")
	}
	// Without secretsmanager:GetRandomPassword: ACCESS_DENIED naming it.
	e.emu.FailNext("secretsmanager.GetRandomPassword", 1, "AccessDeniedException")
	wantCode(t, "denied", e.run(t, "gen-denied", secretTask(conn, &delegatev1.CreateSecretOp{Name: "denied", Generate: &delegatev1.GeneratePassword{}})),
		delegatev1.Code_ACCESS_DENIED, "secretsmanager:GetRandomPassword")
}
