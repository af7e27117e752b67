package awsemu_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"
	"github.com/google/go-cmp/cmp"

	"github.com/smdelegate/smdelegate/internal/awsemu"
)

func names(list []types.SecretListEntry) []string {
	var out []string
	for _, e := range list {
		out = append(out, aws.ToString(e.Name))
	}
	return out
}

func TestListSecretsPagination(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s, url := mustStart(t, awsemu.Options{Now: clk.Now})
	sm := smClient(t, url, defaultCreds, noRetry)
	ctx := t.Context()
	var want []string
	for i := range 25 {
		name := fmt.Sprintf("page/%02d", i)
		s.PutSecretDirect(name, "v", nil)
		want = append([]string{name}, want...) // newest first
		clk.Advance(time.Second)
	}

	var pages [][]string
	p := secretsmanager.NewListSecretsPaginator(sm, &secretsmanager.ListSecretsInput{MaxResults: aws.Int32(10)})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			t.Fatalf("ListSecrets page %d: %v", len(pages), err)
		}
		pages = append(pages, names(out.SecretList))
		// A secret added between pages shows up on no page and breaks nothing.
		if len(pages) == 1 {
			s.PutSecretDirect("page/late", "v", nil)
		}
	}
	if got := []int{len(pages[0]), len(pages[1]), len(pages[2])}; len(pages) != 3 || !slices.Equal(got, []int{10, 10, 5}) {
		t.Fatalf("page sizes = %v (%d pages), want [10 10 5]", got, len(pages))
	}
	if diff := cmp.Diff(want, slices.Concat(pages...)); diff != "" {
		t.Errorf("listed names (-want +got):\n%s", diff)
	}

	asc, err := sm.ListSecrets(ctx, &secretsmanager.ListSecretsInput{SortBy: types.SortByTypeName, SortOrder: types.SortOrderTypeAsc, MaxResults: aws.Int32(3)})
	if err != nil {
		t.Fatalf("ListSecrets(name asc): %v", err)
	}
	if diff := cmp.Diff([]string{"page/00", "page/01", "page/02"}, names(asc.SecretList)); diff != "" {
		t.Errorf("ListSecrets(name asc) (-want +got):\n%s", diff)
	}

	tests := []struct {
		name     string
		in       secretsmanager.ListSecretsInput
		wantCode string
	}{
		{"MaxResults 0", secretsmanager.ListSecretsInput{MaxResults: aws.Int32(0)}, "ValidationException"},
		{"MaxResults 101", secretsmanager.ListSecretsInput{MaxResults: aws.Int32(101)}, "ValidationException"},
		{"MaxResults 100", secretsmanager.ListSecretsInput{MaxResults: aws.Int32(100)}, ""},
		{"garbage NextToken", secretsmanager.ListSecretsInput{NextToken: aws.String("not-a-token")}, "InvalidNextTokenException"},
		{"token for another order", secretsmanager.ListSecretsInput{NextToken: asc.NextToken}, "InvalidNextTokenException"},
		{"unknown filter key", secretsmanager.ListSecretsInput{Filters: []types.Filter{{Key: "colour", Values: []string{"x"}}}}, "ValidationException"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := sm.ListSecrets(ctx, &tt.in)
			if code := errorCode(err); code != tt.wantCode {
				t.Errorf("ListSecrets error = %v, want code %q", err, tt.wantCode)
			}
			if tt.wantCode == "InvalidNextTokenException" {
				var it *types.InvalidNextTokenException
				if !errors.As(err, &it) {
					t.Errorf("ListSecrets error = %T, want *types.InvalidNextTokenException", err)
				}
			}
		})
	}
}

func TestListSecretsFilters(t *testing.T) {
	t.Parallel()
	s, url := mustStart(t, awsemu.Options{})
	sm := smClient(t, url, defaultCreds)
	s.PutSecretDirect("devops/db", "v", map[string]string{"team": "platform"})
	s.PutSecretDirect("devops/api", "v", map[string]string{"team": "web"})
	s.PutSecretDirect("devopsx", "v", nil)
	s.PutSecretDirect("Devops/upper", "v", nil)
	s.PutSecretDirect("other", "v", map[string]string{"owner": "platform-team"})
	if _, err := sm.UpdateSecret(t.Context(), &secretsmanager.UpdateSecretInput{SecretId: aws.String("other"), Description: aws.String("Shared Database")}); err != nil {
		t.Fatalf("UpdateSecret: %v", err)
	}

	tests := []struct {
		name    string
		filters []types.Filter
		want    []string
	}{
		{"name prefix is case-sensitive and not a folder", []types.Filter{{Key: types.FilterNameStringTypeName, Values: []string{"devops"}}},
			[]string{"devops/api", "devops/db", "devopsx"}},
		{"name prefix with slash", []types.Filter{{Key: types.FilterNameStringTypeName, Values: []string{"devops/"}}},
			[]string{"devops/api", "devops/db"}},
		{"two values are alternatives", []types.Filter{{Key: types.FilterNameStringTypeName, Values: []string{"devops/d", "oth"}}},
			[]string{"devops/db", "other"}},
		{"negation", []types.Filter{{Key: types.FilterNameStringTypeName, Values: []string{"devops", "!devops/a"}}},
			[]string{"devops/db", "devopsx"}},
		{"tag-key", []types.Filter{{Key: types.FilterNameStringTypeTagKey, Values: []string{"team"}}},
			[]string{"devops/api", "devops/db"}},
		{"tag-value prefix", []types.Filter{{Key: types.FilterNameStringTypeTagValue, Values: []string{"platform"}}},
			[]string{"devops/db", "other"}},
		{"filters combine", []types.Filter{
			{Key: types.FilterNameStringTypeTagValue, Values: []string{"platform"}},
			{Key: types.FilterNameStringTypeName, Values: []string{"devops"}}},
			[]string{"devops/db"}},
		{"description ignores case", []types.Filter{{Key: types.FilterNameStringTypeDescription, Values: []string{"shared"}}},
			[]string{"other"}},
		{"all", []types.Filter{{Key: types.FilterNameStringTypeAll, Values: []string{"DEVOPS/U"}}},
			[]string{"Devops/upper"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := sm.ListSecrets(t.Context(), &secretsmanager.ListSecretsInput{Filters: tt.filters, SortBy: types.SortByTypeName, SortOrder: types.SortOrderTypeAsc})
			if err != nil {
				t.Fatalf("ListSecrets: %v", err)
			}
			if diff := cmp.Diff(tt.want, names(out.SecretList)); diff != "" {
				t.Errorf("ListSecrets (-want +got):\n%s", diff)
			}
		})
	}
}

func TestGetRandomPassword(t *testing.T) {
	t.Parallel()
	_, url := mustStart(t, awsemu.Options{})
	sm := smClient(t, url, defaultCreds, noRetry)
	const punct = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
	classes := map[string]func(rune) bool{
		"lower": unicode.IsLower, "upper": unicode.IsUpper, "digit": unicode.IsDigit,
		"punct": func(r rune) bool { return strings.ContainsRune(punct, r) },
		"space": func(r rune) bool { return r == ' ' },
	}

	tests := []struct {
		name     string
		in       secretsmanager.GetRandomPasswordInput
		wantLen  int
		must     []string // classes that must appear
		mustNot  []string // classes that must not appear
		banned   string
		wantCode string
	}{
		{"defaults", secretsmanager.GetRandomPasswordInput{}, 32, []string{"lower", "upper", "digit", "punct"}, []string{"space"}, "", ""},
		{"length 4 still has every type", secretsmanager.GetRandomPasswordInput{PasswordLength: aws.Int64(4)}, 4, []string{"lower", "upper", "digit", "punct"}, nil, "", ""},
		{"alphanumeric", secretsmanager.GetRandomPasswordInput{PasswordLength: aws.Int64(64), ExcludePunctuation: aws.Bool(true)}, 64,
			[]string{"lower", "upper", "digit"}, []string{"punct", "space"}, "", ""},
		{"digits only", secretsmanager.GetRandomPasswordInput{PasswordLength: aws.Int64(20), ExcludePunctuation: aws.Bool(true),
			ExcludeLowercase: aws.Bool(true), ExcludeUppercase: aws.Bool(true)}, 20, []string{"digit"}, []string{"lower", "upper", "punct"}, "", ""},
		{"exclude characters", secretsmanager.GetRandomPasswordInput{PasswordLength: aws.Int64(200), ExcludeCharacters: aws.String("abc012!@#")}, 200,
			[]string{"lower", "upper", "digit", "punct"}, nil, "abc012!@#", ""},
		{"include space", secretsmanager.GetRandomPasswordInput{PasswordLength: aws.Int64(4096), IncludeSpace: aws.Bool(true)}, 4096,
			[]string{"lower", "upper", "digit", "punct", "space"}, nil, "", ""},
		{"not each type", secretsmanager.GetRandomPasswordInput{PasswordLength: aws.Int64(1), RequireEachIncludedType: aws.Bool(false)}, 1, nil, nil, "", ""},
		{"too short for every type", secretsmanager.GetRandomPasswordInput{PasswordLength: aws.Int64(3)}, 0, nil, nil, "", "InvalidParameterException"},
		{"too long", secretsmanager.GetRandomPasswordInput{PasswordLength: aws.Int64(4097)}, 0, nil, nil, "", "ValidationException"},
		{"nothing left", secretsmanager.GetRandomPasswordInput{ExcludeNumbers: aws.Bool(true), ExcludePunctuation: aws.Bool(true),
			ExcludeLowercase: aws.Bool(true), ExcludeUppercase: aws.Bool(true)}, 0, nil, nil, "", "InvalidParameterException"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 5 { // randomness: the guarantees hold every time
				out, err := sm.GetRandomPassword(t.Context(), &tt.in)
				if code := errorCode(err); code != tt.wantCode {
					t.Fatalf("GetRandomPassword error = %v, want code %q", err, tt.wantCode)
				}
				if err != nil {
					return
				}
				pw := aws.ToString(out.RandomPassword)
				if len(pw) != tt.wantLen {
					t.Errorf("len(password) = %d, want %d", len(pw), tt.wantLen)
				}
				for _, c := range tt.must {
					if !strings.ContainsFunc(pw, classes[c]) {
						t.Errorf("password has no %s character", c)
					}
				}
				for _, c := range tt.mustNot {
					if strings.ContainsFunc(pw, classes[c]) {
						t.Errorf("password has a %s character", c)
					}
				}
				if strings.ContainsAny(pw, tt.banned) {
					t.Errorf("password contains one of the excluded characters %q", tt.banned)
				}
			}
		})
	}
}
