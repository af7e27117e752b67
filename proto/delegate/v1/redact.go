package delegatev1

import (
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// IsSecret reports whether fd is declared with [(delegate.v1.secret) =
// true]: a field that can carry a secret value.
func IsSecret(fd protoreflect.FieldDescriptor) bool {
	opts := fd.Options()
	if opts == nil {
		return false
	}
	v, _ := proto.GetExtension(opts, E_Secret).(bool)
	return v
}

// Redact clears, in place, every field of m and of the messages within it
// (singular, repeated and map values) that is marked secret (IsSecret), and
// reports whether it cleared any. A cleared message field becomes unset, so
// a SecretResult without its value reads exactly like one that never had
// one. It is the one place that decides what of a payload or an outcome
// may be kept: the field options in the .proto files say which fields
// those are. A nil m is left alone.
func Redact(m proto.Message) bool {
	if m == nil {
		return false
	}
	return redact(m.ProtoReflect())
}

func redact(m protoreflect.Message) bool {
	if !m.IsValid() {
		return false
	}
	var secret []protoreflect.FieldDescriptor
	var nested []protoreflect.Message
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case IsSecret(fd):
			secret = append(secret, fd)
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					nested = append(nested, mv.Message())
					return true
				})
			}
		case fd.IsList():
			if fd.Message() != nil {
				l := v.List()
				for i := 0; i < l.Len(); i++ {
					nested = append(nested, l.Get(i).Message())
				}
			}
		case fd.Message() != nil:
			nested = append(nested, v.Message())
		}
		return true
	})
	// Cleared after Range: changing a message while ranging over it is
	// undefined.
	for _, fd := range secret {
		m.Clear(fd)
	}
	changed := len(secret) > 0
	for _, n := range nested {
		if redact(n) {
			changed = true
		}
	}
	return changed
}
