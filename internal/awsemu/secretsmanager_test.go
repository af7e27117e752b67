package awsemu_test

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/smdelegate/smdelegate/internal/awsemu"
)

func TestCreateAndGetSecret(t *testing.T) {
	t.Parallel()
	s, url := mustStart(t, awsemu.Options{})
	sm := smClient(t, url, defaultCreds)
	ctx := t.Context()

	tests := []struct {
		name string
		in   secretsmanager.CreateSecretInput
	}{
		{"string", secretsmanager.CreateSecretInput{Name: aws.String("app/db"), SecretString: aws.String(`{"user":"u"}`)}},
		{"binary", secretsmanager.CreateSecretInput{Name: aws.String("app/cert"), SecretBinary: []byte{0, 1, 2, 255}}},
	}
	arnRE := regexp.MustCompile(`^arn:aws:secretsmanager:us-east-1:123456789012:secret:app/[a-z]+-[A-Za-z0-9]{6}$`)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := sm.CreateSecret(ctx, &tt.in)
			if err != nil {
				t.Fatalf("CreateSecret: %v", err)
			}
			if !arnRE.MatchString(aws.ToString(out.ARN)) {
				t.Errorf("CreateSecret ARN = %q, want %v", aws.ToString(out.ARN), arnRE)
			}
			if out.VersionId == nil {
				t.Fatalf("CreateSecret VersionId = nil, want the SDK's generated token")
			}
			for _, id := range []string{*tt.in.Name, *out.ARN} {
				got, err := sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(id)})
				if err != nil {
					t.Fatalf("GetSecretValue(%q): %v", id, err)
				}
				if diff := cmp.Diff(tt.in.SecretString, got.SecretString); diff != "" {
					t.Errorf("GetSecretValue(%q) SecretString (-want +got):\n%s", id, diff)
				}
				if diff := cmp.Diff(tt.in.SecretBinary, got.SecretBinary); diff != "" {
					t.Errorf("GetSecretValue(%q) SecretBinary (-want +got):\n%s", id, diff)
				}
				if diff := cmp.Diff([]string{"AWSCURRENT"}, got.VersionStages); diff != "" {
					t.Errorf("GetSecretValue(%q) VersionStages (-want +got):\n%s", id, diff)
				}
			}
			st, ok := s.Secret(*tt.in.Name)
			if !ok || st.ARN != *out.ARN || len(st.Versions) != 1 || st.Versions[0].VersionID != *out.VersionId {
				t.Errorf("Secret(%q) = %+v, %v; want the created secret with one version", *tt.in.Name, st, ok)
			}
		})
	}
}

func TestSecretIDForms(t *testing.T) {
	t.Parallel()
	s, url := mustStart(t, awsemu.Options{})
	sm := smClient(t, url, defaultCreds)
	s.PutSecretDirect("team/api-key", "v1", map[string]string{"env": "dev"})
	st, _ := s.Secret("team/api-key")

	tests := []struct {
		id       string
		wantCode string
	}{
		{"team/api-key", ""},
		{st.ARN, ""},
		{"arn:aws:secretsmanager:us-east-1:123456789012:secret:team/api-key", ""}, // partial ARN
		{st.ARN[:len(st.ARN)-6] + "ZZZZZZ", "ResourceNotFoundException"},
		{"arn:aws:secretsmanager:eu-west-1:123456789012:secret:team/api-key", "ResourceNotFoundException"},
		{"team/other", "ResourceNotFoundException"},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			_, err := sm.GetSecretValue(t.Context(), &secretsmanager.GetSecretValueInput{SecretId: aws.String(tt.id)})
			if got := errorCode(err); got != tt.wantCode {
				t.Errorf("GetSecretValue(%q) error = %v, want code %q", tt.id, err, tt.wantCode)
			}
			if tt.wantCode == "ResourceNotFoundException" {
				var nf *types.ResourceNotFoundException
				if !errors.As(err, &nf) {
					t.Errorf("GetSecretValue(%q) error = %T, want *types.ResourceNotFoundException", tt.id, err)
				}
			}
		})
	}
}

// stagesByVersion lists each version's stages in creation order.
func stagesByVersion(st awsemu.SecretState) [][]string {
	var out [][]string
	for _, v := range st.Versions {
		out = append(out, v.Stages)
	}
	return out
}

func TestVersionStages(t *testing.T) {
	t.Parallel()
	s, url := mustStart(t, awsemu.Options{})
	sm := smClient(t, url, defaultCreds)
	ctx := t.Context()
	id := aws.String("stages")

	if _, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: id, SecretString: aws.String("v1"), ClientRequestToken: token("v1")}); err != nil {
		t.Fatalf("CreateSecret: %v", err)
	}
	if _, err := sm.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{SecretId: id, SecretString: aws.String("v2"), ClientRequestToken: token("v2")}); err != nil {
		t.Fatalf("PutSecretValue v2: %v", err)
	}
	if _, err := sm.UpdateSecret(ctx, &secretsmanager.UpdateSecretInput{SecretId: id, SecretString: aws.String("v3"), ClientRequestToken: token("v3")}); err != nil {
		t.Fatalf("UpdateSecret v3: %v", err)
	}
	// A description alone creates no version.
	if out, err := sm.UpdateSecret(ctx, &secretsmanager.UpdateSecretInput{SecretId: id, Description: aws.String("d")}); err != nil || out.VersionId != nil {
		t.Fatalf("UpdateSecret(description) = %v, %v; want no VersionId", out, err)
	}
	// A custom label does not move AWSCURRENT.
	pending, err := sm.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{SecretId: id, SecretString: aws.String("v4"),
		ClientRequestToken: token("v4"), VersionStages: []string{"AWSPENDING"}})
	if err != nil {
		t.Fatalf("PutSecretValue v4: %v", err)
	}
	if diff := cmp.Diff([]string{"AWSPENDING"}, pending.VersionStages); diff != "" {
		t.Errorf("PutSecretValue v4 VersionStages (-want +got):\n%s", diff)
	}

	st, _ := s.Secret("stages")
	want := [][]string{nil, {"AWSPREVIOUS"}, {"AWSCURRENT"}, {"AWSPENDING"}}
	if diff := cmp.Diff(want, stagesByVersion(st)); diff != "" {
		t.Errorf("stages after v1..v4 (-want +got):\n%s", diff)
	}
	if st.Description != "d" {
		t.Errorf("Description = %q, want %q", st.Description, "d")
	}

	for stage, wantValue := range map[string]string{"AWSCURRENT": "v3", "AWSPREVIOUS": "v2", "AWSPENDING": "v4"} {
		got, err := sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: id, VersionStage: aws.String(stage)})
		if err != nil || aws.ToString(got.SecretString) != wantValue {
			t.Errorf("GetSecretValue(stage %s) = %v, %v; want %q", stage, aws.ToString(got.SecretString), err, wantValue)
		}
	}
	// A deprecated version is still readable by id.
	got, err := sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: id, VersionId: token("v1")})
	if err != nil || aws.ToString(got.SecretString) != "v1" {
		t.Errorf("GetSecretValue(VersionId v1) = %v, %v; want v1", got, err)
	}
	_, err = sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: id, VersionId: token("v1"), VersionStage: aws.String("AWSCURRENT")})
	if code := errorCode(err); code != "InvalidRequestException" {
		t.Errorf("GetSecretValue(v1, AWSCURRENT) error = %v, want InvalidRequestException", err)
	}

	for _, deprecated := range []bool{false, true} {
		out, err := sm.ListSecretVersionIds(ctx, &secretsmanager.ListSecretVersionIdsInput{SecretId: id, IncludeDeprecated: aws.Bool(deprecated)})
		if err != nil {
			t.Fatalf("ListSecretVersionIds: %v", err)
		}
		var ids []string
		for _, v := range out.Versions {
			ids = append(ids, aws.ToString(v.VersionId))
		}
		want := []string{*token("v2"), *token("v3"), *token("v4")}
		if deprecated {
			want = append([]string{*token("v1")}, want...)
		}
		if diff := cmp.Diff(want, ids); diff != "" {
			t.Errorf("ListSecretVersionIds(IncludeDeprecated=%v) (-want +got):\n%s", deprecated, diff)
		}
	}

	desc, err := sm.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: id})
	if err != nil {
		t.Fatalf("DescribeSecret: %v", err)
	}
	wantStages := map[string][]string{*token("v2"): {"AWSPREVIOUS"}, *token("v3"): {"AWSCURRENT"}, *token("v4"): {"AWSPENDING"}}
	if diff := cmp.Diff(wantStages, desc.VersionIdsToStages); diff != "" {
		t.Errorf("DescribeSecret VersionIdsToStages (-want +got):\n%s", diff)
	}
}

func TestClientRequestTokenIdempotency(t *testing.T) {
	t.Parallel()
	s, url := mustStart(t, awsemu.Options{})
	sm := smClient(t, url, defaultCreds, noRetry)
	ctx := t.Context()
	if _, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String("idem"), SecretString: aws.String("v1"), ClientRequestToken: token("create")}); err != nil {
		t.Fatalf("CreateSecret: %v", err)
	}
	if _, err := sm.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{SecretId: aws.String("idem"), SecretString: aws.String("v2"), ClientRequestToken: token("put")}); err != nil {
		t.Fatalf("PutSecretValue: %v", err)
	}

	tests := []struct {
		name     string
		call     func() (*string, error) // returns the VersionId
		wantCode string
		wantID   *string
	}{
		{"put same token same value", func() (*string, error) {
			out, err := sm.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{SecretId: aws.String("idem"), SecretString: aws.String("v2"), ClientRequestToken: token("put")})
			return versionID(out, err, func() *string { return out.VersionId })
		}, "", token("put")},
		{"put same token other value", func() (*string, error) {
			out, err := sm.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{SecretId: aws.String("idem"), SecretString: aws.String("v3"), ClientRequestToken: token("put")})
			return versionID(out, err, func() *string { return out.VersionId })
		}, "ResourceExistsException", nil},
		{"update same token same value", func() (*string, error) {
			out, err := sm.UpdateSecret(ctx, &secretsmanager.UpdateSecretInput{SecretId: aws.String("idem"), SecretString: aws.String("v2"), ClientRequestToken: token("put")})
			return versionID(out, err, func() *string { return out.VersionId })
		}, "", token("put")},
		{"update same token other value", func() (*string, error) {
			out, err := sm.UpdateSecret(ctx, &secretsmanager.UpdateSecretInput{SecretId: aws.String("idem"), SecretBinary: []byte("v2"), ClientRequestToken: token("put")})
			return versionID(out, err, func() *string { return out.VersionId })
		}, "ResourceExistsException", nil},
		{"create same token same value", func() (*string, error) {
			out, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String("idem"), SecretString: aws.String("v1"), ClientRequestToken: token("create")})
			return versionID(out, err, func() *string { return out.VersionId })
		}, "", token("create")},
		{"create same token other value", func() (*string, error) {
			out, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String("idem"), SecretString: aws.String("other"), ClientRequestToken: token("create")})
			return versionID(out, err, func() *string { return out.VersionId })
		}, "ResourceExistsException", nil},
		{"create existing name other token", func() (*string, error) {
			out, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String("idem"), SecretString: aws.String("v1")})
			return versionID(out, err, func() *string { return out.VersionId })
		}, "ResourceExistsException", nil},
		{"token too short", func() (*string, error) {
			out, err := sm.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{SecretId: aws.String("idem"), SecretString: aws.String("v9"), ClientRequestToken: aws.String("short")})
			return versionID(out, err, func() *string { return out.VersionId })
		}, "ValidationException", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := tt.call()
			if code := errorCode(err); code != tt.wantCode {
				t.Fatalf("error = %v, want code %q", err, tt.wantCode)
			}
			if tt.wantCode == "ResourceExistsException" {
				var re *types.ResourceExistsException
				if !errors.As(err, &re) {
					t.Errorf("error = %T, want *types.ResourceExistsException", err)
				}
			}
			if diff := cmp.Diff(tt.wantID, id); diff != "" {
				t.Errorf("VersionId (-want +got):\n%s", diff)
			}
		})
	}
	st, _ := s.Secret("idem")
	if diff := cmp.Diff([][]string{{"AWSPREVIOUS"}, {"AWSCURRENT"}}, stagesByVersion(st)); diff != "" {
		t.Errorf("versions after the retries (-want +got):\n%s", diff)
	}
}

func versionID[T any](out *T, err error, id func() *string) (*string, error) {
	if err != nil || out == nil {
		return nil, err
	}
	return id(), nil
}

func TestValidation(t *testing.T) {
	t.Parallel()
	s, url := mustStart(t, awsemu.Options{})
	sm := smClient(t, url, defaultCreds, noRetry)
	s.PutSecretDirect("exists", "v", nil)
	manyTags := make([]types.Tag, 51)
	for i := range manyTags {
		manyTags[i] = types.Tag{Key: aws.String(strings.Repeat("k", i+1)), Value: aws.String("v")}
	}

	tests := []struct {
		name     string
		in       secretsmanager.CreateSecretInput
		wantCode string
	}{
		{"bad character", secretsmanager.CreateSecretInput{Name: aws.String("a b"), SecretString: aws.String("v")}, "ValidationException"},
		{"name too long", secretsmanager.CreateSecretInput{Name: aws.String(strings.Repeat("n", 513)), SecretString: aws.String("v")}, "ValidationException"},
		{"name at limit", secretsmanager.CreateSecretInput{Name: aws.String(strings.Repeat("n", 512)), SecretString: aws.String("v")}, ""},
		{"all allowed characters", secretsmanager.CreateSecretInput{Name: aws.String("aZ09/_+=.@-"), SecretString: aws.String("v")}, ""},
		{"value too large", secretsmanager.CreateSecretInput{Name: aws.String("big"), SecretString: aws.String(strings.Repeat("x", 65537))}, "ValidationException"},
		{"value at limit", secretsmanager.CreateSecretInput{Name: aws.String("big2"), SecretBinary: make([]byte, 65536)}, ""},
		{"both values", secretsmanager.CreateSecretInput{Name: aws.String("both"), SecretString: aws.String("v"), SecretBinary: []byte("v")}, "InvalidParameterException"},
		{"description too long", secretsmanager.CreateSecretInput{Name: aws.String("desc"), Description: aws.String(strings.Repeat("d", 2049))}, "ValidationException"},
		{"system tag", secretsmanager.CreateSecretInput{Name: aws.String("tag"), Tags: []types.Tag{{Key: aws.String("aws:x"), Value: aws.String("v")}}}, "InvalidParameterException"},
		{"too many tags", secretsmanager.CreateSecretInput{Name: aws.String("tags"), Tags: manyTags}, "ValidationException"},
		{"no value", secretsmanager.CreateSecretInput{Name: aws.String("novalue")}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := sm.CreateSecret(t.Context(), &tt.in)
			if code := errorCode(err); code != tt.wantCode {
				t.Errorf("CreateSecret error = %v, want code %q", err, tt.wantCode)
			}
		})
	}

	// A secret created without a value has no AWSCURRENT version yet.
	_, err := sm.GetSecretValue(t.Context(), &secretsmanager.GetSecretValueInput{SecretId: aws.String("novalue")})
	var nf *types.ResourceNotFoundException
	if !errors.As(err, &nf) {
		t.Errorf("GetSecretValue(no value) error = %v, want ResourceNotFoundException", err)
	}
	// Its first PutSecretValue becomes AWSCURRENT even with another label.
	if _, err := sm.PutSecretValue(t.Context(), &secretsmanager.PutSecretValueInput{SecretId: aws.String("novalue"),
		SecretString: aws.String("v"), VersionStages: []string{"custom"}}); err != nil {
		t.Fatalf("PutSecretValue: %v", err)
	}
	st, _ := s.Secret("novalue")
	if diff := cmp.Diff([][]string{{"custom", "AWSCURRENT"}}, stagesByVersion(st)); diff != "" {
		t.Errorf("first version stages (-want +got):\n%s", diff)
	}
}

func TestDescribeAndTags(t *testing.T) {
	t.Parallel()
	_, url := mustStart(t, awsemu.Options{})
	sm := smClient(t, url, defaultCreds)
	ctx := t.Context()
	id := aws.String("tagged")
	if _, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: id, SecretString: aws.String("v"), Description: aws.String("desc"),
		KmsKeyId: aws.String("alias/custom"), Tags: []types.Tag{{Key: aws.String("a"), Value: aws.String("1")}}}); err != nil {
		t.Fatalf("CreateSecret: %v", err)
	}
	if _, err := sm.TagResource(ctx, &secretsmanager.TagResourceInput{SecretId: id, Tags: []types.Tag{
		{Key: aws.String("b"), Value: aws.String("2")}, {Key: aws.String("a"), Value: aws.String("updated")}}}); err != nil {
		t.Fatalf("TagResource: %v", err)
	}
	if _, err := sm.UntagResource(ctx, &secretsmanager.UntagResourceInput{SecretId: id, TagKeys: []string{"b", "missing"}}); err != nil {
		t.Fatalf("UntagResource: %v", err)
	}
	if _, err := sm.UpdateSecret(ctx, &secretsmanager.UpdateSecretInput{SecretId: id, KmsKeyId: aws.String("alias/other")}); err != nil {
		t.Fatalf("UpdateSecret(KmsKeyId): %v", err)
	}
	out, err := sm.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: id})
	if err != nil {
		t.Fatalf("DescribeSecret: %v", err)
	}
	if out.DeletedDate != nil || out.CreatedDate == nil || out.LastChangedDate == nil {
		t.Errorf("DescribeSecret dates: DeletedDate=%v CreatedDate=%v LastChangedDate=%v; want no DeletedDate, the others set",
			out.DeletedDate, out.CreatedDate, out.LastChangedDate)
	}
	type view struct {
		Description, KmsKeyID string
		Tags                  []types.Tag
	}
	got := view{aws.ToString(out.Description), aws.ToString(out.KmsKeyId), out.Tags}
	want := view{"desc", "alias/other", []types.Tag{{Key: aws.String("a"), Value: aws.String("updated")}}}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreUnexported(types.Tag{})); diff != "" {
		t.Errorf("DescribeSecret (-want +got):\n%s", diff)
	}
}
