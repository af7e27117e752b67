package api

import (
	"encoding/base64"
	"encoding/binary"
	"time"

	"github.com/smdelegate/smdelegate/internal/config"
	"github.com/smdelegate/smdelegate/manager/store"
)

// A ListTasks page token is a store.Cursor, opaque to the caller: a
// version byte, the task's CreatedAt as Unix seconds (8 bytes) and
// nanoseconds (4 bytes), big-endian, then its id; base64url without
// padding. It holds nothing a caller may not see (the id and creation
// time of a task the previous page listed), and it confers nothing: the
// next page is filtered by the caller's scope like the first.

const pageTokenVersion = 1

// maxPageTokenID bounds the id in a page token (task ids are 26 bytes).
const maxPageTokenID = 128

func encodePageToken(c store.Cursor) string {
	b := make([]byte, 13, 13+len(c.ID))
	b[0] = pageTokenVersion
	binary.BigEndian.PutUint64(b[1:], uint64(c.CreatedAt.Unix()))
	binary.BigEndian.PutUint32(b[9:], uint32(c.CreatedAt.Nanosecond()))
	return base64.RawURLEncoding.EncodeToString(append(b, c.ID...))
}

// decodePageToken returns the cursor of a page token, nil for none.
func decodePageToken(tok string) (*store.Cursor, error) {
	if tok == "" {
		return nil, nil
	}
	bad := config.Errf("page_token", "is not a next_page_token of this manager: send the one the previous page returned, or none for the first page")
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) < 14 || len(b) > 13+maxPageTokenID || b[0] != pageTokenVersion {
		return nil, bad
	}
	ns := binary.BigEndian.Uint32(b[9:13])
	id := string(b[13:])
	if ns >= uint32(time.Second) {
		return nil, bad
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' { // ids are printable ASCII
			return nil, bad
		}
	}
	return &store.Cursor{CreatedAt: time.Unix(int64(binary.BigEndian.Uint64(b[1:9])), int64(ns)).UTC(), ID: id}, nil
}
