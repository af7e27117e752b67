package connector

import (
	"errors"

	"github.com/smdelegate/smdelegate/internal/config"
)

// ruleCredentialName is the rule of a builtin credential's name, the NAME
// of builtin:NAME.
const ruleCredentialName = "must start with a letter or _ and contain only letters, digits, _, - and . (at most 128 characters)"

// ValidateIdentifier checks s, the value of field, against the identifier
// rule (connector identifiers and scope parts): a *config.FieldError, or
// nil. An empty s is "is required" when required, else accepted.
func ValidateIdentifier(field, s string, required bool) error {
	var v validator
	v.identifier(field, s, required)
	return errors.Join(v.errs...)
}

// ValidateCredentialName checks name, the value of field, against the rule
// of builtin credential names (what ParseRef accepts after builtin:): a
// *config.FieldError, or nil.
func ValidateCredentialName(field, name string) error {
	switch {
	case name == "":
		return config.Errf(field, "is required")
	case !builtinNameRE.MatchString(name):
		return config.Errf(field, ruleCredentialName)
	}
	return nil
}
