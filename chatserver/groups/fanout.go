package groups

import (
	"context"
	"sync"
	"time"
)

// Inbox pushes go to every member of a conversation, one broker publish
// (with its confirm) each: they run in parallel, and after a message off
// the publisher's path, so a big group does not slow the sender down.
const (
	// fanOutParallel bounds the publishes of one fan-out in flight at once.
	fanOutParallel = 16
	// fanOutsInFlight bounds the asynchronous fan-outs of a replica; past
	// it the publisher waits for its own (back-pressure, not an unbounded
	// pile of goroutines).
	fanOutsInFlight = 64
	// fanOutTimeout bounds one asynchronous fan-out.
	fanOutTimeout = 10 * time.Second
)

// fanOut runs fn for every user, fanOutParallel at a time, and returns
// when all are done.
func fanOut(users []string, fn func(user string)) {
	if len(users) == 1 {
		fn(users[0])
		return
	}
	sem := make(chan struct{}, fanOutParallel)
	var wg sync.WaitGroup
	for _, u := range users {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			fn(u)
		})
	}
	wg.Wait()
}

// fanOutAsync runs fanOut off the caller's path when a slot is free, and
// in the caller otherwise; Wait waits for those still running.
func (s *Service) fanOutAsync(ctx context.Context, users []string, fn func(ctx context.Context, user string)) {
	select {
	case s.slots <- struct{}{}:
	default:
		fanOut(users, func(u string) { fn(ctx, u) })
		return
	}
	s.running.Go(func() {
		defer func() { <-s.slots }()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fanOutTimeout)
		defer cancel()
		fanOut(users, func(u string) { fn(ctx, u) })
	})
}

// Wait waits for the inbox pushes still under way (the node calls it when
// it stops, before the broker closes).
func (s *Service) Wait() { s.running.Wait() }
