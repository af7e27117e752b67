package connector

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// TagProblem says what is wrong with a delegate tag or selector as
// written, or returns "" if nothing is. One rule for both, wherever they
// come from (a connector's delegate_selectors, a ping's selectors, an
// agent's tags, name, host name and group, operator tags), because a
// selector is compared with tags:
//
//   - valid UTF-8, and only printable characters and spaces (no NUL or
//     other control characters, which would make two different selector
//     lists look alike in a log or a key);
//   - not empty once trimmed;
//   - not starting with ReservedSelectorPrefix once trimmed and
//     lower-cased (the form tags are compared in), so " SMD:Platform" is
//     as reserved as "smd:platform".
//
// The length limit is the caller's (MaxSelectorLen where one applies).
func TagProblem(s string) string {
	if !utf8.ValidString(s) {
		return "must be valid UTF-8"
	}
	for i, r := range s {
		if !unicode.IsPrint(r) {
			return fmt.Sprintf("must hold only printable characters and spaces (%U at byte %d)", r, i)
		}
	}
	t := strings.TrimSpace(s)
	switch {
	case t == "":
		return "must not be empty"
	case strings.HasPrefix(strings.ToLower(t), ReservedSelectorPrefix):
		return "must not start with " + ReservedSelectorPrefix + " (reserved for smdelegate's own tags)"
	}
	return ""
}
