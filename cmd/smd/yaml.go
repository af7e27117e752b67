package main

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/smdelegate/smdelegate/internal/config"
)

// fromYAML sets the fields of m from v, a YAML mapping decoded into Go
// values (gopkg.in/yaml.v3 into map[string]any), by the fields' proto
// names: the snake_case keys the files use. A key that names no field, or
// a value of the wrong type, is a *config.FieldError naming the key as the
// file writes it, under path ("scope.account", "tags[\"team\"]",
// "delegate_selectors[1]"): protojson, which this replaces, named its JSON
// field (recoveryWindowDays) or no field at all.
func fromYAML(m protoreflect.Message, v map[string]any, path string) error {
	fields := m.Descriptor().Fields()
	for _, k := range slices.Sorted(maps.Keys(v)) { // the same first error every time
		name := joinPath(path, k)
		fd := fields.ByName(protoreflect.Name(k))
		if fd == nil {
			return fmt.Errorf("unknown field %q", name)
		}
		if v[k] == nil {
			continue // "key:" with no value: the field's zero value
		}
		if err := setField(m, fd, v[k], name); err != nil {
			return err
		}
	}
	return nil
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// setField sets fd of m from the YAML value v.
func setField(m protoreflect.Message, fd protoreflect.FieldDescriptor, v any, name string) error {
	switch {
	case fd.IsMap():
		mv, ok := asMapping(v)
		if !ok {
			return config.Errf(name, "must be a mapping (key: value)")
		}
		if fd.MapKey().Kind() != protoreflect.StringKind {
			return config.Errf(name, "cannot be set from a file (keys of kind %s)", fd.MapKey().Kind())
		}
		mp := m.Mutable(fd).Map()
		for _, k := range slices.Sorted(maps.Keys(mv)) {
			entry := fmt.Sprintf("%s[%q]", name, k)
			val, err := scalarYAML(fd.MapValue(), mv[k], entry)
			if err != nil {
				return err
			}
			mp.Set(protoreflect.ValueOfString(k).MapKey(), val)
		}
	case fd.IsList():
		items, ok := v.([]any)
		if !ok {
			return config.Errf(name, "must be a list ([a, b] or one \"- item\" a line)")
		}
		l := m.Mutable(fd).List()
		for i, it := range items {
			entry := fmt.Sprintf("%s[%d]", name, i)
			if fd.Message() != nil {
				mv, ok := asMapping(it)
				if !ok {
					return config.Errf(entry, "must be a mapping")
				}
				if err := fromYAML(l.AppendMutable().Message(), mv, entry); err != nil {
					return err
				}
				continue
			}
			val, err := scalarYAML(fd, it, entry)
			if err != nil {
				return err
			}
			l.Append(val)
		}
	case fd.Message() != nil && fd.Message().FullName() == "google.protobuf.Timestamp":
		val, err := timestampYAML(v, name)
		if err != nil {
			return err
		}
		m.Set(fd, val)
	case fd.Message() != nil:
		mv, ok := asMapping(v)
		if !ok {
			return config.Errf(name, "must be a mapping")
		}
		return fromYAML(m.Mutable(fd).Message(), mv, name)
	default:
		val, err := scalarYAML(fd, v, name)
		if err != nil {
			return err
		}
		m.Set(fd, val)
	}
	return nil
}

// asMapping returns v as a mapping with text keys.
func asMapping(v any) (map[string]any, bool) {
	switch mv := v.(type) {
	case map[string]any:
		return mv, true
	case map[any]any:
		out := make(map[string]any, len(mv))
		for k, x := range mv {
			ks, ok := k.(string)
			if !ok {
				return nil, false
			}
			out[ks] = x
		}
		return out, true
	}
	return nil, false
}

// what names the YAML type of v for messages.
func what(v any) string {
	switch v.(type) {
	case string:
		return "text"
	case bool:
		return "true/false"
	case int, int64, uint64, float64:
		return "a number"
	case []any:
		return "a list"
	case map[string]any, map[any]any:
		return "a mapping"
	case time.Time:
		return "a date"
	}
	return fmt.Sprintf("%T", v)
}

// scalarYAML converts the YAML value v to a value of fd's kind.
func scalarYAML(fd protoreflect.FieldDescriptor, v any, name string) (protoreflect.Value, error) {
	switch fd.Kind() {
	case protoreflect.StringKind:
		s, ok := v.(string)
		if !ok {
			return protoreflect.Value{}, config.Errf(name, "must be text, not %s (quote it: \"...\")", what(v))
		}
		if !utf8.ValidString(s) {
			return protoreflect.Value{}, config.Errf(name, "must be UTF-8 text")
		}
		return protoreflect.ValueOfString(s), nil
	case protoreflect.BoolKind:
		b, ok := v.(bool)
		if !ok {
			return protoreflect.Value{}, config.Errf(name, "must be true or false, not %s", what(v))
		}
		return protoreflect.ValueOfBool(b), nil
	case protoreflect.EnumKind:
		s, ok := v.(string)
		if !ok {
			return protoreflect.Value{}, config.Errf(name, "must be one of %s", enumNames(fd.Enum()))
		}
		ev := fd.Enum().Values().ByName(protoreflect.Name(strings.ToUpper(strings.TrimSpace(s))))
		if ev == nil || ev.Number() == 0 {
			return protoreflect.Value{}, config.Errf(name, "must be one of %s", enumNames(fd.Enum()))
		}
		return protoreflect.ValueOfEnum(ev.Number()), nil
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		n, err := wholeNumber(v, name)
		if err != nil {
			return protoreflect.Value{}, err
		}
		if fd.Kind() == protoreflect.Int64Kind || fd.Kind() == protoreflect.Sint64Kind || fd.Kind() == protoreflect.Sfixed64Kind {
			return protoreflect.ValueOfInt64(n), nil
		}
		if n < math.MinInt32 || n > math.MaxInt32 {
			return protoreflect.Value{}, config.Errf(name, "must be a whole number from %d to %d", math.MinInt32, math.MaxInt32)
		}
		return protoreflect.ValueOfInt32(int32(n)), nil
	}
	return protoreflect.Value{}, config.Errf(name, "cannot be set from a file (%s)", fd.Kind())
}

// wholeNumber reads a YAML integer.
func wholeNumber(v any, name string) (int64, error) {
	switch n := v.(type) {
	case int:
		return int64(n), nil
	case int64:
		return n, nil
	case uint64:
		if n <= math.MaxInt64 {
			return int64(n), nil
		}
	case float64:
		if n == math.Trunc(n) && n >= math.MinInt64 && n <= math.MaxInt64 {
			return int64(n), nil
		}
		return 0, config.Errf(name, "must be a whole number, not %s", strconv.FormatFloat(n, 'g', -1, 64))
	default:
		return 0, config.Errf(name, "must be a whole number, not %s", what(v))
	}
	return 0, config.Errf(name, "must be a whole number from %d to %d", math.MinInt32, math.MaxInt32)
}

// timestampYAML reads an RFC 3339 time (as smd connector get -o json
// prints created_at), written as text or as a YAML date.
func timestampYAML(v any, name string) (protoreflect.Value, error) {
	var t time.Time
	switch x := v.(type) {
	case time.Time:
		t = x
	case string:
		var err error
		if t, err = time.Parse(time.RFC3339Nano, x); err != nil {
			return protoreflect.Value{}, config.Errf(name, "must be an RFC 3339 time such as 2026-01-02T15:04:05Z")
		}
	default:
		return protoreflect.Value{}, config.Errf(name, "must be an RFC 3339 time such as 2026-01-02T15:04:05Z, not %s", what(v))
	}
	return protoreflect.ValueOfMessage(timestamppb.New(t).ProtoReflect()), nil
}

// enumNames lists an enum's values but the zero one, lower case.
func enumNames(e protoreflect.EnumDescriptor) string {
	var names []string
	for i := 0; i < e.Values().Len(); i++ {
		if ev := e.Values().Get(i); ev.Number() != 0 {
			names = append(names, strings.ToLower(string(ev.Name())))
		}
	}
	return strings.Join(names, ", ")
}
