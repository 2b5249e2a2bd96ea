package bucket

import (
	"testing"
	"time"
)

func TestBucketSpendsAndRecovers(t *testing.T) {
	b := New(100, 10)
	for i := range 10 {
		if !b.Take(1) {
			t.Fatalf("take %d refused within the burst", i)
		}
	}
	if b.Take(1) {
		t.Fatal("take past the burst allowed")
	}
	time.Sleep(50 * time.Millisecond) // 5 tokens back
	if !b.Take(4) {
		t.Fatal("the budget did not recover")
	}
	if b.Take(30) {
		t.Fatal("a cost above the burst can never be paid")
	}
	b.Refund(100)
	if b.UntilFull() != 0 {
		t.Fatal("a full bucket has nothing left to refill")
	}
	if !b.Take(10) || b.Take(1) {
		t.Fatal("refund must not raise the bucket above its burst")
	}
	if d := b.UntilFull(); d < 90*time.Millisecond || d > 100*time.Millisecond {
		t.Fatalf("an empty bucket of 10 at 100/s is full in %s, want 100ms", d)
	}
}

func TestDisabledBucketAllowsAll(t *testing.T) {
	var nilBucket *Bucket
	for _, b := range []*Bucket{New(0, 0), nilBucket} {
		for range 1000 {
			if !b.Take(5) {
				t.Fatal("a disabled bucket refused")
			}
		}
	}
}
