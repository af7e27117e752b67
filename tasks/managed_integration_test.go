package tasks_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	"github.com/smdelegate/smdelegate/internal/awsemu"
	"github.com/smdelegate/smdelegate/tasks"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// directClient is a Secrets Manager client on the emulator that does not
// go through smdelegate: what another tool, or a person, would use.
func (e *env) directClient() *secretsmanager.Client {
	return secretsmanager.NewFromConfig(aws.Config{
		Region:      region,
		Credentials: credentials.NewStaticCredentialsProvider(connKeyID, connSecret, ""),
	}, func(o *secretsmanager.Options) { o.BaseEndpoint = aws.String(e.url) })
}

// secretTask wraps an op in a task on conn.
func secretTask(conn *delegatev1.ConnectorSettings, op any) *delegatev1.SecretTask {
	st := &delegatev1.SecretTask{Connector: conn}
	switch o := op.(type) {
	case *delegatev1.CreateSecretOp:
		st.Op = &delegatev1.SecretTask_Create{Create: o}
	case *delegatev1.UpsertSecretOp:
		st.Op = &delegatev1.SecretTask_Upsert{Upsert: o}
	case *delegatev1.GetSecretOp:
		st.Op = &delegatev1.SecretTask_Get{Get: o}
	case *delegatev1.UpdateSecretOp:
		st.Op = &delegatev1.SecretTask_Update{Update: o}
	case *delegatev1.DeleteSecretOp:
		st.Op = &delegatev1.SecretTask_Delete{Delete: o}
	case *delegatev1.RestoreSecretOp:
		st.Op = &delegatev1.SecretTask_Restore{Restore: o}
	case *delegatev1.DescribeSecretOp:
		st.Op = &delegatev1.SecretTask_Describe{Describe: o}
	case *delegatev1.TagSecretOp:
		st.Op = &delegatev1.SecretTask_Tag{Tag: o}
	case *delegatev1.ListSecretVersionsOp:
		st.Op = &delegatev1.SecretTask_Versions{Versions: o}
	default:
		panic("secretTask: unknown op")
	}
	return st
}

// mutatingActions are the Secrets Manager APIs that change a secret.
var mutatingActions = []string{"CreateSecret", "UpdateSecret", "PutSecretValue", "DeleteSecret", "RestoreSecret", "TagResource", "UntagResource"}

func mutatingCalls(e *env) map[string]int {
	m := map[string]int{}
	for _, a := range mutatingActions {
		if n := e.emu.Calls("secretsmanager." + a); n > 0 {
			m[a] = n
		}
	}
	return m
}

// TestUnmanagedSecretsAreRefused creates secrets directly in the emulator,
// not through smdelegate (one untagged, one tagged managed-by=terraform,
// one scheduled for deletion), and shows that every change smdelegate
// could make to them is refused without adopt or force: INVALID_ARGUMENT
// naming the missing tag and both ways out, no mutating call reaching AWS,
// and each secret exactly as it was.
func TestUnmanagedSecretsAreRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	conn := e.connector(t, delegatev1.CredentialType_ACCESS_KEY)
	putConn := proto.Clone(conn).(*delegatev1.ConnectorSettings)
	putConn.UsePutSecretValue = true
	sm := e.directClient()
	ctx := t.Context()
	for _, in := range []*secretsmanager.CreateSecretInput{
		{Name: aws.String(prefix + "/plain"), SecretString: aws.String("theirs-1")},
		{Name: aws.String(prefix + "/terraform"), SecretString: aws.String("theirs-2"),
			Tags: []types.Tag{{Key: aws.String("managed-by"), Value: aws.String("terraform")}}},
		{Name: aws.String(prefix + "/gone"), SecretString: aws.String("theirs-3")},
	} {
		if _, err := sm.CreateSecret(ctx, in); err != nil {
			t.Fatalf("CreateSecret(%s) directly: %v", aws.ToString(in.Name), err)
		}
	}
	if _, err := sm.DeleteSecret(ctx, &secretsmanager.DeleteSecretInput{SecretId: aws.String(prefix + "/gone"), RecoveryWindowInDays: aws.Int64(7)}); err != nil {
		t.Fatalf("DeleteSecret directly: %v", err)
	}
	before := map[string]awsemu.SecretState{}
	for _, n := range []string{"plain", "terraform", "gone"} {
		before[n], _ = e.emu.Secret(prefix + "/" + n)
	}
	e.emu.ResetCounters()

	force := true
	for _, tc := range []struct {
		name   string
		secret string
		task   *delegatev1.SecretTask
	}{
		{"update value", "plain", secretTask(conn, &delegatev1.UpdateSecretOp{Name: "plain", Value: str("mine")})},
		{"update with PutSecretValue", "plain", secretTask(putConn, &delegatev1.UpdateSecretOp{Name: "plain", Value: str("mine")})},
		{"update description", "plain", secretTask(conn, &delegatev1.UpdateSecretOp{Name: "plain", Description: "mine"})},
		{"update kms key", "plain", secretTask(conn, &delegatev1.UpdateSecretOp{Name: "plain", KmsKeyId: "alias/mine"})},
		{"upsert", "plain", secretTask(conn, &delegatev1.UpsertSecretOp{Name: "plain", Value: str("mine")})},
		{"delete", "plain", secretTask(conn, &delegatev1.DeleteSecretOp{Name: "plain"})},
		{"delete without recovery", "plain", secretTask(conn, &delegatev1.DeleteSecretOp{Name: "plain", ForceDeleteWithoutRecovery: &force})},
		{"tag add", "plain", secretTask(conn, &delegatev1.TagSecretOp{Name: "plain", Add: map[string]string{"team": "a"}})},
		{"tag remove", "plain", secretTask(conn, &delegatev1.TagSecretOp{Name: "plain", Remove: []string{"team"}})},
		{"tag add managed-by", "plain", secretTask(conn, &delegatev1.TagSecretOp{Name: "plain", Add: managedTags})},
		{"update other owner", "terraform", secretTask(conn, &delegatev1.UpdateSecretOp{Name: "terraform", Value: str("mine")})},
		{"delete other owner", "terraform", secretTask(conn, &delegatev1.DeleteSecretOp{Name: "terraform"})},
		{"restore", "gone", secretTask(conn, &delegatev1.RestoreSecretOp{Name: "gone"})},
		{"delete scheduled without recovery", "gone", secretTask(conn, &delegatev1.DeleteSecretOp{Name: "gone", ForceDeleteWithoutRecovery: &force})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := e.run(t, "refuse-"+tc.name, tc.task)
			wantCode(t, tc.name, out, delegatev1.Code_INVALID_ARGUMENT, `secret "`+tc.secret+`" is not managed by smdelegate: it lacks the tag managed-by=smdelegate`)
			for _, part := range []string{"--adopt", "--force", "nothing was changed"} {
				if !strings.Contains(out.GetMessage(), part) {
					t.Errorf("message %q does not name %q", out.GetMessage(), part)
				}
			}
			if tc.secret == "terraform" && !strings.Contains(out.GetMessage(), `its managed-by tag is "terraform"`) {
				t.Errorf("message %q does not say whose the secret is", out.GetMessage())
			}
			if out.GetRetryable() {
				t.Error("a refusal is retryable; want not")
			}
		})
	}
	// The upsert tries CreateSecret first, which AWS refuses because the
	// secret exists; nothing else that changes a secret may be called.
	if diff := cmp.Diff(map[string]int{"CreateSecret": 1}, mutatingCalls(e)); diff != "" {
		t.Errorf("mutating calls that reached AWS (-want +got):\n%s", diff)
	}
	if n := e.emu.Calls("secretsmanager.DescribeSecret"); n != 14 {
		t.Errorf("DescribeSecret calls = %d, want one per refused change (14)", n)
	}
	for n, st := range before {
		after, ok := e.emu.Secret(prefix + "/" + n)
		if !ok {
			t.Fatalf("secret %s is gone", n)
		}
		if diff := cmp.Diff(st, after); diff != "" {
			t.Errorf("secret %s changed (-before +after):\n%s", n, diff)
		}
	}
}

// TestAdoptAndForce: adopt tags the secret and goes on, after which no
// flag is needed; force goes on and leaves the secret untagged, so the next
// change is refused again.
func TestAdoptAndForce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	conn := e.connector(t, delegatev1.CredentialType_ACCESS_KEY)
	adopt, force := delegatev1.Unmanaged_UNMANAGED_ADOPT, delegatev1.Unmanaged_UNMANAGED_FORCE
	tagOf := func(name string) (string, bool) {
		st, ok := e.emu.Secret(prefix + "/" + name)
		if !ok {
			t.Fatalf("secret %s missing", name)
		}
		v, ok := st.Tags["managed-by"]
		return v, ok
	}
	current := func(name string) string {
		st, _ := e.emu.Secret(prefix + "/" + name)
		for _, v := range st.Versions {
			for _, s := range v.Stages {
				if s == "AWSCURRENT" {
					return v.SecretString
				}
			}
		}
		return ""
	}

	// Update: force, then refused again, then adopt, then no flag needed.
	e.emu.PutSecretDirect(prefix+"/u", "theirs", nil)
	res := mustOK(t, "update force", e.run(t, "u-force", secretTask(conn, &delegatev1.UpdateSecretOp{Name: "u", Value: str("v-force"), Unmanaged: force})))
	if res.GetAdopted() || current("u") != "v-force" {
		t.Errorf("update force: adopted %v, value %q; want not adopted, v-force", res.GetAdopted(), current("u"))
	}
	if _, tagged := tagOf("u"); tagged {
		t.Error("update force tagged the secret")
	}
	wantCode(t, "update after force", e.run(t, "u-again", secretTask(conn, &delegatev1.UpdateSecretOp{Name: "u", Value: str("v-x")})),
		delegatev1.Code_INVALID_ARGUMENT, "managed-by=smdelegate")
	res = mustOK(t, "update adopt", e.run(t, "u-adopt", secretTask(conn, &delegatev1.UpdateSecretOp{Name: "u", Value: str("v-adopt"), Unmanaged: adopt})))
	if v, _ := tagOf("u"); !res.GetAdopted() || v != "smdelegate" || current("u") != "v-adopt" {
		t.Errorf("update adopt: adopted %v, tag %q, value %q; want adopted, smdelegate, v-adopt", res.GetAdopted(), v, current("u"))
	}
	res = mustOK(t, "update managed", e.run(t, "u-managed", secretTask(conn, &delegatev1.UpdateSecretOp{Name: "u", Value: str("v-3")})))
	if res.GetAdopted() || current("u") != "v-3" {
		t.Errorf("update of an adopted secret: adopted %v value %q", res.GetAdopted(), current("u"))
	}

	// Upsert of an existing unmanaged secret adopts it; a created one is tagged.
	e.emu.PutSecretDirect(prefix+"/up", "theirs", nil)
	res = mustOK(t, "upsert adopt", e.run(t, "up-adopt", secretTask(conn, &delegatev1.UpsertSecretOp{Name: "up", Value: str("v"), Unmanaged: adopt})))
	if v, _ := tagOf("up"); !res.GetAdopted() || res.GetCreated() || v != "smdelegate" {
		t.Errorf("upsert adopt: %v, tag %q", res, v)
	}
	mustOK(t, "upsert new", e.run(t, "up-new", secretTask(conn, &delegatev1.UpsertSecretOp{Name: "up-new", Value: str("v")})))
	if v, _ := tagOf("up-new"); v != "smdelegate" {
		t.Errorf("upsert-created secret tag = %q, want smdelegate", v)
	}

	// Tag with adopt: one TagResource with both tags.
	e.emu.PutSecretDirect(prefix+"/t", "theirs", map[string]string{"env": "prod"})
	res = mustOK(t, "tag adopt", e.run(t, "t-adopt", secretTask(conn, &delegatev1.TagSecretOp{Name: "t",
		Add: map[string]string{"team": "a"}, Remove: []string{"env"}, Unmanaged: adopt})))
	st, _ := e.emu.Secret(prefix + "/t")
	if diff := cmp.Diff(map[string]string{"managed-by": "smdelegate", "team": "a"}, st.Tags); diff != "" || !res.GetAdopted() || res.GetAction() != "TagResource,UntagResource" {
		t.Errorf("tag adopt: adopted %v action %q tags (-want +got):\n%s", res.GetAdopted(), res.GetAction(), diff)
	}

	// Restore with adopt: AWS cannot tag a secret scheduled for deletion,
	// so the tag comes after the restore.
	e.emu.PutSecretDirect(prefix+"/r", "theirs", nil)
	if _, err := e.directClient().DeleteSecret(t.Context(), &secretsmanager.DeleteSecretInput{SecretId: aws.String(prefix + "/r")}); err != nil {
		t.Fatal(err)
	}
	res = mustOK(t, "restore adopt", e.run(t, "r-adopt", secretTask(conn, &delegatev1.RestoreSecretOp{Name: "r", Unmanaged: adopt})))
	if st, _ := e.emu.Secret(prefix + "/r"); !res.GetAdopted() || !st.DeletedDate.IsZero() || st.Tags["managed-by"] != "smdelegate" {
		t.Errorf("restore adopt: adopted %v, deleted %v, tags %v", res.GetAdopted(), st.DeletedDate, st.Tags)
	}

	// Delete: force without tagging, adopt with.
	e.emu.PutSecretDirect(prefix+"/d1", "theirs", nil)
	e.emu.PutSecretDirect(prefix+"/d2", "theirs", nil)
	mustOK(t, "delete force", e.run(t, "d1", secretTask(conn, &delegatev1.DeleteSecretOp{Name: "d1", Unmanaged: force})))
	if st, _ := e.emu.Secret(prefix + "/d1"); st.DeletedDate.IsZero() || st.Tags["managed-by"] != "" {
		t.Errorf("delete force: deleted %v tags %v; want scheduled, untagged", st.DeletedDate, st.Tags)
	}
	res = mustOK(t, "delete adopt", e.run(t, "d2", secretTask(conn, &delegatev1.DeleteSecretOp{Name: "d2", Unmanaged: adopt})))
	if st, _ := e.emu.Secret(prefix + "/d2"); !res.GetAdopted() || st.DeletedDate.IsZero() || st.Tags["managed-by"] != "smdelegate" {
		t.Errorf("delete adopt: adopted %v deleted %v tags %v", res.GetAdopted(), st.DeletedDate, st.Tags)
	}

	// A missing secret is NOT_FOUND whatever the flag, and a forced delete
	// of one succeeds as AWS answers it.
	wantCode(t, "update missing", e.run(t, "m1", secretTask(conn, &delegatev1.UpdateSecretOp{Name: "missing", Value: str("v"), Unmanaged: adopt})),
		delegatev1.Code_NOT_FOUND, `secret "missing" not found`)
	wantCode(t, "tag missing", e.run(t, "m2", secretTask(conn, &delegatev1.TagSecretOp{Name: "missing", Add: map[string]string{"a": "b"}})),
		delegatev1.Code_NOT_FOUND, "")
	without := true
	mustOK(t, "delete missing without recovery", e.run(t, "m3", secretTask(conn, &delegatev1.DeleteSecretOp{Name: "missing", ForceDeleteWithoutRecovery: &without})))
}

// TestManagedByTagKeyPerConnector: a connector's managed_by_tag_key names
// the tag creates set and changes require.
func TestManagedByTagKeyPerConnector(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	conn := e.connector(t, delegatev1.CredentialType_ACCESS_KEY)
	conn.ManagedByTagKey = "owner"
	mustOK(t, "create", e.run(t, "k-create", secretTask(conn, &delegatev1.CreateSecretOp{Name: "k", Value: str("v"), Tags: map[string]string{"team": "a"}})))
	st, _ := e.emu.Secret(prefix + "/k")
	if diff := cmp.Diff(map[string]string{"owner": "smdelegate", "team": "a"}, st.Tags); diff != "" {
		t.Errorf("tags of a created secret (-want +got):\n%s", diff)
	}
	mustOK(t, "update", e.run(t, "k-update", secretTask(conn, &delegatev1.UpdateSecretOp{Name: "k", Value: str("v2")})))

	// The default key is not this connector's key.
	e.emu.PutSecretDirect(prefix+"/other", "v", managedTags)
	wantCode(t, "update with the default key only", e.run(t, "k-other", secretTask(conn, &delegatev1.UpdateSecretOp{Name: "other", Value: str("v2")})),
		delegatev1.Code_INVALID_ARGUMENT, "it lacks the tag owner=smdelegate")

	// A create may repeat the managed tag but not give it another value.
	mustOK(t, "create with the tag", e.run(t, "k-same", secretTask(conn, &delegatev1.CreateSecretOp{Name: "k2", Value: str("v"), Tags: map[string]string{"owner": "smdelegate"}})))
	wantCode(t, "create with another owner", e.run(t, "k-bad", secretTask(conn, &delegatev1.CreateSecretOp{Name: "k3", Value: str("v"), Tags: map[string]string{"owner": "me"}})),
		delegatev1.Code_INVALID_ARGUMENT, `tags["owner"]: is set by smdelegate to "smdelegate"`)
	if _, ok := e.emu.Secret(prefix + "/k3"); ok {
		t.Error("the refused create made the secret")
	}
}

// TestTagOp adds and removes tags through TagResource and UntagResource
// and refuses to release the managed tag without force.
func TestTagOp(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	conn := e.connector(t, delegatev1.CredentialType_ACCESS_KEY)
	mustOK(t, "create", e.run(t, "tag-create", secretTask(conn, &delegatev1.CreateSecretOp{Name: "s", Value: str("v"), Tags: map[string]string{"env": "dev"}})))
	tags := func() map[string]string {
		st, _ := e.emu.Secret(prefix + "/s")
		return st.Tags
	}

	res := mustOK(t, "tag", e.run(t, "tag-1", secretTask(conn, &delegatev1.TagSecretOp{Name: "s", Add: map[string]string{"team": "a", "env": "prod"}})))
	if res.GetAction() != "TagResource" || res.GetAdopted() || res.GetName() != "s" || !strings.Contains(res.GetArn(), ":secret:"+prefix+"/s-") {
		t.Errorf("tag result = %v", res)
	}
	if diff := cmp.Diff(map[string]string{"managed-by": "smdelegate", "team": "a", "env": "prod"}, tags()); diff != "" {
		t.Errorf("tags after add (-want +got):\n%s", diff)
	}
	if r := e.lastRequest(t, "TagResource"); param(r, "SecretId") != prefix+"/s" {
		t.Errorf("TagResource SecretId = %q", param(r, "SecretId"))
	}
	res = mustOK(t, "untag", e.run(t, "tag-2", secretTask(conn, &delegatev1.TagSecretOp{Name: "s", Remove: []string{"env", "absent"}})))
	if res.GetAction() != "UntagResource" {
		t.Errorf("untag action = %q", res.GetAction())
	}
	if diff := cmp.Diff(map[string]string{"managed-by": "smdelegate", "team": "a"}, tags()); diff != "" {
		t.Errorf("tags after remove (-want +got):\n%s", diff)
	}

	calls := mutatingCalls(e)
	for _, tc := range []struct {
		name string
		op   *delegatev1.TagSecretOp
		msg  string
	}{
		{"nothing", &delegatev1.TagSecretOp{Name: "s"}, "add: a tag change needs tags to add or to remove"},
		{"aws prefix", &delegatev1.TagSecretOp{Name: "s", Add: map[string]string{"aws:x": "1"}}, "must not start with aws:"},
		{"remove aws prefix", &delegatev1.TagSecretOp{Name: "s", Remove: []string{"AWS:x"}}, "remove[0]: key must not start with aws:"},
		{"remove empty", &delegatev1.TagSecretOp{Name: "s", Remove: []string{""}}, "remove[0]: key must be 1-127 characters"},
		{"add and remove", &delegatev1.TagSecretOp{Name: "s", Add: map[string]string{"x": "1"}, Remove: []string{"x"}}, `tag "x" is both added and removed`},
		{"release", &delegatev1.TagSecretOp{Name: "s", Remove: []string{"managed-by"}}, "releases the secret from smdelegate; add --force"},
		{"reassign", &delegatev1.TagSecretOp{Name: "s", Add: map[string]string{"managed-by": "terraform"}}, "releases the secret"},
	} {
		wantCode(t, tc.name, e.run(t, "tag-bad-"+tc.name, secretTask(conn, tc.op)), delegatev1.Code_INVALID_ARGUMENT, tc.msg)
	}
	if diff := cmp.Diff(calls, mutatingCalls(e)); diff != "" {
		t.Errorf("refused tag changes called AWS (-before +after):\n%s", diff)
	}
	// With force the managed tag may go: the secret is then released.
	mustOK(t, "release with force", e.run(t, "tag-release", secretTask(conn, &delegatev1.TagSecretOp{Name: "s", Remove: []string{"managed-by"},
		Unmanaged: delegatev1.Unmanaged_UNMANAGED_FORCE})))
	wantCode(t, "update after release", e.run(t, "tag-after", secretTask(conn, &delegatev1.UpdateSecretOp{Name: "s", Value: str("v2")})),
		delegatev1.Code_INVALID_ARGUMENT, "is not managed by smdelegate")
}

// TestCheckNeedsDescribeSecret: without secretsmanager:DescribeSecret a
// change is ACCESS_DENIED naming that action, and nothing is changed.
func TestCheckNeedsDescribeSecret(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{maxAttempts: 1})
	conn := e.connector(t, delegatev1.CredentialType_ACCESS_KEY)
	mustOK(t, "create", e.run(t, "d-create", secretTask(conn, &delegatev1.CreateSecretOp{Name: "s", Value: str("v")})))
	e.emu.FailNext("secretsmanager.DescribeSecret", 1, "AccessDeniedException")
	wantCode(t, "update", e.run(t, "d-update", secretTask(conn, &delegatev1.UpdateSecretOp{Name: "s", Value: str("v2")})),
		delegatev1.Code_ACCESS_DENIED, "secretsmanager:DescribeSecret")
	if n := e.emu.Calls("secretsmanager.UpdateSecret"); n != 0 {
		t.Errorf("UpdateSecret calls = %d, want 0", n)
	}
}

// TestNotManagedIsTyped: the refusal's *Error is INVALID_ARGUMENT and
// ErrNotManaged at once.
func TestNotManagedIsTyped(t *testing.T) {
	t.Parallel()
	err := error(&tasks.Error{Code: delegatev1.Code_INVALID_ARGUMENT, Reason: tasks.ErrNotManaged, Msg: "m"})
	if !errors.Is(err, tasks.ErrNotManaged) || !errors.Is(err, tasks.ErrInvalidArgument) || errors.Is(err, tasks.ErrNotFound) {
		t.Errorf("errors.Is on a not-managed refusal: ErrNotManaged %v, ErrInvalidArgument %v, ErrNotFound %v; want true, true, false",
			errors.Is(err, tasks.ErrNotManaged), errors.Is(err, tasks.ErrInvalidArgument), errors.Is(err, tasks.ErrNotFound))
	}
	plain := error(&tasks.Error{Code: delegatev1.Code_INVALID_ARGUMENT, Msg: "m"})
	if errors.Is(plain, tasks.ErrNotManaged) {
		t.Error("a plain INVALID_ARGUMENT is ErrNotManaged")
	}
}
