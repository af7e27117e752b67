package bolt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/smdelegate/smdelegate/manager/store"
)

// A task is stored as a compact binary record rather than JSON: every durable
// mutation decodes and re-encodes one, inside the single writer transaction
// that all batched callers share, so its cost is paid serially.
//
// Layout (version 5):
//
//	byte    version (5)
//	byte    state code (see stateCodes)
//	string  ID, Kind            (uvarint length + bytes)
//	uvarint len(Selectors), then each as a string
//	bytes   Payload             (uvarint length + bytes)
//	varint  Attempt, MaxAttempts
//	string  LeaseID, Delegate, Code
//	bytes   Outcome
//	time    CreatedAt, UpdatedAt, Deadline, QueueDeadline
//	        (varint Unix seconds + uvarint nanoseconds; the zero time
//	        round-trips because its Unix seconds are just a large negative)
//	string  Scope.Account, Scope.Org, Scope.Project
//	string  Request.Owner, Request.ID
//	bytes   Request.Hash
//	string  OrderKey
//
// Version 4 is version 5 without the order key. Version 3 has the same
// layout as version 4, but a final task of version
// 3 or older was made final by a store whose Complete kept the payload
// the task was created with, secret values included: ScrubFinished
// rewrites those (and so makes them the current version). Version 2 is version 3
// without the request, version 1 version 2 without the scope; decode
// still reads all four (tasks written before order keys, request ids or
// scopes existed have none), encode writes only version 5.
// The state sits at a fixed offset so list scans can filter without decoding.
// A new layout gets a new version byte; decode refuses versions it does not
// know rather than misreading them.
const codecVersion = 5

// Older versions, still decoded.
const (
	codecVersionNoScope   = 1
	codecVersionNoRequest = 2
	// codecVersionWholePayload: version 4's layout, from before Complete
	// replaced the payload.
	codecVersionWholePayload = 3
	// codecVersionNoOrder: version 5 without the order key.
	codecVersionNoOrder = 4
)

// payloadScrubbed reports whether an encoded final task's payload is
// what Complete (or ScrubFinished) stored, rather than the one it was
// created with.
func payloadScrubbed(v []byte) bool { return len(v) > 0 && v[0] > codecVersionWholePayload }

// stateOffset is where the state code lives in an encoded task.
const stateOffset = 1

// errCorrupt is wrapped by every decode failure, of tasks and of catalog
// records (catalog_codec.go) alike.
var errCorrupt = errors.New("bolt: corrupt record")

var stateCodes = map[store.State]byte{
	store.StateQueued:    1,
	store.StateLeased:    2,
	store.StateSucceeded: 3,
	store.StateFailed:    4,
}

// codeStates is the inverse of stateCodes, indexed by code.
var codeStates = [...]store.State{
	1: store.StateQueued,
	2: store.StateLeased,
	3: store.StateSucceeded,
	4: store.StateFailed,
}

// stateOf returns the state of an encoded task without decoding it.
func stateOf(v []byte) (store.State, error) {
	if len(v) <= stateOffset || v[0] < codecVersionNoScope || v[0] > codecVersion {
		return "", errCorrupt
	}
	c := v[stateOffset]
	if int(c) >= len(codeStates) || codeStates[c] == "" {
		return "", fmt.Errorf("%w: state code %d", errCorrupt, c)
	}
	return codeStates[c], nil
}

// encodeTask appends the encoding of t to dst.
func encodeTask(dst []byte, t *store.Task) ([]byte, error) {
	sc, ok := stateCodes[t.State]
	if !ok {
		return nil, fmt.Errorf("bolt: encode task %q: unknown state %q", t.ID, t.State)
	}
	dst = append(dst, codecVersion, sc)
	dst = appendString(dst, t.ID)
	dst = appendString(dst, t.Kind)
	dst = binary.AppendUvarint(dst, uint64(len(t.Selectors)))
	for _, s := range t.Selectors {
		dst = appendString(dst, s)
	}
	dst = appendBytes(dst, t.Payload)
	dst = binary.AppendVarint(dst, int64(t.Attempt))
	dst = binary.AppendVarint(dst, int64(t.MaxAttempts))
	dst = appendString(dst, t.LeaseID)
	dst = appendString(dst, t.Delegate)
	dst = appendString(dst, t.Code)
	dst = appendBytes(dst, t.Outcome)
	dst = appendTime(dst, t.CreatedAt)
	dst = appendTime(dst, t.UpdatedAt)
	dst = appendTime(dst, t.Deadline)
	dst = appendTime(dst, t.QueueDeadline)
	dst = appendString(dst, t.Scope.Account)
	dst = appendString(dst, t.Scope.Org)
	dst = appendString(dst, t.Scope.Project)
	dst = appendString(dst, t.Request.Owner)
	dst = appendString(dst, t.Request.ID)
	dst = appendBytes(dst, t.Request.Hash)
	dst = appendString(dst, t.OrderKey)
	return dst, nil
}

// encodedSize is a cheap upper-bound estimate of t's encoding, to size the
// buffer once.
func encodedSize(t *store.Task) int {
	n := 2 + 4*binary.MaxVarintLen64 + 8*(2*binary.MaxVarintLen64) // header, ints, times
	n += 15*binary.MaxVarintLen64 + len(t.ID) + len(t.Kind) + len(t.Payload) +
		len(t.LeaseID) + len(t.Delegate) + len(t.Code) + len(t.Outcome) +
		len(t.Scope.Account) + len(t.Scope.Org) + len(t.Scope.Project) +
		len(t.Request.Owner) + len(t.Request.ID) + len(t.Request.Hash) + len(t.OrderKey)
	for _, s := range t.Selectors {
		n += binary.MaxVarintLen64 + len(s)
	}
	return n
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func appendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

func appendTime(dst []byte, t time.Time) []byte {
	dst = binary.AppendVarint(dst, t.Unix())
	return binary.AppendUvarint(dst, uint64(t.Nanosecond()))
}

// decodeTask decodes an encoded task. It copies everything out of v, which
// may be memory owned by a bbolt transaction.
func decodeTask(v []byte) (*store.Task, error) {
	st, err := stateOf(v)
	if err != nil {
		return nil, err
	}
	d := decoder{b: v[stateOffset+1:]}
	t := &store.Task{State: st}
	t.ID = d.string()
	t.Kind = d.string()
	if n := d.uvarint(); n > 0 && d.err == nil {
		if n > uint64(len(d.b)) { // each selector takes at least one byte
			return nil, fmt.Errorf("%w: %d selectors in %d bytes", errCorrupt, n, len(d.b))
		}
		t.Selectors = make([]string, n)
		for i := range t.Selectors {
			t.Selectors[i] = d.string()
		}
	}
	t.Payload = d.bytes()
	t.Attempt = int(d.varint())
	t.MaxAttempts = int(d.varint())
	t.LeaseID = d.string()
	t.Delegate = d.string()
	t.Code = d.string()
	t.Outcome = d.bytes()
	t.CreatedAt = d.time()
	t.UpdatedAt = d.time()
	t.Deadline = d.time()
	t.QueueDeadline = d.time()
	if v[0] >= codecVersionNoRequest {
		t.Scope.Account = d.string()
		t.Scope.Org = d.string()
		t.Scope.Project = d.string()
	}
	if v[0] >= codecVersionWholePayload {
		t.Request.Owner = d.string()
		t.Request.ID = d.string()
		t.Request.Hash = d.bytes()
	}
	if v[0] > codecVersionNoOrder {
		t.OrderKey = d.string()
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(d.b))
	}
	if d.err != nil {
		return nil, d.err
	}
	return t, nil
}

// decoder reads fields in order; the first error sticks and turns every later
// read into a zero value.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated %s", errCorrupt, what)
	}
	d.b = nil
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("uvarint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// raw returns the next length-prefixed field, still aliasing d.b.
func (d *decoder) raw() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail("field")
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string { return string(d.raw()) }

// bytes returns a copy of the next field; an empty field decodes as nil.
func (d *decoder) bytes() []byte {
	v := d.raw()
	if len(v) == 0 {
		return nil
	}
	return bytes.Clone(v)
}

func (d *decoder) time() time.Time {
	sec := d.varint()
	nsec := d.uvarint()
	if d.err != nil {
		return time.Time{}
	}
	if nsec >= uint64(time.Second) {
		d.err = fmt.Errorf("%w: nanoseconds %d out of range", errCorrupt, nsec)
		return time.Time{}
	}
	// UTC() also drops the location pointer, so the zero time decodes to
	// exactly time.Time{}.
	return time.Unix(sec, int64(nsec)).UTC()
}
