package transport

import (
	"sync"
	"time"

	"github.com/centrifugal/protocol"
	"github.com/gorilla/websocket"

	"github.com/parley-chat/parley/chatserver/codes"
	"github.com/parley-chat/parley/chatserver/metrics"
)

// conn is one WebSocket connection's write side: a byte-bounded queue of
// encoded replies and a write pump that drains it in batched frames.
type conn struct {
	ws       *websocket.Conn
	proto    protocol.Type
	maxQueue int
	metrics  *metrics.Metrics

	mu        sync.Mutex
	queue     [][]byte
	queued    int
	closeWith *codes.Disconnect
	wake      chan struct{}
	done      chan struct{}
}

// Protocol implements session.Transport.
func (c *conn) Protocol() protocol.Type { return c.proto }

// Enqueue implements session.Transport.
func (c *conn) Enqueue(data []byte) bool {
	c.mu.Lock()
	if c.closeWith != nil {
		c.mu.Unlock()
		return true // closing anyway: not a slow consumer
	}
	if c.maxQueue > 0 && c.queued+len(data) > c.maxQueue {
		c.mu.Unlock()
		return false
	}
	c.queue = append(c.queue, data)
	c.queued += len(data)
	c.mu.Unlock()
	c.signal()
	return true
}

// Close implements session.Transport: the first close wins. A slow client
// is not waited for: a write blocked on it is cut short so the close happens
// now rather than at the write timeout.
func (c *conn) Close(d codes.Disconnect) {
	c.mu.Lock()
	first := c.closeWith == nil
	if first {
		c.closeWith = &d
	}
	c.mu.Unlock()
	if first && d == codes.DisconnectSlow {
		_ = c.ws.NetConn().SetWriteDeadline(time.Now())
	}
	c.signal()
}

func (c *conn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// writePump writes everything queued as one frame per wake-up, then the close
// frame once Close was called, and closes the socket.
func (c *conn) writePump() {
	defer close(c.done)
	defer c.ws.Close()
	enc := protocol.GetDataEncoder(c.proto)
	defer protocol.PutDataEncoder(c.proto, enc)
	msgType := websocket.TextMessage
	if c.proto == protocol.TypeProtobuf {
		msgType = websocket.BinaryMessage
	}
	for range c.wake {
		c.mu.Lock()
		batch := c.queue
		c.queue, c.queued = nil, 0
		closeWith := c.closeWith
		c.mu.Unlock()
		if len(batch) > 0 {
			enc.Reset()
			for _, m := range batch {
				_ = enc.Encode(m)
			}
			frame := enc.FinishNoCopy()
			_ = c.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
			if err := c.ws.WriteMessage(msgType, frame); err != nil {
				return
			}
			c.metrics.BytesOut.Add(float64(len(frame)))
		}
		if closeWith != nil {
			msg := websocket.FormatCloseMessage(int(closeWith.Code), closeWith.Reason)
			_ = c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
			return
		}
	}
}
