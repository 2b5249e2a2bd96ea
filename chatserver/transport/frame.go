package transport

import (
	"encoding/binary"
	"sync"

	"github.com/centrifugal/protocol"
)

// WebSocket opcodes (RFC 6455 §5.2) of the frames the server writes itself.
const (
	opText   = 0x1
	opBinary = 0x2
	opPong   = 0xA
)

// maxHeader is the longest server frame header: 2 bytes, 8 of length, no mask.
const maxHeader = 10

// framePool lends the buffers frames are built in. A connection holds one
// only while a frame is being written (or waits, half written, for the
// socket), so idle connections hold none.
var framePool = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

func getFrameBuf() *[]byte { return framePool.Get().(*[]byte) }

func putFrameBuf(b *[]byte) {
	if cap(*b) > 64<<10 {
		return // a rare big batch: let it go rather than pin it in the pool
	}
	*b = (*b)[:0]
	framePool.Put(b)
}

// batchLen is the payload length of msgs batched the protocol's way: JSON
// replies separated by newlines, protobuf replies each prefixed by its
// varint length (what protocol's data encoders produce).
func batchLen(proto protocol.Type, msgs [][]byte) int {
	n := 0
	for _, m := range msgs {
		n += len(m)
		if proto == protocol.TypeProtobuf {
			n += uvarintLen(uint64(len(m)))
		}
	}
	if proto != protocol.TypeProtobuf && len(msgs) > 1 {
		n += len(msgs) - 1
	}
	return n
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// appendFrame appends one final, unmasked WebSocket frame carrying msgs
// batched for proto: the bytes gorilla's WriteMessage would put on the wire,
// built without its locks and copies so a frame can go out in one write(2).
func appendFrame(dst []byte, proto protocol.Type, msgs [][]byte) []byte {
	op := byte(opText)
	if proto == protocol.TypeProtobuf {
		op = opBinary
	}
	dst = appendHeader(dst, op, batchLen(proto, msgs))
	for i, m := range msgs {
		if proto == protocol.TypeProtobuf {
			dst = binary.AppendUvarint(dst, uint64(len(m)))
		} else if i > 0 {
			dst = append(dst, '\n')
		}
		dst = append(dst, m...)
	}
	return dst
}

// appendControl appends a control frame (payload ≤ 125 bytes, checked by the caller).
func appendControl(dst []byte, op byte, payload []byte) []byte {
	return append(appendHeader(dst, op, len(payload)), payload...)
}

func appendHeader(dst []byte, op byte, n int) []byte {
	dst = append(dst, 0x80|op) // FIN, no RSV bits: never compressed
	switch {
	case n < 126:
		return append(dst, byte(n))
	case n <= 0xFFFF:
		return binary.BigEndian.AppendUint16(append(dst, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(dst, 127), uint64(n))
	}
}
