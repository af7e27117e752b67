// Package configtest holds a shipped configuration file (configs/*.yaml)
// to what it claims: the defaults of its daemon.
//
// The convention, stated at the top of each shipped file, is:
//
//   - every key that is not commented out is set to its built-in default
//     (DefaultConfig()),
//   - except a key whose line ends in a comment that starts with
//     "example" (`cert_file: /etc/smd/tls/manager.crt  # example`): its
//     value is one to replace, and its comment says the default,
//   - and a key that is commented out (`# name: build-01`) has a default
//     that depends on the host.
//
// Every key of the daemon's Config appears in the file, in one of these
// three ways.
package configtest

import (
	"bytes"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"gopkg.in/yaml.v3"
)

// Marker starts the line comment of a key whose value is an example.
const Marker = "example"

// CheckDefaults fails t for every key of the file at path that is not
// marked an example and whose value, loaded over defaults as the daemon
// loads its file, differs from its default; and for every key of
// defaults' type that the file does not show. defaults is the value of
// DefaultConfig(), a struct.
func CheckDefaults[T any](t testing.TB, path string, defaults T) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if mapping(&doc).Kind != yaml.MappingNode {
		t.Fatalf("%s: not a YAML mapping", path)
	}
	var want yaml.Node // the defaults as YAML, for messages and key names
	if err := want.Encode(defaults); err != nil {
		t.Fatal(err)
	}
	leaves := map[string]bool{}
	walk(mapping(&doc), nil, func(keys []*yaml.Node, value *yaml.Node) {
		name := dotted(keys)
		leaves[name] = true
		if isExample(keys[len(keys)-1], value) {
			return
		}
		got := defaults
		if err := decodeStrict(only(keys, value), &got); err != nil {
			t.Errorf("%s: %s: %v", path, name, err)
			return
		}
		opts := cmp.Options{cmpopts.EquateEmpty(), cmp.Exporter(func(reflect.Type) bool { return true })}
		if !cmp.Equal(defaults, got, opts) {
			t.Errorf("%s: %s: the file shows %s, the default (DefaultConfig()) is %s; set the default, or end the line with # %s",
				path, name, text(value), text(lookup(&want, keys)), Marker)
		}
	})
	walk(mapping(&want), nil, func(keys []*yaml.Node, _ *yaml.Node) {
		name := dotted(keys)
		if leaves[name] || commentedOut(b, keys[len(keys)-1].Value) {
			return
		}
		t.Errorf("%s: does not show %s (default %s): add it with its default value and a comment",
			path, name, text(lookup(&want, keys)))
	})
}

// walk calls leaf for every key of m whose value is not a mapping, with
// the keys that lead to it.
func walk(m *yaml.Node, keys []*yaml.Node, leaf func(keys []*yaml.Node, value *yaml.Node)) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		path := append(append([]*yaml.Node(nil), keys...), k)
		if v.Kind == yaml.MappingNode && len(v.Content) > 0 {
			walk(v, path, leaf)
			continue
		}
		leaf(path, v)
	}
}

// isExample reports whether the key's line ends in "# example...". The
// parser hangs a line comment on the key or on its value.
func isExample(key, value *yaml.Node) bool {
	for _, c := range []string{key.LineComment, value.LineComment} {
		if strings.HasPrefix(strings.TrimSpace(strings.TrimPrefix(c, "#")), Marker) {
			return true
		}
	}
	return false
}

// only is a document holding just the key path and its value.
func only(keys []*yaml.Node, value *yaml.Node) *yaml.Node {
	n := value
	for i := len(keys) - 1; i >= 0; i-- {
		k := *keys[i]
		k.HeadComment, k.LineComment, k.FootComment = "", "", ""
		n = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Content: []*yaml.Node{&k, n}}
	}
	return n
}

// decodeStrict decodes n into dst as config.LoadFile does: unknown keys
// are errors.
func decodeStrict(n *yaml.Node, dst any) error {
	b, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	return dec.Decode(dst)
}

// mapping is the mapping of n, a document or a mapping node.
func mapping(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		return n.Content[0]
	}
	return n
}

// lookup returns the value at keys in doc (a document or mapping node),
// nil if there is none.
func lookup(doc *yaml.Node, keys []*yaml.Node) *yaml.Node {
	n := mapping(doc)
	for _, k := range keys {
		var next *yaml.Node
		for i := 0; n != nil && n.Kind == yaml.MappingNode && i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == k.Value {
				next = n.Content[i+1]
			}
		}
		if next == nil {
			return nil
		}
		n = next
	}
	return n
}

// text is a value for messages, in flow style and without comments.
func text(n *yaml.Node) string {
	if n == nil {
		return "(none)"
	}
	b, err := yaml.Marshal(bare(n))
	if err != nil {
		return fmt.Sprintf("%q", n.Value)
	}
	return strings.TrimSpace(string(b))
}

// bare is a copy of n in flow style without comments.
func bare(n *yaml.Node) *yaml.Node {
	c := *n
	c.Style |= yaml.FlowStyle
	c.HeadComment, c.LineComment, c.FootComment = "", "", ""
	c.Content = nil
	for _, k := range n.Content {
		c.Content = append(c.Content, bare(k))
	}
	return &c
}

func dotted(keys []*yaml.Node) string {
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k.Value
	}
	return strings.Join(parts, ".")
}

// commentedOut reports whether the file shows key commented out, as a
// line "# key: ...".
func commentedOut(file []byte, key string) bool {
	return regexp.MustCompile(`(?m)^\s*#\s*` + regexp.QuoteMeta(key) + `:`).Match(file)
}
