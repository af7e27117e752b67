package allowlist

import (
	"net/url"
	"testing"
)

func TestItem2EndpointPatterns(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		pattern string
		allows  []string
		refuses []string
	}{
		{"http://127.0.0.1:4566",
			[]string{"http://127.0.0.1:4566", "http://127.0.0.1:4566/", "http://127.0.0.1:4566/x"},
			[]string{"http://127.0.0.1:45667", "http://127.0.0.1:4566.evil.example", "https://127.0.0.1:4566", "http://127.0.0.1"}},
		{"http://127.0.0.1:*",
			[]string{"http://127.0.0.1:1", "http://127.0.0.1"},
			[]string{"http://127.0.0.2:1", "https://127.0.0.1:1"}},
		{"https://*.vpce.example.com",
			[]string{"https://a.vpce.example.com", "https://a.b.VPCE.example.com.", "https://a.vpce.example.com:443"},
			[]string{"https://vpce.example.com", "https://avpce.example.com", "https://a.vpce.example.com:8443"}},
		{"https://proxy.example.com/aws/",
			[]string{"https://proxy.example.com/aws", "https://proxy.example.com/aws/sm"},
			[]string{"https://proxy.example.com/awsx", "https://proxy.example.com/", "https://proxy.example.com"}},
		{"http://[::1]:8080",
			[]string{"http://[::1]:8080/"},
			[]string{"http://[::2]:8080", "http://127.0.0.1:8080"}},
	} {
		e, err := ParseEndpoint(tc.pattern)
		if err != nil {
			t.Errorf("ParseEndpoint(%q) = %v", tc.pattern, err)
			continue
		}
		for _, s := range tc.allows {
			if u, _ := url.Parse(s); !e.Allows(u) {
				t.Errorf("%q.Allows(%q) = false, want true", tc.pattern, s)
			}
		}
		for _, s := range tc.refuses {
			if u, _ := url.Parse(s); e.Allows(u) {
				t.Errorf("%q.Allows(%q) = true, want false", tc.pattern, s)
			}
		}
	}
	for _, bad := range []string{"", "127.0.0.1:4566", "ftp://x", "http://", "http://u@x", "http://x?a", "http://x#f",
		"http://x:0", "http://x:99999", "http://x:08", "http://x/a/../b", "http://*", "http://a_b", "http://[127.0.0.1]", "http://x y"} {
		if _, err := ParseEndpoint(bad); err == nil {
			t.Errorf("ParseEndpoint(%q) = nil, want an error", bad)
		}
	}
}

func TestItem2FileAndEnvPatterns(t *testing.T) {
	t.Parallel()
	for _, g := range []string{"keys/*", "/etc/[", "/etc/../x"} {
		if CheckFileGlob(g) == nil {
			t.Errorf("CheckFileGlob(%q) = nil, want an error", g)
		}
	}
	if !MatchFile([]string{"/etc/smd/aws/*.key"}, "/etc/smd/aws/a.key") || MatchFile([]string{"/etc/smd/aws/*"}, "/etc/smd/aws/x/a.key") {
		t.Error("MatchFile: * must match within one directory only")
	}
	for _, p := range []string{"AWS KEY", "A=B", "[", "a/b", ""} {
		if CheckEnvPattern(p) == nil {
			t.Errorf("CheckEnvPattern(%q) = nil, want an error", p)
		}
	}
	if !MatchEnv([]string{"AWS_KEY_*"}, "AWS_KEY_PAY") || MatchEnv([]string{"AWS_KEY_*"}, "XAWS_KEY_PAY") {
		t.Error("MatchEnv: a pattern matches whole names")
	}
}
