package tasks

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	delegatev1 "github.com/smdelegate/smdelegate/proto/delegate/v1"
)

// SplitRef splits a get's name into the secret name and the JSON reference
// after the first '#': "db#password" -> ("db", "password", true). '#' is not
// a valid secret name character, so the split is unambiguous.
func SplitRef(s string) (name, ref string, ok bool) {
	name, ref, ok = strings.Cut(s, "#")
	return name, ref, ok
}

// Limits of a JSON reference (the part of a get's name after '#'). A
// reference beyond them is refused before AWS is called; CheckJSONRef is
// the rule, for the manager to apply at the edge too.
const (
	// MaxJSONRefLen is the longest reference, in bytes.
	MaxJSONRefLen = 1024
	// MaxJSONRefLevels is the most dot-separated parts a reference has,
	// so the deepest object it can reach.
	MaxJSONRefLevels = 64
	// MaxJSONRefSteps bounds the keys one resolution looks up: twice what
	// the deepest reference needs without backtracking (64+63+...+1 =
	// 2,080), so backtracking through literal dotted keys is allowed but
	// cannot multiply. A reference that needs more is refused.
	MaxJSONRefSteps = 4096
	// maxQuotedRef is how much of a reference an error quotes.
	maxQuotedRef = 64
)

// CheckJSONRef checks a JSON reference against the limits. The error is
// INVALID_ARGUMENT on the field "name" and quotes at most a short prefix
// of the reference.
func CheckJSONRef(ref string) *Error {
	switch {
	case ref == "":
		return invalid("name", "the JSON key after '#' is empty")
	case len(ref) > MaxJSONRefLen:
		return invalid("name", fmt.Sprintf("the JSON key after '#' (%s) is %d bytes; at most %d are allowed", quoteRef(ref), len(ref), MaxJSONRefLen))
	case strings.Count(ref, ".")+1 > MaxJSONRefLevels:
		return invalid("name", fmt.Sprintf("the JSON key after '#' (%s) has %d dot-separated parts; at most %d are allowed",
			quoteRef(ref), strings.Count(ref, ".")+1, MaxJSONRefLevels))
	}
	return nil
}

// quoteRef quotes ref for a message: at most maxQuotedRef bytes of it.
func quoteRef(ref string) string {
	if len(ref) <= maxQuotedRef {
		return fmt.Sprintf("%q", ref)
	}
	return fmt.Sprintf("%q...", strings.ToValidUTF8(ref[:maxQuotedRef], ""))
}

// ExtractJSON returns the value at ref in the JSON object doc. ref is a key,
// or a dotted path of keys into nested objects ("a.b.c"). At every level a
// literal key equal to the whole remaining reference wins over reading it as
// a path, so {"a.b": 1, "a": {"b": 2}} gives 1 for "a.b". Otherwise the
// reference is split at a dot, trying the longest literal key first, and
// the next shorter one when a split leads nowhere.
//
// The walk is bounded (see refWalker): ref must pass CheckJSONRef, at most
// MaxJSONRefSteps keys are looked up, and each object is decoded at most
// once, so the work is at most MaxJSONRefSteps lookups of at most
// MaxJSONRefLen bytes plus MaxJSONRefLevels passes over doc.
//
// A string value is returned as is; any other value (number, bool, null,
// object, array) as compact JSON.
//
// Errors never contain doc or any part of it, and quote at most a short
// prefix of ref: a reference beyond the limits, a document that is not
// JSON or not an object, or a walk over its bound is INVALID_ARGUMENT, a
// missing key NOT_FOUND.
func ExtractJSON(doc []byte, ref string) (string, *Error) {
	v, _, err := extractJSON(doc, ref)
	return v, err
}

// extractJSON is ExtractJSON; it also reports the walk's lookups.
func extractJSON(doc []byte, ref string) (string, *refWalker, *Error) {
	if err := CheckJSONRef(ref); err != nil {
		return "", nil, err
	}
	q := quoteRef(ref)
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(doc, &obj); err != nil || obj == nil {
		if !json.Valid(doc) {
			return "", nil, invalid("name", fmt.Sprintf("JSON key %s given but the secret's value is not JSON", q))
		}
		return "", nil, invalid("name", fmt.Sprintf("JSON key %s given but the secret's value is not a JSON object", q))
	}
	w := &refWalker{ref: ref}
	raw, found, notObject := w.walk(obj, 0)
	switch {
	case w.exceeded:
		return "", w, invalid("name", fmt.Sprintf("JSON key %s: the secret's keys make it ambiguous beyond %d lookups; "+
			"use fewer dotted keys in the secret or a shorter reference", q, MaxJSONRefSteps))
	case !found && notObject > 0:
		return "", w, invalid("name", fmt.Sprintf("JSON key %s: the value at %s is not a JSON object", q, quoteRef(ref[:notObject])))
	case !found:
		return "", w, newError(delegatev1.Code_NOT_FOUND, "JSON key %s not found in the secret", q)
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", w, invalid("name", fmt.Sprintf("JSON key %s: the value is not a valid JSON string", q))
		}
		return s, w, nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return "", w, invalid("name", fmt.Sprintf("JSON key %s: the value is not valid JSON", q))
	}
	return buf.String(), w, nil
}

// refWalker resolves one reference. Its bound, for a reference that
// passed CheckJSONRef:
//
//   - steps (map lookups) <= MaxJSONRefSteps: counted, and the walk stops
//     (exceeded) past it. Each lookup hashes a substring of ref, at most
//     MaxJSONRefLen bytes, and allocates nothing.
//   - No state is visited twice, so a memo table would never hit: a state
//     is (object, offset in ref), and an object of a JSON tree is reached
//     by one key path only, whose keys fix the offset.
//   - decoded (bytes of JSON decoded below the top level) <=
//     MaxJSONRefLevels * len(doc): each object or value tried is decoded
//     once, those at one depth are disjoint parts of doc, and every level
//     consumes at least one of the reference's MaxJSONRefLevels parts.
type refWalker struct {
	ref      string
	steps    int
	decoded  int
	exceeded bool
}

// lookup is one counted map lookup.
func (w *refWalker) lookup(obj map[string]json.RawMessage, key string) (json.RawMessage, bool) {
	if w.steps >= MaxJSONRefSteps {
		w.exceeded = true
		return nil, false
	}
	w.steps++
	v, ok := obj[key]
	return v, ok
}

// walk resolves w.ref[start:] in obj. When no resolution exists and a
// prefix of the reference named a value that is not an object, notObject
// is the end of the first such prefix in w.ref (0: none), so the error can
// say why.
func (w *refWalker) walk(obj map[string]json.RawMessage, start int) (raw json.RawMessage, found bool, notObject int) {
	path := w.ref[start:]
	if v, ok := w.lookup(obj, path); ok {
		return v, true, 0
	}
	for i := strings.LastIndexByte(path, '.'); i >= 0 && !w.exceeded; i = strings.LastIndexByte(path[:i], '.') {
		v, ok := w.lookup(obj, path[:i])
		if !ok {
			continue
		}
		w.decoded += len(v)
		var child map[string]json.RawMessage
		if err := json.Unmarshal(v, &child); err != nil || child == nil {
			if notObject == 0 {
				notObject = start + i
			}
			continue
		}
		if raw, found, no := w.walk(child, start+i+1); found {
			return raw, true, 0
		} else if no > 0 && notObject == 0 {
			notObject = no
		}
	}
	return nil, false, notObject
}
