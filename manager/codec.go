package manager

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/manager/api"
)

// A string field of a request that holds invalid UTF-8 cannot be decoded
// by proto.Unmarshal, and gRPC answers such a request Internal ("failed to
// unmarshal the received message"), naming no field. wireCodec decodes it
// anyway, keeping the bytes as they came, and the interceptors below (the
// first of each chain) refuse every request with a string that is not
// UTF-8 as InvalidArgument naming the field, before authentication or any
// handler sees it. Only messages the lenient decode produced can hold
// such a string (every .proto file is proto3, whose strict decode refuses
// invalid UTF-8), so the codec marks them (lenient) and the interceptors
// walk only those: a well-formed request costs one map lookup.

// lenient holds the messages decoded by unmarshalKeepingText until an
// interceptor checks them (textError takes them out).
var lenient sync.Map // proto.Message → struct{}

// wireCodec is the server's codec: gRPC's proto codec, with a lenient
// decode of requests whose only fault is invalid UTF-8 in a string.
type wireCodec struct{ base encoding.CodecV2 }

func newWireCodec() wireCodec { return wireCodec{base: encoding.GetCodecV2(grpcproto.Name)} }

func (c wireCodec) Name() string { return grpcproto.Name }

func (c wireCodec) Marshal(v any) (mem.BufferSlice, error) { return c.base.Marshal(v) }

func (c wireCodec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.base.Unmarshal(data, v)
	var bad interface{ InvalidUTF8() bool }
	m, ok := v.(proto.Message)
	if err == nil || !ok || !errors.As(err, &bad) || !bad.InvalidUTF8() {
		return err
	}
	proto.Reset(m)
	if err := unmarshalKeepingText(data.Materialize(), m.ProtoReflect()); err != nil {
		return err
	}
	lenient.Store(m, struct{}{})
	return nil
}

// unmarshalKeepingText decodes b into m as proto.Unmarshal (with Merge)
// does, except that a string field whose bytes are not UTF-8 is stored
// as it came instead of failing the decode.
func unmarshalKeepingText(b []byte, m protoreflect.Message) error {
	fields := m.Descriptor().Fields()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		vn := protowire.ConsumeFieldValue(num, typ, b[n:])
		if vn < 0 {
			return protowire.ParseError(vn)
		}
		whole, val := b[:n+vn], b[n:n+vn]
		b = b[n+vn:]
		fd := fields.ByNumber(num)
		if fd == nil || typ != protowire.BytesType {
			if err := (proto.UnmarshalOptions{Merge: true}).Unmarshal(whole, m.Interface()); err != nil {
				return err
			}
			continue
		}
		raw, _ := protowire.ConsumeBytes(val)
		switch {
		case fd.IsMap():
			if err := mapEntry(raw, m.Mutable(fd).Map(), fd); err != nil {
				return err
			}
		case fd.Kind() == protoreflect.MessageKind:
			var sub protoreflect.Message
			if fd.IsList() {
				sub = m.Mutable(fd).List().AppendMutable().Message()
			} else {
				sub = m.Mutable(fd).Message()
			}
			if err := unmarshalKeepingText(raw, sub); err != nil {
				return err
			}
		case fd.Kind() == protoreflect.StringKind:
			if fd.IsList() {
				m.Mutable(fd).List().Append(protoreflect.ValueOfString(string(raw)))
			} else {
				m.Set(fd, protoreflect.ValueOfString(string(raw)))
			}
		default:
			if err := (proto.UnmarshalOptions{Merge: true}).Unmarshal(whole, m.Interface()); err != nil {
				return err
			}
		}
	}
	return nil
}

// mapEntry decodes one entry of map field fd into mp: field 1 the key,
// field 2 the value.
func mapEntry(b []byte, mp protoreflect.Map, fd protoreflect.FieldDescriptor) error {
	key, val := fd.MapKey().Default(), mp.NewValue()
	if fd.MapValue().Message() == nil {
		val = fd.MapValue().Default()
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		vn := protowire.ConsumeFieldValue(num, typ, b[n:])
		if vn < 0 {
			return protowire.ParseError(vn)
		}
		field := b[n : n+vn]
		var err error
		switch num {
		case 1:
			key, err = scalar(fd.MapKey(), typ, field)
		case 2:
			if fd.MapValue().Message() != nil {
				raw, _ := protowire.ConsumeBytes(field)
				err = unmarshalKeepingText(raw, val.Message())
			} else {
				val, err = scalar(fd.MapValue(), typ, field)
			}
		}
		if err != nil {
			return err
		}
		b = b[n+vn:]
	}
	mp.Set(key.MapKey(), val)
	return nil
}

// scalar decodes one map key or value of kind fd.Kind(), strings kept as
// they came; the kinds smd's maps use (no sint, fixed or float).
func scalar(fd protoreflect.FieldDescriptor, typ protowire.Type, b []byte) (protoreflect.Value, error) {
	bad := fmt.Errorf("map entry of %s: wire type %d for kind %s", fd.FullName(), typ, fd.Kind())
	switch fd.Kind() {
	case protoreflect.StringKind, protoreflect.BytesKind:
		v, n := protowire.ConsumeBytes(b)
		if n < 0 || typ != protowire.BytesType {
			return protoreflect.Value{}, bad
		}
		if fd.Kind() == protoreflect.BytesKind {
			return protoreflect.ValueOfBytes(append([]byte(nil), v...)), nil
		}
		return protoreflect.ValueOfString(string(v)), nil
	}
	v, n := protowire.ConsumeVarint(b)
	if n < 0 || typ != protowire.VarintType {
		return protoreflect.Value{}, bad
	}
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(v != 0), nil
	case protoreflect.EnumKind:
		return protoreflect.ValueOfEnum(protoreflect.EnumNumber(int32(v))), nil
	case protoreflect.Int32Kind:
		return protoreflect.ValueOfInt32(int32(v)), nil
	case protoreflect.Int64Kind:
		return protoreflect.ValueOfInt64(int64(v)), nil
	case protoreflect.Uint32Kind:
		return protoreflect.ValueOfUint32(uint32(v)), nil
	case protoreflect.Uint64Kind:
		return protoreflect.ValueOfUint64(v), nil
	}
	return protoreflect.Value{}, bad
}

// notText returns the path of the first string in m that is not UTF-8
// ("create.name", "tags[\"team\"]", "add[2]"), or "".
func notText(m protoreflect.Message, path string) string {
	found := ""
	at := func(name string) string {
		if path == "" {
			return name
		}
		return path + "." + name
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		name := at(string(fd.Name()))
		switch {
		case fd.IsMap():
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				key := k.String()
				if fd.MapKey().Kind() == protoreflect.StringKind && !utf8.ValidString(key) {
					found = name + " (a key)"
					return false
				}
				entry := name + "[" + strconv.Quote(key) + "]"
				switch {
				case fd.MapValue().Kind() == protoreflect.StringKind && !utf8.ValidString(mv.String()):
					found = entry
				case fd.MapValue().Message() != nil:
					found = notText(mv.Message(), entry)
				}
				return found == ""
			})
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len() && found == ""; i++ {
				entry := name + "[" + strconv.Itoa(i) + "]"
				switch {
				case fd.Kind() == protoreflect.StringKind && !utf8.ValidString(l.Get(i).String()):
					found = entry
				case fd.Message() != nil:
					found = notText(l.Get(i).Message(), entry)
				}
			}
		case fd.Kind() == protoreflect.StringKind:
			if !utf8.ValidString(v.String()) {
				found = name
			}
		case fd.Message() != nil:
			found = notText(v.Message(), name)
		}
		return found == ""
	})
	return found
}

// textError is the InvalidArgument of a message with a string that is not
// UTF-8, or nil. Only a message the codec decoded leniently can be one.
func textError(msg any) error {
	m, ok := msg.(proto.Message)
	if !ok {
		return nil
	}
	if _, was := lenient.LoadAndDelete(m); !was {
		return nil
	}
	if f := notText(m.ProtoReflect(), ""); f != "" {
		return api.Invalid(config.Errf(f, "must be UTF-8 text"))
	}
	return nil
}

// textUnary refuses a unary request holding a string that is not UTF-8.
func textUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := textError(req); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// textStream refuses, on a stream, a received message holding a string
// that is not UTF-8: RecvMsg returns the InvalidArgument, and the handler
// ends the stream with it.
func textStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, textChecked{ss})
}

type textChecked struct{ grpc.ServerStream }

func (s textChecked) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return textError(m)
}
