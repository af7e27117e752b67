package connector_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/smdelegate/smdelegate/manager/connector"
)

func TestParseRef(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    connector.Ref
		wantErr string
	}{
		{"AKIAIOSFODNN7EXAMPLE", connector.Ref{Kind: connector.KindPlain, Value: "AKIAIOSFODNN7EXAMPLE"}, ""},
		{"  AKIA1  ", connector.Ref{Kind: connector.KindPlain, Value: "AKIA1"}, ""},
		{"wJalr/K7+MDENG", connector.Ref{Kind: connector.KindPlain, Value: "wJalr/K7+MDENG"}, ""},
		{"builtin:aws_prod", connector.Ref{Kind: connector.KindBuiltin, Value: "aws_prod"}, ""},
		{"builtin:aws-prod.key", connector.Ref{Kind: connector.KindBuiltin, Value: "aws-prod.key"}, ""},
		{"BUILTIN: aws_prod ", connector.Ref{Kind: connector.KindBuiltin, Value: "aws_prod"}, ""},
		{"builtin:_x", connector.Ref{Kind: connector.KindBuiltin, Value: "_x"}, ""},
		{"builtin:" + strings.Repeat("b", 128), connector.Ref{Kind: connector.KindBuiltin, Value: strings.Repeat("b", 128)}, ""},
		{"env:AWS_SECRET_ACCESS_KEY", connector.Ref{Kind: connector.KindEnv, Value: "AWS_SECRET_ACCESS_KEY"}, ""},
		{"Env:_k", connector.Ref{Kind: connector.KindEnv, Value: "_k"}, ""},
		{"file:/run/secrets/aws key", connector.Ref{Kind: connector.KindFile, Value: "/run/secrets/aws key"}, ""},
		{"file:/", connector.Ref{Kind: connector.KindFile, Value: "/"}, ""},

		{"", connector.Ref{}, "must not be empty"},
		{"   ", connector.Ref{}, "must not be empty"},
		{"builtin:", connector.Ref{}, "builtin:NAME needs a NAME"},
		{"builtin:1x", connector.Ref{}, "builtin:NAME needs a NAME"},
		{"builtin:a/b", connector.Ref{}, "builtin:NAME needs a NAME"},
		{"builtin:" + strings.Repeat("b", 129), connector.Ref{}, "builtin:NAME needs a NAME"},
		{"env:", connector.Ref{}, "env:VAR needs a VAR"},
		{"env:A-B", connector.Ref{}, "env:VAR needs a VAR"},
		{"env:9A", connector.Ref{}, "env:VAR needs a VAR"},
		{"file:", connector.Ref{}, "file:PATH needs an absolute path"},
		{"file:relative/path", connector.Ref{}, "file:PATH needs an absolute path"},
		{"file:/a\x00b", connector.Ref{}, "file:PATH needs an absolute path"},
		{"file:/" + strings.Repeat("p", 4096), connector.Ref{}, "file:PATH needs an absolute path"},
		{"vault:secret/aws", connector.Ref{}, "is not a known kind of reference"},
		{"buitlin:aws_prod", connector.Ref{}, "is not a known kind of reference"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%.40q", tt.in), func(t *testing.T) {
			t.Parallel()
			got, err := connector.ParseRef(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseRef(%q) = %v, %v, want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseRef(%q) = %#v, %v, want %#v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestRefStringRedactsPlaintext(t *testing.T) {
	t.Parallel()
	const planted = "PLANTED-plaintext-9f8e7d"
	r := connector.Ref{Kind: connector.KindPlain, Value: planted}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		if got := fmt.Sprintf(verb, r); strings.Contains(got, planted) {
			t.Errorf("Sprintf(%q, ref) = %q, leaks the plaintext", verb, got)
		}
	}
	for _, tt := range []struct {
		ref  connector.Ref
		want string
	}{
		{connector.Ref{Kind: connector.KindBuiltin, Value: "aws"}, "builtin:aws"},
		{connector.Ref{Kind: connector.KindEnv, Value: "K"}, "env:K"},
		{connector.Ref{Kind: connector.KindFile, Value: "/k"}, "file:/k"},
		{connector.Ref{Kind: connector.KindPlain, Value: planted}, "plaintext (redacted)"},
		{connector.Ref{}, "(no reference)"},
	} {
		if got := tt.ref.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
}
