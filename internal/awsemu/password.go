package awsemu

import (
	"strings"
)

// The character classes GetRandomPassword draws from.
const (
	pwLower       = "abcdefghijklmnopqrstuvwxyz"
	pwUpper       = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	pwDigits      = "0123456789"
	pwPunctuation = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
)

type randomPasswordOutput struct {
	RandomPassword string `json:"RandomPassword"`
}

// getRandomPassword generates a password with crypto/rand. With
// RequireEachIncludedType (the default) it holds at least one character of
// each included class among lowercase, uppercase, digits and punctuation; a
// space, when included, is never required.
func (s *Server) getRandomPassword(in *smInput) (any, *apiError) {
	length := int64(32)
	if in.PasswordLength != nil {
		length = *in.PasswordLength
	}
	if length < 1 || length > 4096 {
		return nil, errValidation("1 validation error detected: Value '%d' at 'passwordLength' failed to satisfy constraint: "+
			"Member must have value between 1 and 4096", length)
	}
	exclude := ""
	if in.ExcludeCharacters != nil {
		exclude = *in.ExcludeCharacters
		if len(exclude) > 4096 {
			return nil, errValidation("1 validation error detected: Value at 'excludeCharacters' failed to satisfy constraint: " +
				"Member must have length less than or equal to 4096")
		}
	}
	flag := func(b *bool, def bool) bool {
		if b == nil {
			return def
		}
		return *b
	}
	keep := func(class string) string {
		return strings.Map(func(r rune) rune {
			if strings.ContainsRune(exclude, r) {
				return -1
			}
			return r
		}, class)
	}

	var required []string // classes that must each appear at least once
	for _, c := range []struct {
		chars    string
		excluded bool
	}{
		{pwLower, flag(in.ExcludeLowercase, false)},
		{pwUpper, flag(in.ExcludeUppercase, false)},
		{pwDigits, flag(in.ExcludeNumbers, false)},
		{pwPunctuation, flag(in.ExcludePunctuation, false)},
	} {
		if chars := keep(c.chars); !c.excluded && chars != "" {
			required = append(required, chars)
		}
	}
	pool := strings.Join(required, "")
	if flag(in.IncludeSpace, false) {
		pool += keep(" ")
	}
	if pool == "" {
		return nil, errInvalidParameter("The password cannot be generated: every character type is excluded.")
	}
	if !flag(in.RequireEachIncludedType, true) {
		required = nil
	}
	if int(length) < len(required) {
		return nil, errInvalidParameter("Password length is too short based on the required types.")
	}

	pw := make([]byte, 0, length)
	for _, class := range required {
		pw = append(pw, class[randIntn(len(class))])
	}
	for int64(len(pw)) < length {
		pw = append(pw, pool[randIntn(len(pool))])
	}
	for i := len(pw) - 1; i > 0; i-- { // Fisher-Yates, so the required characters land anywhere
		j := randIntn(i + 1)
		pw[i], pw[j] = pw[j], pw[i]
	}
	return randomPasswordOutput{RandomPassword: string(pw)}, nil
}
