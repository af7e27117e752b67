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

// ExtractJSON returns the value at ref in the JSON object doc. ref is a key,
// or a dotted path of keys into nested objects ("a.b.c"). At every level a
// literal key equal to the whole remaining reference wins over reading it as
// a path, so {"a.b": 1, "a": {"b": 2}} gives 1 for "a.b". Otherwise the
// reference is split at a dot, trying the longest literal key first.
//
// A string value is returned as is; any other value (number, bool, null,
// object, array) as compact JSON.
//
// Errors never contain doc or any part of it: a document that is not JSON
// or not an object is INVALID_ARGUMENT, a missing key NOT_FOUND; both name
// only the reference.
func ExtractJSON(doc []byte, ref string) (string, *Error) {
	if ref == "" {
		return "", invalid("name", "the JSON key after '#' is empty")
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(doc, &obj); err != nil || obj == nil {
		if !json.Valid(doc) {
			return "", invalid("name", fmt.Sprintf("JSON key %q given but the secret's value is not JSON", ref))
		}
		return "", invalid("name", fmt.Sprintf("JSON key %q given but the secret's value is not a JSON object", ref))
	}
	raw, found, notObject := lookup(obj, ref)
	if !found {
		if notObject != "" {
			return "", invalid("name", fmt.Sprintf("JSON key %q: the value at %q is not a JSON object", ref, notObject))
		}
		return "", newError(delegatev1.Code_NOT_FOUND, "JSON key %q not found in the secret", ref)
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", invalid("name", fmt.Sprintf("JSON key %q: the value is not a valid JSON string", ref))
		}
		return s, nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return "", invalid("name", fmt.Sprintf("JSON key %q: the value is not valid JSON", ref))
	}
	return buf.String(), nil
}

// lookup resolves path in obj. When no resolution exists and a path prefix
// named a value that is not an object, notObject names that prefix (relative
// to obj), so the error can say why.
func lookup(obj map[string]json.RawMessage, path string) (raw json.RawMessage, found bool, notObject string) {
	if v, ok := obj[path]; ok {
		return v, true, ""
	}
	for i := strings.LastIndexByte(path, '.'); i >= 0; i = strings.LastIndexByte(path[:i], '.') {
		head, rest := path[:i], path[i+1:]
		v, ok := obj[head]
		if !ok {
			continue
		}
		var child map[string]json.RawMessage
		if err := json.Unmarshal(v, &child); err != nil || child == nil {
			if notObject == "" {
				notObject = head
			}
			continue
		}
		if raw, found, no := lookup(child, rest); found {
			return raw, true, ""
		} else if no != "" && notObject == "" {
			notObject = head + "." + no
		}
	}
	return nil, false, notObject
}
