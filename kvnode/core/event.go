package core

import (
	"encoding/binary"
	"fmt"
)

// EventType is what an Event does. The numbers are the book's on-disk codes
// (1 = DELETE, 2 = PUT) and are part of the replicated format: never renumber.
type EventType byte

const (
	_ EventType = iota
	// EventDelete removes a key.
	EventDelete
	// EventPut sets a key to a value.
	EventPut
	// EventMeta sets cluster metadata (the cluster ID, members' API
	// addresses): replicated and snapshotted like data, invisible to clients.
	EventMeta
)

func (t EventType) String() string {
	switch t {
	case EventDelete:
		return "DELETE"
	case EventPut:
		return "PUT"
	case EventMeta:
		return "META"
	default:
		return fmt.Sprintf("EventType(%d)", byte(t))
	}
}

func (t EventType) valid() bool { return t >= EventDelete && t <= EventMeta }

// Event is one mutation of the store. Its sequence number is the index the
// replicated log assigns when the event is committed, so it is not a field
// here: the log owns ordering, the event owns content.
type Event struct {
	Type  EventType
	Key   string
	Value []byte
}

// MarshalBinary encodes e as: type (1 byte), key length (uvarint), key,
// value (the rest). Keys and values may hold any bytes.
func (e Event) MarshalBinary() ([]byte, error) {
	return e.AppendBinary(make([]byte, 0, 1+binary.MaxVarintLen32+len(e.Key)+len(e.Value)))
}

// AppendBinary appends the encoding of e to b.
func (e Event) AppendBinary(b []byte) ([]byte, error) {
	if !e.Type.valid() {
		return nil, fmt.Errorf("%w: unknown type %d", ErrCorruptEvent, e.Type)
	}
	b = append(b, byte(e.Type))
	b = binary.AppendUvarint(b, uint64(len(e.Key)))
	b = append(b, e.Key...)
	return append(b, e.Value...), nil
}

// UnmarshalEvent decodes an encoding made by MarshalBinary. The returned
// value aliases b; callers that keep it must not reuse b.
func UnmarshalEvent(b []byte) (Event, error) {
	if len(b) < 2 {
		return Event{}, fmt.Errorf("%w: %d bytes", ErrCorruptEvent, len(b))
	}
	t := EventType(b[0])
	if !t.valid() {
		return Event{}, fmt.Errorf("%w: unknown type %d", ErrCorruptEvent, b[0])
	}
	klen, n := binary.Uvarint(b[1:])
	if n <= 0 || klen > uint64(len(b)-1-n) {
		return Event{}, fmt.Errorf("%w: bad key length", ErrCorruptEvent)
	}
	rest := b[1+n:]
	e := Event{Type: t, Key: string(rest[:klen])}
	if t != EventDelete {
		e.Value = rest[klen:]
	} else if len(rest) != int(klen) {
		return Event{}, fmt.Errorf("%w: delete with a value", ErrCorruptEvent)
	}
	return e, nil
}
