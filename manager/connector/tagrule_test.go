package connector_test

import (
	"strings"
	"testing"

	"github.com/smdelegate/smdelegate/manager/connector"
)

// TestItem8TagProblem: the one rule for tags and selectors, including
// what a gRPC client cannot send (invalid UTF-8) but a YAML file or a
// config may hold.
func TestItem8TagProblem(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in, want string // want: a prefix of the problem, "" for none
	}{
		{"linux", ""},
		{" US-East-1 ", ""},
		{"inner space", ""},
		{"ünïcode", ""},
		{"", "must not be empty"},
		{"   ", "must not be empty"},
		{"zq\x00zr", "must hold only printable characters and spaces (U+0000 at byte 2)"},
		{"\tlinux", "must hold only printable characters and spaces (U+0009"},
		{"a\u0085", "must hold only printable characters and spaces (U+0085"},
		{"zero\u200bwidth", "must hold only printable characters and spaces (U+200B"},
		{"bad\xffutf8", "must be valid UTF-8"},
		{"smd:platform", "must not start with smd: (reserved"},
		{" SMD:Platform", "must not start with smd: (reserved"},
	} {
		got := connector.TagProblem(tc.in)
		if tc.want == "" && got != "" || tc.want != "" && !strings.HasPrefix(got, tc.want) {
			t.Errorf("TagProblem(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
