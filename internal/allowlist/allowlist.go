// Package allowlist parses and matches the allow-lists a host's operator
// writes in its config to let connectors reach beyond the values they
// carry: endpoint URL patterns, file path globs and environment variable
// name patterns. The agent's and the manager's Validate call the Check
// and Parse functions, so a bad entry is refused at start, naming its key;
// tasks/awsauth.Policy enforces the lists at every task.
package allowlist

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// EndpointRule is the rule an endpoint pattern must follow, for errors.
const EndpointRule = "must be scheme://host[:port][/path] with scheme http or https, " +
	"a host name or IP address (a leading \"*.\" matches any subdomain), " +
	"port a number or \"*\" (any port), and no user, query or fragment"

// Endpoint is one entry of an endpoint allow-list.
type Endpoint struct {
	scheme string
	// host is lower-case, without brackets for IPv6 and without the
	// "*." of a subdomain pattern.
	host string
	// anySub: the pattern was "*.host"; it matches hosts ending in
	// ".host" (one label or more before it), not host itself.
	anySub bool
	// port is "" (the scheme's default), "*" or a number.
	port string
	// path is "" (any path) or a cleaned prefix without a trailing "/",
	// matched on whole segments.
	path string
	raw  string
}

var hostRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$`)

// ParseEndpoint parses an allow-list entry: scheme://host[:port][/path].
// "https://*.vpce.example.com" allows every subdomain on port 443,
// "http://127.0.0.1:*" every port of that address, and
// "https://proxy.internal/aws" only paths at or below /aws.
func ParseEndpoint(s string) (Endpoint, error) {
	e := Endpoint{raw: strings.TrimSpace(s)}
	scheme, rest, ok := strings.Cut(e.raw, "://")
	e.scheme = strings.ToLower(scheme)
	if !ok || (e.scheme != "http" && e.scheme != "https") {
		return e, errors.New(EndpointRule)
	}
	if strings.ContainsAny(rest, "@?#\\ \t") {
		return e, errors.New(EndpointRule)
	}
	authority, p, hasPath := strings.Cut(rest, "/")
	if hasPath {
		p = "/" + p
		if p != path.Clean(p) && p != path.Clean(p)+"/" {
			return e, errors.New(EndpointRule + " (the path must not hold \".\" or \"..\" segments)")
		}
		e.path = strings.TrimSuffix(path.Clean(p), "/")
	}
	host, port := authority, ""
	if strings.HasPrefix(authority, "[") {
		end := strings.IndexByte(authority, ']')
		if end < 0 {
			return e, errors.New(EndpointRule)
		}
		host, port = authority[1:end], authority[end+1:]
		if port != "" && !strings.HasPrefix(port, ":") {
			return e, errors.New(EndpointRule)
		}
		port = strings.TrimPrefix(port, ":")
		if ip := net.ParseIP(host); ip == nil || ip.To4() != nil {
			return e, errors.New(EndpointRule)
		}
	} else if i := strings.LastIndexByte(authority, ':'); i >= 0 {
		host, port = authority[:i], authority[i+1:]
		if host == "" {
			return e, errors.New(EndpointRule)
		}
	}
	if port != "" && port != "*" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
			return e, errors.New(EndpointRule)
		}
	}
	e.port = port
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if rest, ok := strings.CutPrefix(host, "*."); ok {
		e.anySub, host = true, rest
	}
	if net.ParseIP(host) == nil && !hostRE.MatchString(host) {
		return e, errors.New(EndpointRule)
	}
	e.host = host
	return e, nil
}

// String returns the entry as written.
func (e Endpoint) String() string { return e.raw }

// Allows reports whether u is allowed by e: same scheme, a host e names,
// the same port (an absent port is the scheme's default) and a path at or
// below e's path. u must carry no dot segments (see HasDotSegments).
func (e Endpoint) Allows(u *url.URL) bool {
	if u == nil || strings.ToLower(u.Scheme) != e.scheme {
		return false
	}
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if e.anySub {
		if !strings.HasSuffix(host, "."+e.host) {
			return false
		}
	} else if host != e.host {
		return false
	}
	if e.port != "*" && portOf(e.scheme, e.port) != portOf(e.scheme, u.Port()) {
		return false
	}
	if e.path == "" {
		return true
	}
	return u.Path == e.path || strings.HasPrefix(u.Path, e.path+"/")
}

func portOf(scheme, port string) string {
	if port != "" {
		return port
	}
	if scheme == "https" {
		return "443"
	}
	return "80"
}

// HasDotSegments reports whether p has a "." or ".." segment, which a
// server may resolve to a path outside an allowed prefix.
func HasDotSegments(p string) bool {
	for _, s := range strings.Split(p, "/") {
		if s == "." || s == ".." {
			return true
		}
	}
	return false
}

// CheckFileGlob checks a file allow-list entry: an absolute path pattern
// in filepath.Match syntax, where "*" does not cross "/".
func CheckFileGlob(g string) error {
	if !filepath.IsAbs(g) {
		return errors.New("must be an absolute path or path glob (e.g. /etc/smd/aws/*.key)")
	}
	if _, err := filepath.Match(g, ""); err != nil {
		return fmt.Errorf("is not a valid glob: %v", err)
	}
	if HasDotSegments(filepath.ToSlash(g)) {
		return errors.New("must not hold \".\" or \"..\" segments")
	}
	return nil
}

// MatchFile reports whether the absolute, cleaned path p matches one of
// globs.
func MatchFile(globs []string, p string) bool {
	for _, g := range globs {
		if ok, err := filepath.Match(filepath.Clean(g), p); err == nil && ok {
			return true
		}
	}
	return false
}

var envPatternRE = regexp.MustCompile(`^[A-Za-z0-9_*?\[\]^-]+$`)

// CheckEnvPattern checks an environment allow-list entry: a variable name,
// or a pattern in path.Match syntax (AWS_KEY_*).
func CheckEnvPattern(p string) error {
	if !envPatternRE.MatchString(p) {
		return errors.New("must be a variable name or a pattern of one (letters, digits, _ and the wildcards * ? [ ])")
	}
	if _, err := path.Match(p, ""); err != nil {
		return fmt.Errorf("is not a valid pattern: %v", err)
	}
	return nil
}

// MatchEnv reports whether the variable name matches one of patterns.
func MatchEnv(patterns []string, name string) bool {
	for _, p := range patterns {
		if ok, err := path.Match(p, name); err == nil && ok {
			return true
		}
	}
	return false
}
