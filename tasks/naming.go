package tasks

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode/utf8"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// Secrets Manager limits enforced before AWS is called.
const (
	MaxNameLen        = 512
	MaxValueBytes     = 65536
	MaxDescriptionLen = 2048
	MaxKMSKeyIDLen    = 2048
	MaxTags           = 50
	MaxTagKeyLen      = 127
	MaxTagValueLen    = 255
	MinRecoveryDays   = 7
	MaxRecoveryDays   = 30
	DefaultRecovery   = 30
	MaxListResults    = 100
	MaxPasswordLength = 4096
)

// Rules as they appear in error messages.
const (
	ruleName  = "must be 1-512 characters of letters, digits and /_+=.@-"
	ruleValue = "must be 1-65536 bytes"
)

// Prefix is a connector's secret name prefix. The zero value is no prefix.
//
// A prefix is a name prefix, not a folder: "devops" and "mysecret" make
// "devops/mysecret". Slashes at the prefix's ends are trimmed, so "/devops/"
// is the same prefix. Applying is idempotent: a name that already starts
// with the prefix and a slash ("devops/mysecret") is taken as already
// prefixed and is not prefixed again. A secret literally named
// "devops/devops/x" is therefore addressed as "devops/devops/x".
type Prefix string

// NewPrefix normalises a connector's secret_name_prefix.
func NewPrefix(raw string) Prefix {
	return Prefix(strings.Trim(strings.TrimSpace(raw), "/"))
}

// Apply returns the full AWS name for a task's name.
func (p Prefix) Apply(name string) string {
	if p == "" || strings.HasPrefix(name, string(p)+"/") {
		return name
	}
	return string(p) + "/" + name
}

// Strip returns name relative to the prefix, or name unchanged when it is
// not under the prefix.
func (p Prefix) Strip(name string) string {
	if p == "" {
		return name
	}
	return strings.TrimPrefix(name, string(p)+"/")
}

// Has reports whether the full AWS name is under the prefix.
func (p Prefix) Has(name string) bool {
	return p == "" || strings.HasPrefix(name, string(p)+"/")
}

// validName reports whether s is a valid Secrets Manager name.
func validName(s string) bool {
	if len(s) < 1 || len(s) > MaxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("/_+=.@-", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// fullName validates a task's name and returns it prefixed. The field in the
// error is "name".
func fullName(p Prefix, name string) (string, *Error) {
	if name == "" {
		return "", invalid("name", "is required")
	}
	full := p.Apply(name)
	if !validName(full) {
		return "", invalid("name", ruleName)
	}
	return full, nil
}

// secretValue validates a value and returns either its string or its binary
// form. required says whether an absent value is an error.
func secretValue(v *delegatev1.SecretValue, required bool) (str *string, bin []byte, err *Error) {
	if v == nil || v.GetValue() == nil {
		if required {
			return nil, nil, invalid("value", "is required")
		}
		return nil, nil, nil
	}
	switch x := v.GetValue().(type) {
	case *delegatev1.SecretValue_StringValue:
		if n := len(x.StringValue); n < 1 || n > MaxValueBytes {
			return nil, nil, invalid("value", ruleValue)
		}
		s := x.StringValue
		return &s, nil, nil
	case *delegatev1.SecretValue_BinaryValue:
		if n := len(x.BinaryValue); n < 1 || n > MaxValueBytes {
			return nil, nil, invalid("value", ruleValue)
		}
		return nil, x.BinaryValue, nil
	}
	return nil, nil, invalid("value", "has an unknown form")
}

func checkDescription(d string) *Error {
	if utf8.RuneCountInString(d) > MaxDescriptionLen {
		return invalid("description", fmt.Sprintf("must be at most %d characters", MaxDescriptionLen))
	}
	return nil
}

func checkKMSKeyID(k string) *Error {
	if len(k) > MaxKMSKeyIDLen {
		return invalid("kms_key_id", fmt.Sprintf("must be at most %d characters", MaxKMSKeyIDLen))
	}
	return nil
}

// checkTags enforces the tag rules, key by key in order (the same error
// every time). Keys are named in errors; values never.
func checkTags(tags map[string]string) *Error {
	if len(tags) > MaxTags {
		return invalid("tags", fmt.Sprintf("must be at most %d tags", MaxTags))
	}
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		v := tags[k]
		field := fmt.Sprintf("tags[%q]", k)
		if n := utf8.RuneCountInString(k); n < 1 || n > MaxTagKeyLen {
			return invalid(field, fmt.Sprintf("key must be 1-%d characters", MaxTagKeyLen))
		}
		if strings.HasPrefix(strings.ToLower(k), "aws:") {
			return invalid(field, "key must not start with aws:")
		}
		if utf8.RuneCountInString(v) > MaxTagValueLen {
			return invalid(field, fmt.Sprintf("value must be at most %d characters", MaxTagValueLen))
		}
	}
	return nil
}

// checkVersion validates GetSecretOp's version selectors.
func checkVersion(id, stage string) *Error {
	if id != "" && (len(id) < 32 || len(id) > 64) {
		return invalid("version_id", "must be 32-64 characters")
	}
	if len(stage) > 256 {
		return invalid("version_stage", "must be at most 256 characters")
	}
	return nil
}
