package awsauth

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/smdelegate/smdelegate/internal/allowlist"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// MaxRefFileSize bounds what a file: reference may read: a credential file
// holds one key, and a reference to /dev/zero or a log must not exhaust
// the host's memory.
const MaxRefFileSize = 4096

// PolicyKeys name the settings a refusal tells the host's operator to
// change. An empty key means the host has no such setting: references of
// that kind are never read there.
type PolicyKeys struct {
	// Config names the configuration that holds the keys, as a refusal
	// says it: "the agent's config".
	Config    string
	Env       string
	Files     string
	Endpoints string
}

// AgentKeys are the agent's settings (configs/agent.yaml); they are the
// default of a PolicyConfig.
var AgentKeys = PolicyKeys{
	Config:    "the agent's config",
	Env:       "references.allow_env",
	Files:     "references.allow_files",
	Endpoints: "endpoints.allow",
}

// PolicyConfig is what a host allows connectors to reach beyond the values
// they carry. Its zero value allows no env: or file: reference and no
// endpoint but AWS's own.
type PolicyConfig struct {
	// AllowEnv lists the environment variables env: references may read:
	// names or path.Match patterns of names. SMD_* variables are never
	// read, whatever the list says: they configure smd itself.
	AllowEnv []string
	// AllowFiles lists the files file: references may read: absolute
	// filepath.Match globs, matched against the cleaned path the
	// reference names.
	AllowFiles []string
	// AllowEndpoints lists the endpoint_url and sts_endpoint_url values
	// allowed beside AWS's own: allowlist.ParseEndpoint patterns.
	AllowEndpoints []string
	// ProtectedFiles are never read by a reference, even when a glob
	// matches them: the host's own token, config and keys. Compared by
	// path and by file identity, so a link to one is refused too.
	ProtectedFiles []string
	// Withheld is material no reference may resolve to or contain: the
	// host's own token.
	Withheld []string
	// Keys name the settings refusals point to. Zero: AgentKeys.
	Keys PolicyKeys
}

// Policy decides, on the host that runs a task, which env: and file:
// references a connector may resolve and which endpoints its clients may
// call. It is the one place these rules live: the Pool applies it to every
// client it builds and the tasks Runner to the references it collects for
// sanitizing. A nil *Policy is the zero PolicyConfig. Safe for concurrent
// use: it is read-only after NewPolicy.
type Policy struct {
	env       []string
	files     []string
	endpoints []allowlist.Endpoint
	protected []string
	withheld  []string
	keys      PolicyKeys
}

// NewPolicy checks c and returns its Policy. An invalid entry is an error
// naming the key and the entry's index.
func NewPolicy(c PolicyConfig) (*Policy, error) {
	p := &Policy{keys: c.Keys}
	if p.keys == (PolicyKeys{}) {
		p.keys = AgentKeys
	}
	var errs []error
	for i, s := range c.AllowEnv {
		if err := allowlist.CheckEnvPattern(s); err != nil {
			errs = append(errs, fmt.Errorf("%s[%d]: %w", p.keys.Env, i, err))
		}
		p.env = append(p.env, s)
	}
	for i, s := range c.AllowFiles {
		if err := allowlist.CheckFileGlob(s); err != nil {
			errs = append(errs, fmt.Errorf("%s[%d]: %w", p.keys.Files, i, err))
		}
		p.files = append(p.files, filepath.Clean(s))
	}
	for i, s := range c.AllowEndpoints {
		e, err := allowlist.ParseEndpoint(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s[%d]: %w", p.keys.Endpoints, i, err))
		}
		p.endpoints = append(p.endpoints, e)
	}
	for _, f := range c.ProtectedFiles {
		if f = strings.TrimSpace(f); f != "" {
			if abs, err := filepath.Abs(f); err == nil {
				f = abs
			}
			p.protected = append(p.protected, f)
		}
	}
	for _, w := range c.Withheld {
		if w = strings.TrimSpace(w); w != "" {
			p.withheld = append(p.withheld, w)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Policy) keyset() PolicyKeys {
	if p == nil {
		return AgentKeys
	}
	return p.keys
}

// ResolveRef returns the material a SecretRef names: its value, or the
// environment variable or file it names when this host's policy allows
// it. field is the connector field the reference belongs to. Errors wrap
// ErrCredentials, name the field, the variable or path and, for a
// refusal, the setting to change; they never hold the material.
func (p *Policy) ResolveRef(field string, ref *delegatev1.SecretRef) (string, error) {
	if ref == nil || ref.GetRef() == nil {
		return "", credentialField(field, "is required")
	}
	var v string
	switch x := ref.GetRef().(type) {
	case *delegatev1.SecretRef_Value:
		v = x.Value
	case *delegatev1.SecretRef_Env:
		name := strings.TrimSpace(x.Env)
		if name == "" {
			return "", credentialField(field, "env reference names no variable")
		}
		if err := p.allowEnv(field, name); err != nil {
			return "", err
		}
		val, ok := os.LookupEnv(name)
		if !ok {
			return "", credentialField(field, "env var %s is not set", name)
		}
		if p.holdsWithheld(val) {
			return "", refused(field, ErrCredentials, "env:%s is refused: it holds the host's own token", short(name))
		}
		v = val
	case *delegatev1.SecretRef_File:
		b, err := p.readFile(field, strings.TrimSpace(x.File))
		if err != nil {
			return "", err
		}
		v = string(b)
	}
	v = strings.TrimSpace(v)
	if v == "" {
		return "", credentialField(field, "is empty")
	}
	return v, nil
}

func (p *Policy) allowEnv(field, name string) error {
	k := p.keyset()
	if strings.HasPrefix(strings.ToUpper(name), "SMD_") {
		return refused(field, ErrCredentials, "env:%s is refused: SMD_* variables configure smd itself and are never read for a connector", short(name))
	}
	if k.Env == "" {
		return refused(field, ErrCredentials, "env:%s is refused: env: references are never read here (%s has no allow-list for them)", short(name), k.Config)
	}
	if p == nil || !allowlist.MatchEnv(p.env, name) {
		return refused(field, ErrCredentials, "env:%s is refused: %s does not allow it (%s)", short(name), k.Config, k.Env)
	}
	return nil
}

// readFile reads a file: reference after the policy allowed it: an
// absolute path matching an allowed glob, not a protected file (by path,
// or by identity through links), a regular file of at most
// MaxRefFileSize bytes, and not holding withheld material.
func (p *Policy) readFile(field, path string) ([]byte, error) {
	k := p.keyset()
	if path == "" {
		return nil, credentialField(field, "file reference names no path")
	}
	if !filepath.IsAbs(path) {
		return nil, credentialField(field, "file:%s must be an absolute path", short(path))
	}
	clean := filepath.Clean(path)
	if k.Files == "" {
		return nil, refused(field, ErrCredentials, "file:%s is refused: file: references are never read here (%s has no allow-list for them)", short(path), k.Config)
	}
	if p == nil || !allowlist.MatchFile(p.files, clean) {
		return nil, refused(field, ErrCredentials, "file:%s is refused: %s does not allow it (%s)", short(path), k.Config, k.Files)
	}
	if p.isProtected(clean) {
		return nil, refused(field, ErrCredentials, "file:%s is refused: it is the host's own token, key or config file, never read for a connector", short(path))
	}
	// Stat first: opening a FIFO would block until a writer comes.
	fi, err := os.Stat(clean)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, credentialField(field, "file %s does not exist", short(path))
	case errors.Is(err, fs.ErrPermission):
		return nil, credentialField(field, "file %s is not readable by the delegate", short(path))
	case err != nil:
		return nil, credentialField(field, "file %s cannot be read", short(path))
	case !fi.Mode().IsRegular():
		return nil, credentialField(field, "file %s is not a regular file", short(path))
	case fi.Size() > MaxRefFileSize:
		return nil, credentialField(field, "file %s is larger than %d bytes", short(path), MaxRefFileSize)
	}
	f, err := os.Open(clean)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return nil, credentialField(field, "file %s is not readable by the delegate", short(path))
		}
		return nil, credentialField(field, "file %s cannot be read", short(path))
	}
	defer f.Close()
	// The file read is the one checked: a swap after the Stat above is
	// caught here.
	if ofi, err := f.Stat(); err != nil || !ofi.Mode().IsRegular() || !os.SameFile(fi, ofi) {
		return nil, credentialField(field, "file %s changed while it was read", short(path))
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxRefFileSize+1))
	if err != nil {
		return nil, credentialField(field, "file %s cannot be read", short(path))
	}
	if len(b) > MaxRefFileSize {
		return nil, credentialField(field, "file %s is larger than %d bytes", short(path), MaxRefFileSize)
	}
	if p.holdsWithheld(string(b)) {
		return nil, refused(field, ErrCredentials, "file:%s is refused: it holds the host's own token", short(path))
	}
	return b, nil
}

// isProtected reports whether path is a protected file: the same path,
// or the same file reached through a symbolic or hard link.
func (p *Policy) isProtected(path string) bool {
	if p == nil || len(p.protected) == 0 {
		return false
	}
	fi, statErr := os.Stat(path)
	for _, prot := range p.protected {
		if path == filepath.Clean(prot) {
			return true
		}
		if statErr != nil {
			continue
		}
		if pfi, err := os.Stat(prot); err == nil && os.SameFile(fi, pfi) {
			return true
		}
	}
	return false
}

func (p *Policy) holdsWithheld(v string) bool {
	if p == nil {
		return false
	}
	for _, w := range p.withheld {
		if strings.Contains(v, w) {
			return true
		}
	}
	return false
}

// Services whose endpoints a connector may set, and the AWS host names
// that are theirs. The region label must look like a region, so that no
// other AWS-hosted name (a bucket, an instance, an API) can pass for one.
const (
	serviceSecretsManager = "secretsmanager"
	serviceSTS            = "sts"
)

var awsHosts = map[string]*regexp.Regexp{
	serviceSecretsManager: regexp.MustCompile(`^(secretsmanager(-fips)?\.` + regionPattern + `\.(amazonaws\.com|amazonaws\.com\.cn|api\.aws)` +
		`|vpce-[a-z0-9-]+\.secretsmanager\.` + regionPattern + `\.vpce\.amazonaws\.com(\.cn)?)$`),
	serviceSTS: regexp.MustCompile(`^(sts\.amazonaws\.com|sts(-fips)?\.` + regionPattern + `\.(amazonaws\.com|amazonaws\.com\.cn|api\.aws)` +
		`|vpce-[a-z0-9-]+\.sts\.` + regionPattern + `\.vpce\.amazonaws\.com(\.cn)?)$`),
}

// regionPattern is an AWS region (us-east-1, us-gov-west-1, cn-north-1),
// the manager's rule for a connector's region.
const regionPattern = `[a-z]{2}(-[a-z]+)+-[0-9]+`

var regionRE = regexp.MustCompile(`^` + regionPattern + `$`)

// IsAWSEndpoint reports whether u is one of AWS's own endpoints of
// service ("secretsmanager" or "sts"): https on the default port, a host
// AWS names for that service, and no path.
func IsAWSEndpoint(service string, u *url.URL) bool {
	re := awsHosts[service]
	if re == nil || u == nil || u.Scheme != "https" || (u.Port() != "" && u.Port() != "443") {
		return false
	}
	if u.Path != "" && u.Path != "/" {
		return false
	}
	return re.MatchString(strings.TrimSuffix(strings.ToLower(u.Hostname()), "."))
}

// endpoint checks a connector's endpoint URL for service and returns it
// as the SDK is to use it. "" (the SDK's default, from the region) is
// always allowed; anything else must be an absolute http(s) URL without
// user information, query, fragment or dot segments, and either AWS's own
// endpoint for the service or allowed by the policy.
func (p *Policy) endpoint(field, service, raw string) (string, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return "", nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" {
		return "", invalidField(field, "must be an absolute http or https URL")
	}
	if u.User != nil {
		return "", invalidField(field, "must not carry user information")
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return "", invalidField(field, "must not carry a query or a fragment")
	}
	if allowlist.HasDotSegments(u.Path) {
		return "", invalidField(field, "must not hold \".\" or \"..\" path segments")
	}
	if IsAWSEndpoint(service, u) {
		return raw, nil
	}
	if p != nil {
		for _, e := range p.endpoints {
			if e.Allows(u) {
				return raw, nil
			}
		}
	}
	k := p.keyset()
	what := "AWS Secrets Manager"
	if service == serviceSTS {
		what = "AWS STS"
	}
	if k.Endpoints == "" {
		return "", refused(field, ErrInvalidSettings, "%s is refused: it is not an %s endpoint, and no other is allowed here", short(raw), what)
	}
	return "", refused(field, ErrInvalidSettings, "%s is refused: it is not an %s endpoint and %s does not allow it (%s)", short(raw), what, k.Config, k.Endpoints)
}

// maxQuoted bounds how much of a reference or URL a message quotes.
const maxQuoted = 128

// short returns s for a message: at most maxQuoted bytes, control
// characters escaped.
func short(s string) string {
	cut := len(s) > maxQuoted
	if cut {
		s = s[:maxQuoted]
	}
	q := fmt.Sprintf("%q", s)
	q = q[1 : len(q)-1]
	if cut {
		q += "..."
	}
	return q
}
