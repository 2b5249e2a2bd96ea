package amqp

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/parley-chat/parley/chatserver/message"
)

func packOf(t testing.TB, n int) ([]*packItem, []byte) {
	t.Helper()
	var items []*packItem
	for i := range n {
		body, err := marshalPublication(&message.Publication{
			Offset: uint64(i + 1),
			Data:   []byte(fmt.Sprintf(`{"n":%d}`, i)),
			Info:   &message.ClientInfo{User: "u", Client: "c"},
			Tags:   map[string]string{"k": "v"},
		})
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, &packItem{channel: fmt.Sprint("room:", i%3), sp: message.StreamPosition{Epoch: "ep", Offset: uint64(i + 1)}, pub: body})
	}
	return items, encodePack(items)
}

func TestPackRoundTrip(t *testing.T) {
	items, body := packOf(t, 5)
	entries, err := decodePack(body)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(items) {
		t.Fatalf("%d entries, want %d", len(entries), len(items))
	}
	for i, e := range entries {
		it := items[i]
		if e.channel != it.channel || e.sp != it.sp || e.pub.Offset != uint64(i+1) ||
			!bytes.Equal(e.pub.Data, []byte(fmt.Sprintf(`{"n":%d}`, i))) || e.pub.Info.User != "u" || e.pub.Tags["k"] != "v" {
			t.Errorf("entry %d: %+v %+v, want %+v", i, e, e.pub, it)
		}
	}
}

// TestDecodePackRefusesDamage: every truncation, a foreign version, an
// empty pack and one over the entry limit are errors, never a panic or a
// partial delivery.
func TestDecodePackRefusesDamage(t *testing.T) {
	_, body := packOf(t, 3)
	for n := 0; n < len(body); n++ {
		entries, err := decodePack(body[:n])
		if err == nil {
			// A cut exactly between two entries is a shorter valid pack.
			if n < 2 || len(entries) == 0 || len(entries) >= 3 {
				t.Fatalf("cut at %d of %d: %d entries, no error", n, len(body), len(entries))
			}
		}
	}
	bad := bytes.Clone(body)
	bad[0] = 2
	if _, err := decodePack(bad); err == nil {
		t.Error("version 2 accepted")
	}
	if _, err := decodePack([]byte{packVersion}); err == nil {
		t.Error("empty pack accepted")
	}
	// An empty channel name.
	if _, err := decodePack([]byte{packVersion, 0, 0, 1, 0}); err == nil {
		t.Error("empty channel accepted")
	}
	// A length beyond the body.
	if _, err := decodePack([]byte{packVersion, 0xff, 0xff, 0xff, 0xff, 0x0f, 'a'}); err == nil {
		t.Error("huge length accepted")
	}
	_, many := packOf(t, maxPackEntries+1)
	if _, err := decodePack(many); err == nil {
		t.Errorf("%d entries accepted", maxPackEntries+1)
	}
}

func FuzzDecodePack(f *testing.F) {
	_, body := packOf(f, 3)
	f.Add(body)
	f.Add([]byte{packVersion, 1, 'r', 0, 5, 2, 0x0a, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		entries, err := decodePack(b)
		if err == nil && len(entries) == 0 {
			t.Fatal("no error and no entries")
		}
	})
}
