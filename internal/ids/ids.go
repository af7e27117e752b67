// Package ids makes identifiers: time-ordered task ids and random lease ids.
package ids

import (
	"crypto/rand"
	"encoding/binary"
	"sync"
	"time"
)

const crockford = "0123456789abcdefghjkmnpqrstvwxyz"

var (
	mu     sync.Mutex // guards last and seq
	last   int64
	seq    uint32
	random [10]byte
)

// New returns a 26-character id whose lexical order follows creation time
// (a ULID in lower-case Crockford base32). Ids made in the same millisecond
// stay ordered and unique.
func New() string {
	ms := time.Now().UnixMilli()
	mu.Lock()
	if ms <= last {
		ms = last
		seq++
		binary.BigEndian.PutUint32(random[6:], binary.BigEndian.Uint32(random[6:])+1)
	} else {
		last = ms
		seq = 0
		_, _ = rand.Read(random[:])
	}
	var b [16]byte
	b[0], b[1], b[2], b[3], b[4], b[5] = byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms)
	copy(b[6:], random[:])
	mu.Unlock()
	return encode(b)
}

// Random returns a random 26-character id with no time order (lease ids).
func Random() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return encode(b)
}

func encode(b [16]byte) string {
	var out [26]byte
	// 128 bits -> 26 base32 digits (the first carries 3 bits).
	hi := binary.BigEndian.Uint64(b[:8])
	lo := binary.BigEndian.Uint64(b[8:])
	for i := 25; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out[:])
}
