package connector

import (
	"errors"
	"regexp"
	"strings"
)

// Kinds of secret reference.
const (
	// KindPlain is a value given in the clear (allowed for access_key_id only).
	KindPlain = "plain"
	// KindBuiltin names a credential stored by the manager (smd credential
	// put), sealed at rest and decrypted only into the task that needs it.
	KindBuiltin = "builtin"
	// KindEnv names an environment variable read on the delegate's host.
	KindEnv = "env"
	// KindFile names a file read on the delegate's host.
	KindFile = "file"
)

// Limits of references.
const (
	MaxBuiltinNameLen = 128
	MaxEnvNameLen     = 256
	MaxFilePathLen    = 4096
)

// Ref is a parsed access_key_id or secret_access_key: Kind is one of
// KindPlain, KindBuiltin, KindEnv or KindFile; Value is the plaintext, the
// builtin credential's name, the variable's name or the absolute path.
type Ref struct {
	Kind  string
	Value string
}

// Rules of references, as they appear in errors.
const (
	ruleRefForms   = "use builtin:NAME, env:VAR or file:/absolute/path"
	ruleBuiltin    = "builtin:NAME needs a NAME that starts with a letter or _ and contains only letters, digits, _, - and . (at most 128 characters)"
	ruleEnv        = "env:VAR needs a VAR that starts with a letter or _ and contains only letters, digits and _ (at most 256 characters)"
	ruleFile       = "file:PATH needs an absolute path starting with / (at most 4096 characters)"
	ruleUnknownRef = "is not a known kind of reference; " + ruleRefForms
)

var (
	// builtinNameRE is the identifier rule widened by - and ., so names
	// such as aws-prod or prod.aws read naturally.
	builtinNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]{0,127}$`)
	envNameRE     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,255}$`)
	// schemeRE matches something that looks like a reference scheme, so a
	// typo (buitlin:aws) is refused instead of being taken as plaintext.
	schemeRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*:`)
)

// ParseRef parses a credential field: "builtin:NAME", "env:VAR",
// "file:/absolute/path", or anything else as a plaintext value. The kind
// prefix is case-insensitive and whitespace around s and around the name is
// trimmed.
//
// A value that starts like a scheme ("word:") but names no known kind is an
// error rather than plaintext: AWS access key ids and secret keys never
// contain a colon, so it is almost certainly a mistyped reference. Builtin
// names follow the identifier rule with - and . also allowed (NAME must
// start with a letter or _; at most 128 characters); env names are POSIX
// variable names.
//
// Errors state the rule only and never repeat s, which may be a secret.
// The empty string is an error.
func ParseRef(s string) (Ref, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Ref{}, errors.New("must not be empty")
	}
	scheme, rest, ok := strings.Cut(s, ":")
	if !ok || !schemeRE.MatchString(s) {
		return Ref{Kind: KindPlain, Value: s}, nil
	}
	rest = strings.TrimSpace(rest)
	switch strings.ToLower(scheme) {
	case KindBuiltin:
		if !builtinNameRE.MatchString(rest) {
			return Ref{}, errors.New(ruleBuiltin)
		}
		return Ref{Kind: KindBuiltin, Value: rest}, nil
	case KindEnv:
		if !envNameRE.MatchString(rest) {
			return Ref{}, errors.New(ruleEnv)
		}
		return Ref{Kind: KindEnv, Value: rest}, nil
	case KindFile:
		if !strings.HasPrefix(rest, "/") || len(rest) > MaxFilePathLen || strings.ContainsRune(rest, 0) {
			return Ref{}, errors.New(ruleFile)
		}
		return Ref{Kind: KindFile, Value: rest}, nil
	}
	return Ref{}, errors.New(ruleUnknownRef)
}

// String formats a reference for messages and logs: "builtin:NAME",
// "env:VAR" or "file:/path". A plaintext value is never printed: it reads
// "plaintext (redacted)", so a Ref formatted with %v or %s cannot leak it.
func (r Ref) String() string {
	switch r.Kind {
	case KindBuiltin, KindEnv, KindFile:
		return r.Kind + ":" + r.Value
	case KindPlain:
		return "plaintext (redacted)"
	}
	return "(no reference)"
}

// GoString is String, so %#v does not print a plaintext value either.
func (r Ref) GoString() string { return r.String() }
