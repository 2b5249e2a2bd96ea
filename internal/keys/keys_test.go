package keys

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// seq returns a generator of predictable keys k1, k2, ….
func seq() func() (string, error) {
	n := 0
	return func() (string, error) {
		n++
		return fmt.Sprintf("k%d", n), nil
	}
}

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func TestGenerateIsRandomLongAndTrimSafe(t *testing.T) {
	a, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Generate()
	if a == b {
		t.Fatal("two generated keys are equal")
	}
	if len(a) != 43 || strings.TrimSpace(a) != a || strings.ContainsAny(a, "+/=") {
		t.Fatalf("key %q: want 43 URL-safe characters", a)
	}
	if err := Validate(a); err != nil {
		t.Fatal(err)
	}
}

func TestValidateRefusesShortKeys(t *testing.T) {
	if err := Validate("   short   "); err == nil {
		t.Fatal("a short key was accepted")
	}
	if err := Validate(strings.Repeat("x", 31) + "\n"); err == nil {
		t.Fatal("a 31-byte key (plus newline) was accepted")
	}
	if err := Validate(strings.Repeat("x", 32)); err != nil {
		t.Fatal(err)
	}
}

func TestReconcile(t *testing.T) {
	overlap := time.Hour
	cases := []struct {
		name           string
		ring           Ring
		request        string
		now            time.Time
		want           Ring
		gen, rot, drop bool
		requeue        time.Duration
	}{
		{
			name: "no key: generate one",
			now:  t0,
			want: Ring{Current: "k1"},
			gen:  true,
		},
		{
			name:    "no key and a pending request: generate, remember the request, nothing to keep",
			request: "r1",
			now:     t0,
			want:    Ring{Current: "k1", Request: "r1"},
			gen:     true,
		},
		{
			name: "a key and no request: nothing to do",
			ring: Ring{Current: "user-key"},
			now:  t0,
			want: Ring{Current: "user-key"},
		},
		{
			name:    "the request already honoured: nothing to do",
			ring:    Ring{Current: "c", Request: "r1"},
			request: "r1",
			now:     t0,
			want:    Ring{Current: "c", Request: "r1"},
		},
		{
			name:    "a new request: rotate and keep the old key for the overlap",
			ring:    Ring{Current: "c", Request: "r1"},
			request: "r2",
			now:     t0,
			want:    Ring{Current: "k1", Previous: "c", RotatedAt: t0, Request: "r2"},
			rot:     true,
			requeue: overlap,
		},
		{
			name:    "during the overlap: keep both, look again when it ends",
			ring:    Ring{Current: "k1", Previous: "c", RotatedAt: t0, Request: "r2"},
			request: "r2",
			now:     t0.Add(40 * time.Minute),
			want:    Ring{Current: "k1", Previous: "c", RotatedAt: t0, Request: "r2"},
			requeue: 20 * time.Minute,
		},
		{
			name:    "overlap over: drop the previous key",
			ring:    Ring{Current: "k1", Previous: "c", RotatedAt: t0, Request: "r2"},
			request: "r2",
			now:     t0.Add(overlap),
			want:    Ring{Current: "k1", Request: "r2"},
			drop:    true,
		},
		{
			name:    "request annotation removed: the last one is still remembered",
			ring:    Ring{Current: "c", Request: "r2"},
			request: "",
			now:     t0,
			want:    Ring{Current: "c", Request: "r2"},
		},
		{
			name:    "a second request during the overlap: the oldest key goes at once",
			ring:    Ring{Current: "k0", Previous: "c", RotatedAt: t0, Request: "r2"},
			request: "r3",
			now:     t0.Add(10 * time.Minute),
			want:    Ring{Current: "k1", Previous: "k0", RotatedAt: t0.Add(10 * time.Minute), Request: "r3"},
			rot:     true,
			requeue: overlap,
		},
		{
			name:    "a previous key written by hand: its overlap starts now",
			ring:    Ring{Current: "c", Previous: "old"},
			now:     t0,
			want:    Ring{Current: "c", Previous: "old", RotatedAt: t0},
			requeue: overlap,
		},
		{
			name:    "a rotation time in the future is not trusted",
			ring:    Ring{Current: "c", Previous: "old", RotatedAt: t0.Add(24 * time.Hour)},
			now:     t0,
			want:    Ring{Current: "c", Previous: "old", RotatedAt: t0},
			requeue: overlap,
		},
		{
			name: "a stale rotation time without a previous key is cleared",
			ring: Ring{Current: "c", RotatedAt: t0},
			now:  t0,
			want: Ring{Current: "c"},
		},
		{
			name:    "sub-second clocks are stored with second precision",
			ring:    Ring{Current: "c"},
			request: "r1",
			now:     t0.Add(700 * time.Millisecond),
			want:    Ring{Current: "k1", Previous: "c", RotatedAt: t0, Request: "r1"},
			rot:     true,
			requeue: overlap,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Reconcile(tc.ring, tc.request, tc.now, overlap, seq())
			if err != nil {
				t.Fatal(err)
			}
			if !p.Ring.Equal(tc.want) {
				t.Errorf("ring = %+v, want %+v", p.Ring, tc.want)
			}
			if p.Generated != tc.gen || p.Rotated != tc.rot || p.Dropped != tc.drop {
				t.Errorf("generated/rotated/dropped = %v/%v/%v, want %v/%v/%v", p.Generated, p.Rotated, p.Dropped, tc.gen, tc.rot, tc.drop)
			}
			if p.RequeueAfter != tc.requeue {
				t.Errorf("RequeueAfter = %s, want %s", p.RequeueAfter, tc.requeue)
			}
			if p.Changed(tc.ring) != !tc.ring.Equal(tc.want) {
				t.Errorf("Changed = %v", p.Changed(tc.ring))
			}
		})
	}
}

func TestRotationKeepsTheOldKeyValidForTheOverlapThenDropsIt(t *testing.T) {
	// A whole life cycle, as the controller drives it: accepted(key) is what
	// the chat servers accept (current and, if set, previous).
	overlap := 30 * time.Minute
	gen := seq()
	accepted := func(r Ring, key string) bool { return key != "" && (key == r.Current || key == r.Previous) }
	step := func(r Ring, req string, now time.Time) Plan {
		t.Helper()
		p, err := Reconcile(r, req, now, overlap, gen)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := step(Ring{}, "", t0)
	first := p.Ring.Current
	p = step(p.Ring, "rotate-1", t0.Add(time.Minute))
	second := p.Ring.Current
	if first == second || !accepted(p.Ring, first) || !accepted(p.Ring, second) {
		t.Fatalf("right after rotation both keys must be accepted: %+v", p.Ring)
	}
	justBefore := t0.Add(time.Minute + overlap - time.Second)
	p = step(p.Ring, "rotate-1", justBefore)
	if !accepted(p.Ring, first) {
		t.Fatal("the old key was dropped before the overlap ended")
	}
	p = step(p.Ring, "rotate-1", justBefore.Add(p.RequeueAfter))
	if accepted(p.Ring, first) || !accepted(p.Ring, second) || !p.Dropped {
		t.Fatalf("after the overlap only the new key must be accepted: %+v", p.Ring)
	}
	if p.RequeueAfter != 0 {
		t.Errorf("nothing pending, but RequeueAfter = %s", p.RequeueAfter)
	}
}

func TestReconcileErrors(t *testing.T) {
	boom := errors.New("entropy exhausted")
	failing := func() (string, error) { return "", boom }
	r := Ring{Current: "c"}
	if p, err := Reconcile(Ring{}, "", t0, time.Hour, failing); !errors.Is(err, boom) || !p.Ring.Equal(Ring{}) {
		t.Errorf("generation failure: %v, %+v", err, p.Ring)
	}
	if p, err := Reconcile(r, "r", t0, time.Hour, failing); !errors.Is(err, boom) || !p.Ring.Equal(r) {
		t.Errorf("rotation failure must leave the ring as it was: %v, %+v", err, p.Ring)
	}
	if _, err := Reconcile(r, "", t0, -time.Second, seq()); err == nil {
		t.Error("negative overlap accepted")
	}
}

func TestLayoutRoundTripsThroughSecretDataAndAnnotations(t *testing.T) {
	for _, l := range []Layout{JWT, APIKey} {
		r := Ring{Current: "new", Previous: "old", RotatedAt: t0, Request: "2030-01-02"}
		data, ann := map[string][]byte{}, map[string]string{"unrelated": "kept"}
		l.Write(r, data, ann)
		if got := l.Read(data, ann); !got.Equal(r) {
			t.Errorf("%+v: round trip gave %+v", l, got)
		}
		if string(data[l.CurrentKey]) != "new" || string(data[l.PreviousKey]) != "old" {
			t.Errorf("data = %q", data)
		}
		// After the overlap the previous key is emptied, not removed, and the
		// rotation time goes.
		l.Write(Ring{Current: "new", Request: "2030-01-02"}, data, ann)
		if v, ok := data[l.PreviousKey]; !ok || len(v) != 0 {
			t.Errorf("previous key after drop: %q, present %v; want present and empty", v, ok)
		}
		if _, ok := ann[RotatedAtAnnotation]; ok {
			t.Error("rotated-at annotation left behind")
		}
		if ann["unrelated"] != "kept" {
			t.Error("an unrelated annotation was touched")
		}
		l.Write(Ring{Current: "x"}, data, ann)
		if _, ok := ann[RotationRequestAnnotation]; ok {
			t.Error("empty request still annotated")
		}
	}
	if got := JWT.Read(map[string][]byte{"current": []byte("c")}, map[string]string{RotatedAtAnnotation: "yesterday"}); !got.RotatedAt.IsZero() {
		t.Errorf("unparsable time read as %v", got.RotatedAt)
	}
}

func TestReconcileSuppliedCopiesTheUsersKeyAndKeepsTheReplacedOneForTheOverlap(t *testing.T) {
	overlap := time.Hour
	userKey := strings.Repeat("u", 32)
	newUserKey := strings.Repeat("v", 32)

	p, err := ReconcileSupplied(Ring{}, userKey, t0, overlap)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Ring.Equal(Ring{Current: userKey}) || !p.Generated {
		t.Fatalf("first copy: %+v", p)
	}
	if again, _ := ReconcileSupplied(p.Ring, userKey, t0.Add(time.Minute), overlap); again.Changed(p.Ring) {
		t.Fatalf("an unchanged user key changed the ring: %+v", again.Ring)
	}
	p, err = ReconcileSupplied(p.Ring, newUserKey, t0.Add(time.Minute), overlap)
	if err != nil {
		t.Fatal(err)
	}
	want := Ring{Current: newUserKey, Previous: userKey, RotatedAt: t0.Add(time.Minute)}
	if !p.Ring.Equal(want) || !p.Rotated || p.RequeueAfter != overlap {
		t.Fatalf("user changed the key: %+v, want ring %+v rotated, requeue %s", p, want, overlap)
	}
	p, _ = ReconcileSupplied(p.Ring, newUserKey, t0.Add(time.Minute+overlap), overlap)
	if !p.Ring.Equal(Ring{Current: newUserKey}) || !p.Dropped {
		t.Fatalf("after the overlap: %+v", p)
	}
	// A generated key replaced by a user's: the generated one is kept for the overlap.
	p, _ = ReconcileSupplied(Ring{Current: "generated", Request: "r1"}, userKey, t0, overlap)
	if !p.Ring.Equal(Ring{Current: userKey, Previous: "generated", RotatedAt: t0, Request: "r1"}) {
		t.Fatalf("generated → supplied: %+v", p.Ring)
	}
	if _, err := ReconcileSupplied(Ring{}, "short", t0, overlap); err == nil {
		t.Fatal("a short user key was accepted")
	}
}
