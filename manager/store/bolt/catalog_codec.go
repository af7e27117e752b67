package bolt

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/smdelegate/smdelegate/manager/store"
)

// Catalog records use the same primitives as tasks (codec.go): uvarint
// length-prefixed strings and bytes, varint seconds + uvarint nanoseconds for
// times. Each record starts with its own version byte, so that one kind can
// change layout without the others.
//
// Keys. A scope key is the scope's three parts, each length-prefixed:
//
//	string Account, Org, Project
//
// Length prefixes make the encoding self-delimiting, so no scope key is a
// prefix of another scope's key followed by anything: {a, b} and {ab} or
// {a}+"b…" can never meet, whatever bytes the parts hold. A connector or
// credential key is its scope key followed by the raw ID or name, so that
// the entries of exactly one scope are one contiguous key range (a prefix
// scan), in ID or name order.
//
// Values (version 1):
//
//	connector:   byte version, byte flags (bit 0: Default),
//	             time CreatedAt, UpdatedAt, bytes Data
//	credential:  byte version, time CreatedAt, UpdatedAt, bytes Sealed
//	signing key: byte version, time CreatedAt, RetiredAt, Expires,
//	             bytes Private, Public
//	tags:        byte version, uvarint count, then each tag as a string
//
// Scope, ID and name live only in the key.
const catalogVersion = 1

// timeSize is the most bytes appendTime writes.
const timeSize = 2 * binary.MaxVarintLen64

// connectorDefault is the connector flag bit for Default.
const connectorDefault = 1 << 0

// scopeKey returns the key prefix of scope s.
func scopeKey(s store.Scope) []byte {
	k := make([]byte, 0, 3+len(s.Account)+len(s.Org)+len(s.Project))
	k = appendString(k, s.Account)
	k = appendString(k, s.Org)
	return appendString(k, s.Project)
}

// itemKey returns the key of the connector or credential name in the scope
// whose key is sk.
func itemKey(sk []byte, name string) []byte {
	k := make([]byte, 0, len(sk)+len(name))
	k = append(k, sk...)
	return append(k, name...)
}

// splitItemKey splits a connector or credential key into its scope and
// its ID or name.
func splitItemKey(k []byte) (store.Scope, string, error) {
	d := decoder{b: k}
	s := store.Scope{Account: d.string(), Org: d.string(), Project: d.string()}
	if d.err != nil {
		return store.Scope{}, "", fmt.Errorf("item key: %w", d.err)
	}
	return s, string(d.b), nil
}

func encodeConnector(c *store.Connector, created, updated time.Time) []byte {
	var flags byte
	if c.Default {
		flags |= connectorDefault
	}
	v := make([]byte, 0, 2+2*timeSize+binary.MaxVarintLen64+len(c.Data))
	v = append(v, catalogVersion, flags)
	v = appendTime(v, created)
	v = appendTime(v, updated)
	return appendBytes(v, c.Data)
}

// decodeConnector decodes a connector value into a connector of scope s
// with id.
func decodeConnector(v []byte, s store.Scope, id string) (*store.Connector, error) {
	if len(v) < 2 || v[0] != catalogVersion {
		return nil, fmt.Errorf("%w: connector %q: bad header", errCorrupt, id)
	}
	d := decoder{b: v[2:]}
	c := &store.Connector{Scope: s, ID: id, Default: v[1]&connectorDefault != 0}
	c.CreatedAt = d.time()
	c.UpdatedAt = d.time()
	c.Data = d.bytes()
	if err := d.end(); err != nil {
		return nil, fmt.Errorf("connector %q: %w", id, err)
	}
	return c, nil
}

func encodeCredential(c *store.Credential, created, updated time.Time) []byte {
	v := make([]byte, 0, 1+2*timeSize+binary.MaxVarintLen64+len(c.Sealed))
	v = append(v, catalogVersion)
	v = appendTime(v, created)
	v = appendTime(v, updated)
	return appendBytes(v, c.Sealed)
}

// decodeCredential decodes a credential value into a credential of scope s
// with name. Unless sealed, Sealed is left empty (and not copied).
func decodeCredential(v []byte, s store.Scope, name string, sealed bool) (*store.Credential, error) {
	if len(v) < 1 || v[0] != catalogVersion {
		return nil, fmt.Errorf("%w: credential %q: bad header", errCorrupt, name)
	}
	d := decoder{b: v[1:]}
	c := &store.Credential{Scope: s, Name: name}
	c.CreatedAt = d.time()
	c.UpdatedAt = d.time()
	if sealed {
		c.Sealed = d.bytes()
	} else {
		d.raw()
	}
	if err := d.end(); err != nil {
		return nil, fmt.Errorf("credential %q: %w", name, err)
	}
	return c, nil
}

func encodeSigningKey(k *store.SigningKey, created time.Time) []byte {
	v := make([]byte, 0, 1+3*timeSize+2*binary.MaxVarintLen64+len(k.Private)+len(k.Public))
	v = append(v, catalogVersion)
	v = appendTime(v, created)
	v = appendTime(v, k.RetiredAt)
	v = appendTime(v, k.Expires)
	v = appendBytes(v, k.Private)
	return appendBytes(v, k.Public)
}

func decodeSigningKey(v []byte, id string) (*store.SigningKey, error) {
	if len(v) < 1 || v[0] != catalogVersion {
		return nil, fmt.Errorf("%w: signing key %q: bad header", errCorrupt, id)
	}
	d := decoder{b: v[1:]}
	k := &store.SigningKey{ID: id}
	k.CreatedAt = d.time()
	k.RetiredAt = d.time()
	k.Expires = d.time()
	k.Private = d.bytes()
	k.Public = d.bytes()
	if err := d.end(); err != nil {
		return nil, fmt.Errorf("signing key %q: %w", id, err)
	}
	return k, nil
}

func encodeTags(tags []string) []byte {
	n := 1 + binary.MaxVarintLen64
	for _, t := range tags {
		n += binary.MaxVarintLen64 + len(t)
	}
	v := make([]byte, 0, n)
	v = append(v, catalogVersion)
	v = binary.AppendUvarint(v, uint64(len(tags)))
	for _, t := range tags {
		v = appendString(v, t)
	}
	return v
}

func decodeTags(v []byte, name string) ([]string, error) {
	if len(v) < 1 || v[0] != catalogVersion {
		return nil, fmt.Errorf("%w: tags of %q: bad header", errCorrupt, name)
	}
	d := decoder{b: v[1:]}
	n := d.uvarint()
	if n > uint64(len(d.b)) { // each tag takes at least one byte
		return nil, fmt.Errorf("%w: tags of %q: %d tags in %d bytes", errCorrupt, name, n, len(d.b))
	}
	tags := make([]string, n)
	for i := range tags {
		tags[i] = d.string()
	}
	if err := d.end(); err != nil {
		return nil, fmt.Errorf("tags of %q: %w", name, err)
	}
	return tags, nil
}

// end returns the decoder's error, or an error if bytes are left over.
func (d *decoder) end() error {
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(d.b))
	}
	return d.err
}
