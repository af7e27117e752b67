package api

import (
	"errors"
	"strings"
	"unicode/utf8"

	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/manager/connector"
	"github.com/smdelegate/smdelegate/manager/scopes"
	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
	"github.com/smdelegate/smdelegate/tasks"
)

// Validation at the edge: every field of an operator request that reaches
// the store, a task or a log is checked before anything is stored or
// looked up, with the rule the rest of the system applies (connector's
// for identifiers, scopes and credential names, tasks.Validate for secret
// operations: one rule each, never a copy), and refused as
// InvalidArgument naming the field by its proto name, which is the YAML
// key an operator writes (scope.org, connector.identifier, create.name).
// Authorization comes after: refusing a malformed request reveals nothing.

// maxCredentialBytes bounds a builtin credential's value.
const maxCredentialBytes = 65536

// validScope checks the scope a request names in field ("scope",
// "ref.scope"): the zero scope names none (the request's default) and is
// accepted. Errors name the parts under field: "ref.scope.org".
func validScope(field string, s *delegatev1.Scope) error {
	if scopes.FromProto(s).IsZero() {
		return nil
	}
	return underField(field, "scope", connector.ValidateScope(s))
}

// validRef checks a connector reference held in field ("ref",
// "connector"): its scope, and its identifier, which may be empty (the
// scope's default connector) unless required.
func validRef(field string, ref *delegatev1.ConnectorRef, required bool) error {
	return errors.Join(
		validScope(field+".scope", ref.GetScope()),
		connector.ValidateIdentifier(field+".identifier", ref.GetIdentifier(), required),
	)
}

// validCredential checks a credential named by scope and name; with value
// (PutCredential) the value too: 1 to 65,536 bytes of UTF-8, since it
// reaches a delegate as a string field of the task.
func validCredential(scope *delegatev1.Scope, name string, value []byte, withValue bool) error {
	errs := []error{validScope("scope", scope), connector.ValidateCredentialName("name", name)}
	if withValue {
		switch n := len(value); {
		case n == 0 || n > maxCredentialBytes:
			errs = append(errs, config.Errf("value", "must be 1 to 65,536 bytes"))
		case !utf8.Valid(value):
			errs = append(errs, config.Errf("value", "must be UTF-8 text (a credential reaches delegates as text)"))
		}
	}
	return errors.Join(errs...)
}

// validSecretTask checks a secret operation against connector c with the
// delegate's own rules (tasks.Validate), before the task is stored. The
// field is named under the request's operation: "create.name".
func validSecretTask(st *delegatev1.SecretTask, c *delegatev1.Connector) error {
	check := &delegatev1.SecretTask{Op: st.GetOp(), Connector: &delegatev1.ConnectorSettings{
		Id:                         c.GetIdentifier(),
		SecretNamePrefix:           c.GetSecretNamePrefix(),
		KmsKeyId:                   c.GetKmsKeyId(),
		ManagedByTagKey:            c.GetManagedByTagKey(),
		RecoveryWindowDays:         c.GetRecoveryWindowDays(),
		ForceDeleteWithoutRecovery: c.GetForceDeleteWithoutRecovery(),
	}}
	err := tasks.Validate(check)
	if err == nil {
		return nil
	}
	field := err.Field
	if field == "" {
		field = "op"
	}
	if err.Op != "" && field != "op" {
		field = err.Op + "." + field
	}
	return config.Errf(field, "%s", err.Rule())
}

// underField renames the fields of err's *config.FieldErrors that start
// with from to start with to instead ("scope.org" → "ref.scope.org").
func underField(to, from string, err error) error {
	if err == nil || to == from {
		return err
	}
	var out []error
	for _, e := range config.Flatten(err) {
		var fe *config.FieldError
		if errors.As(e, &fe) {
			if rest, ok := strings.CutPrefix(fe.Field, from); ok {
				e = &config.FieldError{Field: to + rest, Rule: fe.Rule}
			}
		}
		out = append(out, e)
	}
	return errors.Join(out...)
}
