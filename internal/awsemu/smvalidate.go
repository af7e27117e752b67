package awsemu

import (
	"slices"
	"strings"
)

// Secrets Manager's input checks and error values, as AWS answers them
// (aws-semantics.md).

func errValidation(format string, args ...any) *apiError {
	return errf(400, "ValidationException", format, args...)
}

func errInvalidParameter(format string, args ...any) *apiError {
	return errf(400, "InvalidParameterException", format, args...)
}

func errInvalidRequest(format string, args ...any) *apiError {
	return errf(400, "InvalidRequestException", format, args...)
}

func errNotFound() *apiError {
	return errf(400, "ResourceNotFoundException", "Secrets Manager can't find the specified secret.")
}

func errMarkedForDeletion() *apiError {
	return errInvalidRequest("You can't perform this operation on the secret because it was marked for deletion.")
}

func errMissingToken() *apiError {
	return errInvalidRequest("You must provide a ClientRequestToken value. We recommend a UUID-type value.")
}

func errVersionExists() *apiError {
	return errf(400, "ResourceExistsException", "You can't modify an existing version, you can only create a new version.")
}

func validateName(name string) *apiError {
	if len(name) < 1 || len(name) > 512 {
		return errValidation("1 validation error detected: Value at 'name' failed to satisfy constraint: " +
			"Member must have length between 1 and 512")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		ok := 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || strings.IndexByte("/_+=.@-", c) >= 0
		if !ok {
			return errValidation("Invalid name. Must be a valid name containing alphanumeric characters, or any of the following: -/_+=.@!")
		}
	}
	return nil
}

func validateSecretID(id *string) *apiError {
	if id == nil || *id == "" {
		return errValidation("1 validation error detected: Value at 'secretId' failed to satisfy constraint: Member must not be null")
	}
	if len(*id) > 2048 {
		return errValidation("1 validation error detected: Value at 'secretId' failed to satisfy constraint: " +
			"Member must have length less than or equal to 2048")
	}
	return nil
}

func validateToken(token *string) *apiError {
	if token != nil && (len(*token) < 32 || len(*token) > 64) {
		return errValidation("1 validation error detected: Value at 'clientRequestToken' failed to satisfy constraint: " +
			"Member must have length between 32 and 64")
	}
	return nil
}

// validateValue checks SecretString/SecretBinary and reports whether the
// request carries a value.
func validateValue(in *smInput) (bool, *apiError) {
	if in.SecretString != nil && in.SecretBinary != nil {
		return false, errInvalidParameter("You can't specify both a binary secret value and a string secret value in the same secret.")
	}
	switch {
	case in.SecretString != nil && (len(*in.SecretString) < 1 || len(*in.SecretString) > 65536):
		return false, errValidation("1 validation error detected: Value at 'secretString' failed to satisfy constraint: " +
			"Member must have length between 1 and 65536")
	case in.SecretBinary != nil && (len(in.SecretBinary) < 1 || len(in.SecretBinary) > 65536):
		return false, errValidation("1 validation error detected: Value at 'secretBinary' failed to satisfy constraint: " +
			"Member must have length between 1 and 65536")
	}
	return in.SecretString != nil || in.SecretBinary != nil, nil
}

func validateMetadata(in *smInput) *apiError {
	if in.Description != nil && len(*in.Description) > 2048 {
		return errValidation("1 validation error detected: Value at 'description' failed to satisfy constraint: " +
			"Member must have length less than or equal to 2048")
	}
	if in.KmsKeyID != nil && len(*in.KmsKeyID) > 2048 {
		return errValidation("1 validation error detected: Value at 'kmsKeyId' failed to satisfy constraint: " +
			"Member must have length less than or equal to 2048")
	}
	return nil
}

func validateTags(tags []tag) *apiError {
	if len(tags) > 50 {
		return errValidation("1 validation error detected: Value at 'tags' failed to satisfy constraint: " +
			"Member must have length less than or equal to 50")
	}
	for _, t := range tags {
		if len(t.Key) < 1 || len(t.Key) > 128 {
			return errValidation("1 validation error detected: Value at 'tags.member.key' failed to satisfy constraint: " +
				"Member must have length between 1 and 128")
		}
		if len(t.Value) > 256 {
			return errValidation("1 validation error detected: Value at 'tags.member.value' failed to satisfy constraint: " +
				"Member must have length less than or equal to 256")
		}
		if strings.HasPrefix(strings.ToLower(t.Key), "aws:") {
			return errInvalidParameter("You can't modify system tags. Tag key: '%s'.", t.Key)
		}
	}
	return nil
}

func tagLimit(sec *secret, adding []tag) *apiError {
	merged := &secret{tags: slices.Clone(sec.tags)}
	merged.setTags(adding)
	if len(merged.tags) > 50 {
		return errValidation("A secret can have at most 50 tags; this request would give it %d.", len(merged.tags))
	}
	return nil
}
