package awsauth

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error this package returns wraps exactly one of them,
// so callers translate with errors.Is and never by matching text.
var (
	// ErrInvalidSettings: a connector field has a value that can never work
	// (a duration out of range, a malformed endpoint URL, no region). The
	// caller maps it to INVALID_ARGUMENT.
	ErrInvalidSettings = errors.New("invalid connector settings")

	// ErrCredentials: credential material could not be resolved on this host
	// (an env var not set, a file not readable) or the AWS credential provider
	// failed (STS refused, instance metadata unreachable). The caller maps it
	// to CREDENTIALS.
	ErrCredentials = errors.New("credentials unavailable")

	// ErrNotAllowed refines both: the host's Policy refused an env: or
	// file: reference or an endpoint. errors.Is(err, ErrNotAllowed) holds
	// beside the kind; the message names the setting to change.
	ErrNotAllowed = errors.New("not allowed by the host's policy")
)

// FieldError says which connector field is wrong and why. Its message names
// the field ("connector.access_key_id: env var AWS_KEY_X is not set") and
// never holds the field's value.
type FieldError struct {
	// Field is the setting in proto naming, e.g. "connector.access_key_id",
	// or the delegate's environment variable, e.g. "AWS_CA_BUNDLE".
	Field string
	// Reason is the rule or the failure, safe to show.
	Reason string
	// Kind is ErrInvalidSettings or ErrCredentials.
	Kind error
	// NotAllowed: the host's Policy refused the value (ErrNotAllowed).
	NotAllowed bool
}

// Error returns "field: reason".
func (e *FieldError) Error() string {
	return fmt.Sprintf("%s: %s", e.Field, e.Reason)
}

// Unwrap returns the sentinel kind.
func (e *FieldError) Unwrap() error { return e.Kind }

// Is makes errors.Is(err, ErrNotAllowed) true for a policy refusal.
func (e *FieldError) Is(target error) bool { return e.NotAllowed && target == ErrNotAllowed }

func invalidField(field, format string, args ...any) error {
	return &FieldError{Field: "connector." + field, Reason: fmt.Sprintf(format, args...), Kind: ErrInvalidSettings}
}

// refused is a FieldError of kind for a value the host's Policy refuses.
func refused(field string, kind error, format string, args ...any) error {
	return &FieldError{Field: "connector." + field, Reason: fmt.Sprintf(format, args...), Kind: kind, NotAllowed: true}
}

func credentialField(field, format string, args ...any) error {
	return &FieldError{Field: "connector." + field, Reason: fmt.Sprintf(format, args...), Kind: ErrCredentials}
}

// CredentialError marks a failure of the credential provider while the SDK
// was signing a request (an AssumeRole refused, IMDS unreachable, a web
// identity token rejected). The SDK wraps it in its operation error; callers
// find it with errors.As and map it to CREDENTIALS, ahead of any AWS error
// code inside it (an STS AccessDenied is a credentials problem, not a
// Secrets Manager permission problem).
//
// Its message is the provider's error as the SDK wrote it; callers sanitize
// it before showing it, as they do every AWS message.
type CredentialError struct {
	// CredentialType names the connector's credential type, e.g. "ASSUME_ROLE".
	CredentialType string
	Err            error
}

// Error names the credential type and quotes the provider's error.
func (e *CredentialError) Error() string {
	return fmt.Sprintf("%s credentials: %v", e.CredentialType, e.Err)
}

// Unwrap returns the provider's error.
func (e *CredentialError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrCredentials) true for a CredentialError.
func (e *CredentialError) Is(target error) bool { return target == ErrCredentials }
