package awsemu_test

import (
	"fmt"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"
	"github.com/google/go-cmp/cmp"

	"github.com/smdelegate/smdelegate/internal/awsemu"
)

// TestListSecretVersionIdsPages pages through versions one at a time, with
// and without deprecated ones, and checks the errors of the call.
func TestListSecretVersionIdsPages(t *testing.T) {
	t.Parallel()
	_, url := mustStart(t, awsemu.Options{})
	sm := smClient(t, url, defaultCreds, noRetry)
	ctx := t.Context()
	id := aws.String("paged")
	if _, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: id, SecretString: aws.String("v1"), ClientRequestToken: token("v1")}); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"v2", "v3", "v4"} {
		if _, err := sm.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{SecretId: id, SecretString: aws.String(v), ClientRequestToken: token(v)}); err != nil {
			t.Fatal(err)
		}
	}
	all := func(deprecated bool) (ids []string, pages int) {
		var next *string
		for {
			out, err := sm.ListSecretVersionIds(ctx, &secretsmanager.ListSecretVersionIdsInput{SecretId: id, MaxResults: aws.Int32(1),
				NextToken: next, IncludeDeprecated: aws.Bool(deprecated)})
			if err != nil {
				t.Fatalf("ListSecretVersionIds page %d: %v", pages, err)
			}
			pages++
			if len(out.Versions) > 1 {
				t.Errorf("page %d has %d versions, want at most 1", pages, len(out.Versions))
			}
			for _, v := range out.Versions {
				ids = append(ids, aws.ToString(v.VersionId))
				if v.CreatedDate == nil {
					t.Errorf("version %s has no CreatedDate", aws.ToString(v.VersionId))
				}
			}
			if aws.ToString(out.Name) != "paged" || aws.ToString(out.ARN) == "" {
				t.Errorf("Name %q ARN %q", aws.ToString(out.Name), aws.ToString(out.ARN))
			}
			if next = out.NextToken; next == nil || pages > 10 {
				return ids, pages
			}
		}
	}
	ids, pages := all(true)
	if diff := cmp.Diff([]string{*token("v1"), *token("v2"), *token("v3"), *token("v4")}, ids); diff != "" || pages != 4 {
		t.Errorf("with deprecated: %d pages (-want +got):\n%s", pages, diff)
	}
	ids, _ = all(false)
	if diff := cmp.Diff([]string{*token("v3"), *token("v4")}, ids); diff != "" {
		t.Errorf("without deprecated (-want +got):\n%s", diff)
	}

	// A NextToken of ListSecrets is not one of this call.
	if _, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String("other"), SecretString: aws.String("x"), ClientRequestToken: token("o")}); err != nil {
		t.Fatal(err)
	}
	list, err := sm.ListSecrets(ctx, &secretsmanager.ListSecretsInput{MaxResults: aws.Int32(1)})
	if err != nil || list.NextToken == nil {
		t.Fatalf("ListSecrets: %v, next %v", err, list.NextToken)
	}
	for _, tc := range []struct {
		name string
		in   secretsmanager.ListSecretVersionIdsInput
		code string
	}{
		{"foreign token", secretsmanager.ListSecretVersionIdsInput{SecretId: id, NextToken: list.NextToken}, "InvalidNextTokenException"},
		{"garbage token", secretsmanager.ListSecretVersionIdsInput{SecretId: id, NextToken: aws.String("%%%")}, "InvalidNextTokenException"},
		{"max results 0", secretsmanager.ListSecretVersionIdsInput{SecretId: id, MaxResults: aws.Int32(0)}, "ValidationException"},
		{"max results 101", secretsmanager.ListSecretVersionIdsInput{SecretId: id, MaxResults: aws.Int32(101)}, "ValidationException"},
		{"missing", secretsmanager.ListSecretVersionIdsInput{SecretId: aws.String("nope")}, "ResourceNotFoundException"},
	} {
		if _, err := sm.ListSecretVersionIds(ctx, &tc.in); errorCode(err) != tc.code {
			t.Errorf("%s: error %v, want %s", tc.name, err, tc.code)
		}
	}

	// Versions of a secret scheduled for deletion can still be listed.
	if _, err := sm.DeleteSecret(ctx, &secretsmanager.DeleteSecretInput{SecretId: id}); err != nil {
		t.Fatal(err)
	}
	out, err := sm.ListSecretVersionIds(ctx, &secretsmanager.ListSecretVersionIdsInput{SecretId: id})
	if err != nil || len(out.Versions) != 2 {
		t.Errorf("ListSecretVersionIds of a scheduled secret = %v, %v; want its 2 labelled versions", out, err)
	}
}

// TestTagRules: TagResource merges (a key's value is replaced), and both
// calls refuse what AWS refuses, leaving the tags as they were.
func TestTagRules(t *testing.T) {
	t.Parallel()
	s, url := mustStart(t, awsemu.Options{})
	sm := smClient(t, url, defaultCreds, noRetry)
	ctx := t.Context()
	id := aws.String("tags")
	tg := func(k, v string) types.Tag { return types.Tag{Key: aws.String(k), Value: aws.String(v)} }
	if _, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: id, SecretString: aws.String("v"), ClientRequestToken: token("t"),
		Tags: []types.Tag{tg("managed-by", "smdelegate")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := sm.TagResource(ctx, &secretsmanager.TagResourceInput{SecretId: id, Tags: []types.Tag{tg("team", "a"), tg("managed-by", "other")}}); err != nil {
		t.Fatalf("TagResource: %v", err)
	}
	tags := func() map[string]string {
		st, _ := s.Secret("tags")
		return st.Tags
	}
	if diff := cmp.Diff(map[string]string{"managed-by": "other", "team": "a"}, tags()); diff != "" {
		t.Errorf("tags after TagResource (-want +got):\n%s", diff)
	}
	before := tags()
	many := make([]types.Tag, 49)
	for i := range many {
		many[i] = tg(fmt.Sprintf("k%02d", i), "v")
	}
	for _, tc := range []struct {
		name string
		call func() error
		code string
	}{
		{"aws: key", func() error {
			_, err := sm.TagResource(ctx, &secretsmanager.TagResourceInput{SecretId: id, Tags: []types.Tag{tg("aws:x", "1")}})
			return err
		}, "InvalidParameterException"},
		{"over 50 tags", func() error {
			_, err := sm.TagResource(ctx, &secretsmanager.TagResourceInput{SecretId: id, Tags: many})
			return err
		}, "ValidationException"},
		{"tag missing secret", func() error {
			_, err := sm.TagResource(ctx, &secretsmanager.TagResourceInput{SecretId: aws.String("nope"), Tags: []types.Tag{tg("a", "b")}})
			return err
		}, "ResourceNotFoundException"},
		{"untag aws: key", func() error {
			_, err := sm.UntagResource(ctx, &secretsmanager.UntagResourceInput{SecretId: id, TagKeys: []string{"AWS:x"}})
			return err
		}, "InvalidParameterException"},
		{"untag missing secret", func() error {
			_, err := sm.UntagResource(ctx, &secretsmanager.UntagResourceInput{SecretId: aws.String("nope"), TagKeys: []string{"a"}})
			return err
		}, "ResourceNotFoundException"},
	} {
		if err := tc.call(); errorCode(err) != tc.code {
			t.Errorf("%s: error %v, want %s", tc.name, err, tc.code)
		}
	}
	if diff := cmp.Diff(before, tags()); diff != "" {
		t.Errorf("refused calls changed the tags (-before +after):\n%s", diff)
	}
	// Removing a key the secret does not have is no error.
	if _, err := sm.UntagResource(ctx, &secretsmanager.UntagResourceInput{SecretId: id, TagKeys: []string{"team", "absent"}}); err != nil {
		t.Fatalf("UntagResource: %v", err)
	}
	if diff := cmp.Diff(map[string]string{"managed-by": "other"}, tags()); diff != "" {
		t.Errorf("tags after UntagResource (-want +got):\n%s", diff)
	}
	// Scheduled for deletion: both refused; DescribeSecret still shows the tags.
	if _, err := sm.DeleteSecret(ctx, &secretsmanager.DeleteSecretInput{SecretId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := sm.TagResource(ctx, &secretsmanager.TagResourceInput{SecretId: id, Tags: []types.Tag{tg("a", "b")}}); errorCode(err) != "InvalidRequestException" {
		t.Errorf("TagResource on a scheduled secret: %v, want InvalidRequestException", err)
	}
	if _, err := sm.UntagResource(ctx, &secretsmanager.UntagResourceInput{SecretId: id, TagKeys: []string{"managed-by"}}); errorCode(err) != "InvalidRequestException" {
		t.Errorf("UntagResource on a scheduled secret: %v, want InvalidRequestException", err)
	}
	d, err := sm.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: id})
	if err != nil || len(d.Tags) != 1 || d.DeletedDate == nil {
		t.Errorf("DescribeSecret of a scheduled secret = %v, %v; want its tag and DeletedDate", d, err)
	}
}
