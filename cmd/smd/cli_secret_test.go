package main

// Process-level tests of the secret commands of issue 6: generated values,
// versions, tags, secrets smdelegate does not manage, binary values and
// KMS keys, run against the shared smd dev as an operator would.

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/smdelegate/smdelegate/internal/awsemu"
	"github.com/smdelegate/smdelegate/internal/ids"
)

// devAWS returns a Secrets Manager client on smd dev's emulator that does
// not go through smdelegate (the address is in smd dev's banner).
func devAWS(t *testing.T) *secretsmanager.Client {
	t.Helper()
	needDev(t)
	re := regexp.MustCompile(`(?m)^\s+aws\s+(http://\S+)`)
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(devOut)
		if m := re.FindSubmatch(b); m != nil {
			return secretsmanager.NewFromConfig(aws.Config{
				Region:      "us-east-1",
				Credentials: credentials.NewStaticCredentialsProvider(awsemu.DefaultAccessKeyID, awsemu.DefaultSecretAccessKey, ""),
			}, func(o *secretsmanager.Options) { o.BaseEndpoint = aws.String(string(m[1])) })
		}
		if time.Now().After(deadline) {
			t.Fatalf("no aws line in the smd dev banner:\n%s", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cleanSecret force-deletes a secret of the dev connector before and after
// the test, whoever manages it.
func cleanSecret(t *testing.T, name string) {
	t.Helper()
	run(t, "", "secret", "delete", name, "--without-recovery", "--force", "--wait")
	t.Cleanup(func() { run(t, "", "secret", "delete", name, "--without-recovery", "--force", "--wait") })
}

func TestSecretGenerate(t *testing.T) {
	t.Parallel()
	const shown, hidden = "cli-gen-shown", "cli-gen-hidden"
	cleanSecret(t, shown)
	cleanSecret(t, hidden)

	out := mustRun(t, "", "secret", "create", shown, "--generate", "--length", "40", "--exclude-punctuation", "--exclude-characters", "lI1O0", "--show")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "created "+shown+" (version ") {
		t.Fatalf("smd secret create --generate --show printed:\n%s\nwant the change line and the value", out)
	}
	value := lines[1]
	if !regexp.MustCompile(`^[A-Za-z0-9]{40}$`).MatchString(value) || strings.ContainsAny(value, "lI1O0") {
		t.Errorf("generated value %q: want 40 letters and digits without lI1O0", value)
	}
	if got := mustRun(t, "", "secret", "get", shown); got != value+"\n" {
		t.Errorf("smd secret get = %q, want the value --show printed", got)
	}

	// Without --show the value is not printed, and --wait is needed to see
	// the result at all.
	out = mustRun(t, "", "secret", "create", hidden, "--generate", "--wait")
	if !strings.Contains(out, "the generated value was not shown (smd secret get "+hidden+" prints it)") {
		t.Errorf("smd secret create --generate --wait printed:\n%s", out)
	}
	hiddenValue := strings.TrimSuffix(mustRun(t, "", "secret", "get", hidden), "\n")
	if len(hiddenValue) != 32 || strings.Contains(out, hiddenValue) {
		t.Errorf("default generated value has %d characters (want 32), or create printed it", len(hiddenValue))
	}

	// -o json with --show carries it; the task read back does not.
	raw := mustRun(t, "", "secret", "create", shown+"-json", "--generate", "--show", "-o", "json")
	t.Cleanup(func() { run(t, "", "secret", "delete", shown+"-json", "--without-recovery", "--wait") })
	var info struct {
		ID      string `json:"id"`
		Outcome struct {
			Secret struct {
				Value struct {
					String string `json:"string_value"`
				} `json:"value"`
			} `json:"secret"`
		} `json:"outcome"`
	}
	if err := json.Unmarshal([]byte(raw), &info); err != nil || len(info.Outcome.Secret.Value.String) != 32 {
		t.Fatalf("create --show -o json: %v\n%s", err, raw)
	}
	jsonValue := info.Outcome.Secret.Value.String
	for _, args := range [][]string{{"task", "get", info.ID, "-o", "json"}, {"task", "list", "-o", "json"}, {"secret", "describe", shown}} {
		if out := mustRun(t, "", args...); strings.Contains(out, jsonValue) || strings.Contains(out, value) || strings.Contains(out, hiddenValue) {
			t.Errorf("smd %s holds a generated value:\n%s", strings.Join(args, " "), out)
		}
	}
	log := readDevLog(t)
	if !strings.Contains(log, info.ID) {
		t.Fatal("the smd dev log does not name the create task: is it the right log?")
	}
	for _, v := range []string{value, hiddenValue, jsonValue} {
		if strings.Contains(log, v) {
			t.Error("the smd dev log holds a generated value")
		}
	}
}

func TestSecretVersions(t *testing.T) {
	t.Parallel()
	const name = "cli-versions"
	cleanSecret(t, name)
	mustRun(t, "v1", "secret", "create", name, "--wait")
	mustRun(t, "v2", "secret", "update", name, "--wait")
	mustRun(t, "v3", "secret", "update", name, "--wait")

	out := mustRun(t, "", "secret", "versions", name)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 3 || !regexp.MustCompile(`^VERSION\s+STAGES\s+CREATED\s+LAST ACCESSED$`).MatchString(lines[0]) {
		t.Fatalf("smd secret versions printed:\n%s\nwant a header and two versions", out)
	}
	stages := map[string]bool{}
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		stages[f[1]] = true
		if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(f[0]) {
			t.Errorf("version id %q: want the 64-hex ClientRequestToken of its task", f[0])
		}
	}
	if !stages["AWSCURRENT"] || !stages["AWSPREVIOUS"] {
		t.Errorf("versions have stages %v, want AWSCURRENT and AWSPREVIOUS", stages)
	}

	// Paged, deprecated included: three versions one at a time.
	var ids []string
	next := ""
	for page := 0; page < 5; page++ {
		args := []string{"secret", "versions", name, "--include-deprecated", "--max-results", "1"}
		if next != "" {
			args = append(args, "--next-token", next)
		}
		out := mustRun(t, "", args...)
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		next = ""
		if last := lines[len(lines)-1]; strings.HasPrefix(last, "more: --next-token ") {
			next = strings.TrimPrefix(last, "more: --next-token ")
			lines = lines[:len(lines)-1]
		}
		if len(lines) != 2 {
			t.Fatalf("page %d:\n%s\nwant one version", page, out)
		}
		ids = append(ids, strings.Fields(lines[1])[0])
		if next == "" {
			break
		}
	}
	if len(ids) != 3 || ids[0] == ids[1] || ids[1] == ids[2] {
		t.Errorf("paged versions = %v, want three distinct", ids)
	}
	if r := run(t, "", "secret", "versions", "cli-versions-missing"); r.code != exitNotFound || !strings.Contains(r.stderr, "NOT_FOUND") {
		t.Errorf("versions of a missing secret: %v", r)
	}
}

func TestSecretTagsAndUnmanaged(t *testing.T) {
	t.Parallel()
	const name = "cli-unmanaged"
	sm := devAWS(t)
	ctx := t.Context()
	cleanSecret(t, name)
	// Made directly in AWS, not through smdelegate.
	if _, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String("dev/" + name), SecretString: aws.String("their-value")}); err != nil {
		t.Fatalf("CreateSecret directly: %v", err)
	}
	atAWS := func() (string, map[string]string, bool) {
		t.Helper()
		d, err := sm.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String("dev/" + name)})
		if err != nil {
			t.Fatalf("DescribeSecret: %v", err)
		}
		v, err := sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String("dev/" + name)})
		if err != nil && d.DeletedDate == nil {
			t.Fatalf("GetSecretValue: %v", err)
		}
		tags := map[string]string{}
		for _, tg := range d.Tags {
			tags[aws.ToString(tg.Key)] = aws.ToString(tg.Value)
		}
		return aws.ToString(v.SecretString), tags, d.DeletedDate != nil
	}

	for _, tc := range []struct {
		stdin string
		args  []string
	}{
		{"mine", []string{"secret", "update", name, "--wait"}},
		{"mine", []string{"secret", "upsert", name, "--wait"}},
		{"", []string{"secret", "delete", name, "--wait"}},
		{"", []string{"secret", "delete", name, "--without-recovery", "--wait"}},
		{"", []string{"secret", "tag", name, "--add", "team=a", "--wait"}},
		{"", []string{"secret", "tag", name, "--remove", "team", "--wait"}},
	} {
		r := run(t, tc.stdin, tc.args...)
		if r.code != exitInvalid {
			t.Errorf("smd %s: exit %d, want %d\n%v", strings.Join(tc.args, " "), r.code, exitInvalid, r)
		}
		for _, want := range []string{"INVALID_ARGUMENT", `secret "` + name + `" is not managed by smdelegate: it lacks the tag managed-by=smdelegate`, "--adopt", "--force"} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("smd %s: stderr %q lacks %q", strings.Join(tc.args, " "), r.stderr, want)
			}
		}
	}
	if v, tags, deleted := atAWS(); v != "their-value" || len(tags) != 0 || deleted {
		t.Fatalf("after the refusals AWS holds value %q, tags %v, deleted %v; want it unchanged", v, tags, deleted)
	}

	// --force changes it and leaves it untagged; --adopt tags it.
	mustRun(t, "forced", "secret", "update", name, "--force", "--wait")
	if v, tags, _ := atAWS(); v != "forced" || len(tags) != 0 {
		t.Errorf("after --force: value %q tags %v; want forced, no tags", v, tags)
	}
	out := mustRun(t, "", "secret", "tag", name, "--add", "team=a", "--add", "env=dev", "--adopt", "--wait")
	if out != "tagged "+name+"\nadopted "+name+": it now carries the connector's managed-by tag\n" {
		t.Errorf("smd secret tag --adopt printed %q", out)
	}
	if _, tags, _ := atAWS(); tags["managed-by"] != "smdelegate" || tags["team"] != "a" || tags["env"] != "dev" {
		t.Errorf("tags after tag --adopt = %v", tags)
	}
	// Managed now: plain commands work.
	if out := mustRun(t, "", "secret", "tag", name, "--remove", "env", "--wait"); out != "tagged "+name+"\n" {
		t.Errorf("smd secret tag --remove printed %q", out)
	}
	mustRun(t, "mine", "secret", "update", name, "--wait")
	desc := mustRun(t, "", "secret", "describe", name)
	for _, want := range []string{`(?m)^tag managed-by\s+smdelegate$`, `(?m)^tag team\s+a$`} {
		if !regexp.MustCompile(want).MatchString(desc) {
			t.Errorf("smd secret describe does not match %s:\n%s", want, desc)
		}
	}
	if v, tags, _ := atAWS(); v != "mine" || tags["env"] != "" {
		t.Errorf("AWS holds value %q tags %v", v, tags)
	}
	// Releasing it takes --force.
	if r := run(t, "", "secret", "tag", name, "--remove", "managed-by", "--wait"); r.code != exitInvalid || !strings.Contains(r.stderr, "releases the secret from smdelegate") {
		t.Errorf("removing the managed-by tag without --force: %v", r)
	}
}

func TestSecretBinaryAndKMS(t *testing.T) {
	t.Parallel()
	const name, kmsName = "cli-binary", "cli-kms"
	sm := devAWS(t)
	cleanSecret(t, name)
	cleanSecret(t, kmsName)
	value := []byte{0, 1, 2, 0xfe, 0xff, '\n', 'x'}
	enc := base64.StdEncoding.EncodeToString(value)

	mustRun(t, enc+"\n", "secret", "create", name, "--binary", "--wait")
	if got := mustRun(t, "", "secret", "get", name); got != enc+"\n" {
		t.Errorf("smd secret get of a binary secret = %q, want %q", got, enc+"\n")
	}
	v, err := sm.GetSecretValue(t.Context(), &secretsmanager.GetSecretValueInput{SecretId: aws.String("dev/" + name)})
	if err != nil || !bytes.Equal(v.SecretBinary, value) || v.SecretString != nil {
		t.Errorf("AWS holds %v / %v (%v), want the binary value", v.SecretBinary, v.SecretString, err)
	}
	enc2 := base64.StdEncoding.EncodeToString([]byte("\x00second"))
	mustRun(t, enc2, "secret", "update", name, "--binary", "--wait")
	if got := mustRun(t, "", "secret", "get", name); got != enc2+"\n" {
		t.Errorf("after update: get = %q, want %q", got, enc2+"\n")
	}

	mustRun(t, "v", "secret", "create", kmsName, "--kms-key-id", "alias/cli-one", "--wait")
	if desc := mustRun(t, "", "secret", "describe", kmsName); !regexp.MustCompile(`(?m)^kms key\s+alias/cli-one$`).MatchString(desc) {
		t.Errorf("describe after create --kms-key-id:\n%s", desc)
	}
	mustRun(t, "", "secret", "update", kmsName, "--kms-key-id", "alias/cli-two", "--wait")
	d, err := sm.DescribeSecret(t.Context(), &secretsmanager.DescribeSecretInput{SecretId: aws.String("dev/" + kmsName)})
	if err != nil || aws.ToString(d.KmsKeyId) != "alias/cli-two" {
		t.Errorf("KMS key at AWS after update = %q (%v), want alias/cli-two", aws.ToString(d.KmsKeyId), err)
	}
}

// TestSecretRequestID: a change sent again with the same --request-id
// gets the first one's task and makes no second version; another change
// under it is refused, exit 2, naming request_id; without the flag every
// invocation gets a request id of its own.
func TestSecretRequestID(t *testing.T) {
	t.Parallel()
	const name = "cli-request-id"
	sm := devAWS(t)
	cleanSecret(t, name)
	taskOf := func(out string) (id, requestID string) {
		t.Helper()
		var info struct {
			ID        string `json:"id"`
			RequestID string `json:"request_id"`
		}
		if err := json.Unmarshal([]byte(out), &info); err != nil {
			t.Fatalf("not a task: %v\n%s", err, out)
		}
		return info.ID, info.RequestID
	}
	rid := "cli-test." + ids.New()
	create := []string{"secret", "create", name, "--request-id", rid, "--wait", "-o", "json"}
	first, firstRID := taskOf(mustRun(t, "v1", create...))
	again, _ := taskOf(mustRun(t, "v1", create...))
	if first == "" || again != first || firstRID != rid {
		t.Errorf("create twice with --request-id %s = tasks %s and %s (request_id %q), want one task with that request_id", rid, first, again, firstRID)
	}
	if r := run(t, "v2", create...); r.code != exitInvalid || !strings.Contains(r.stderr, "request_id") || !strings.Contains(r.stderr, first) {
		t.Errorf("create with another value under the same --request-id: %v\nwant exit %d naming request_id and task %s", r, exitInvalid, first)
	}
	v, err := sm.ListSecretVersionIds(t.Context(), &secretsmanager.ListSecretVersionIdsInput{SecretId: aws.String("dev/" + name)})
	if err != nil || len(v.Versions) != 1 {
		t.Errorf("versions at AWS = %+v, %v; want one", v, err)
	}

	// Without the flag: a new id per invocation.
	_, a := taskOf(mustRun(t, "v3", "secret", "update", name, "--wait", "-o", "json"))
	_, b := taskOf(mustRun(t, "v4", "secret", "update", name, "--wait", "-o", "json"))
	if !strings.HasPrefix(a, "smd-") || !strings.HasPrefix(b, "smd-") || a == b {
		t.Errorf("request ids of two updates = %q, %q; want two generated ids (smd-...)", a, b)
	}
	if r := run(t, "", "delegate", "ping", "--request-id", "x"); r.code != exitInvalid || !strings.Contains(r.stderr, "--request-id: only with --async") {
		t.Errorf("sync ping with --request-id: %v, want exit %d", r, exitInvalid)
	}
}
