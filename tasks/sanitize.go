package tasks

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strings"
)

// RequestToken derives the ClientRequestToken of a task's write from the task
// id alone: the hex SHA-256 of the id, 64 characters (Secrets Manager takes
// 32-64). A task re-run after a lost lease sends the same token, so AWS
// treats the repeat as the same request and creates no second version.
func RequestToken(taskID string) string {
	sum := sha256.Sum256([]byte(taskID))
	return hex.EncodeToString(sum[:])
}

// redacted replaces whatever sanitize removes.
const redacted = "[REDACTED]"

// minRedactLen is the shortest planted secret sanitize replaces in place.
// A shorter secret would match inside ordinary words, so only a whole-word
// occurrence of one counts, and it drops the message whole.
const minRedactLen = 6

// Patterns of credential material that must never reach a message or log,
// whatever produced the text (an AWS error message, an SDK error chain).
var secretPatterns = []*regexp.Regexp{
	// SigV4 pieces: Authorization header, presigned query, signature values.
	regexp.MustCompile(`(?i)(signature|x-amz-signature|x-amz-security-token|x-amz-credential|credential|authorization|sessiontoken|session_token|secretaccesskey|secret_access_key|token)(["']?\s*=\s*["']?|["']\s*:\s*["']?)[^\s,;&"'}]+`),
	// Access key ids (long-term AKIA, temporary ASIA, and other IAM ids).
	regexp.MustCompile(`\b(AKIA|ASIA|AROA|AIDA|ABIA|ACCA)[A-Z0-9]{12,}\b`),
	// JSON Web Tokens (OIDC identity tokens).
	regexp.MustCompile(`\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*`),
}

// opaqueRun matches long base64-like runs; mixedRun decides which of them
// look like keys or tokens (digits and both cases) rather than long names.
var opaqueRun = regexp.MustCompile(`[A-Za-z0-9+/]{32,}={0,2}`)

func mixedRun(s string) bool {
	var digit, upper, lower bool
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			digit = true
		case c >= 'A' && c <= 'Z':
			upper = true
		case c >= 'a' && c <= 'z':
			lower = true
		}
	}
	return digit && upper && lower
}

// sanitize removes from s every secret in secrets (values and credentials
// the task holds) and everything that looks like credential material. A
// secret shorter than minRedactLen found in s makes sanitize return
// fallback: replacing it would mangle the text, and keeping it would leak.
func sanitize(s, fallback string, secrets ...string) string {
	for _, sec := range secrets {
		if sec == "" || !strings.Contains(s, sec) {
			continue
		}
		if len(sec) < minRedactLen {
			// Short: only a whole-word occurrence counts, and then the
			// message is dropped rather than mangled.
			if regexp.MustCompile(`(^|[^A-Za-z0-9])` + regexp.QuoteMeta(sec) + `($|[^A-Za-z0-9])`).MatchString(s) {
				return fallback
			}
			continue
		}
		s = strings.ReplaceAll(s, sec, redacted)
	}
	for _, re := range secretPatterns[:1] {
		s = re.ReplaceAllString(s, "${1}${2}"+redacted)
	}
	for _, re := range secretPatterns[1:] {
		s = re.ReplaceAllString(s, redacted)
	}
	s = opaqueRun.ReplaceAllStringFunc(s, func(m string) string {
		if mixedRun(m) {
			return redacted
		}
		return m
	})
	// Bound what an AWS message can contribute.
	if r := []rune(s); len(r) > 512 {
		s = string(r[:512]) + "..."
	}
	return s
}
