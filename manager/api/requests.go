package api

import (
	"context"
	"crypto/sha256"
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/manager/identity"
	"github.com/smdelegate/smdelegate/manager/store"
)

// The API's half of request ids (requests.go has what they are, and the
// dispatcher's half: finding the first call's task): checking an id, and
// what the store keeps of a call.

// maxRequestIDLen is the longest request id.
const maxRequestIDLen = 128

// validateRequestID checks a request id: empty (none) or 1 to 128
// characters of A-Z a-z 0-9 _ . : -.
func validateRequestID(id string) error {
	if len(id) > maxRequestIDLen {
		return config.Errf("request_id", "must be at most %d characters (got %d)", maxRequestIDLen, len(id))
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '.', c == ':', c == '-':
		default:
			return config.Errf("request_id", "must be 1 to %d characters of A-Z a-z 0-9 _ . : - (character %d is not one of them)", maxRequestIDLen, i+1)
		}
	}
	return nil
}

// requestOwner is the namespace of a caller's request ids: its operator
// token's scope and name. Callers of different tenants, or with different
// tokens, never share request ids. (A scope string holds no ':'.)
func requestOwner(ctx context.Context) string {
	id := identity.From(ctx)
	return id.Scope.String() + ":" + id.Name
}

// storeRequest is what the store keeps of a call with a request id: the
// caller's namespace, the id, and a digest of the request. The digest
// covers the method and the request as sent, without request_id and
// async: a retry may wait where the first call did not, and matches
// whatever the connector's settings are now. It is a MAC under the master
// key (seal.Sealer.MAC), so the store learns nothing of the values a
// request carries. Without a request id it returns the zero Request.
func (s *Service) storeRequest(ctx context.Context, method string, m interface {
	proto.Message
	GetRequestId() string
}) (store.Request, error) {
	if m.GetRequestId() == "" {
		return store.Request{}, nil
	}
	c := proto.Clone(m)
	r := c.ProtoReflect()
	for _, name := range []protoreflect.Name{"request_id", "async"} {
		if fd := r.Descriptor().Fields().ByName(name); fd != nil {
			r.Clear(fd)
		}
	}
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		return store.Request{}, fmt.Errorf("marshal request: %w", err)
	}
	bind := []byte("request/" + method)
	var sum []byte
	if s.sealer != nil {
		sum = s.sealer.MAC(raw, bind)
	} else { // tests without a master key
		h := sha256.Sum256(append(bind, raw...))
		sum = h[:]
	}
	return store.Request{Owner: requestOwner(ctx), ID: m.GetRequestId(), Hash: sum}, nil
}
