package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/parley-chat/parley/chatserver/message"
)

// A connect storm on two replicas: many users, several connections each,
// all admitted at once, so admissions of different users and of the same
// user share groups on both replicas. Each user ends with exactly the limit
// admitted and stored, and the groups never deadlock one another.
func TestGroupedAdmissionsStayExact(t *testing.T) {
	replicas := twoReplicas(t, "parley_admit")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const users, each, limit = 40, 9, 4
	admitted := make([]int, users)
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, users*each)
	for u := range users {
		for c := range each {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ch := fmt.Sprintf("$conns:u%d", u)
				ok, err := replicas[(u+c)%2].AdmitPresence(ctx, ch, message.ClientInfo{User: fmt.Sprint("u", u), Client: fmt.Sprintf("u%d-c%d", u, c)}, limit)
				if err != nil {
					errs <- err
					return
				}
				if ok {
					mu.Lock()
					admitted[u]++
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for u := range users {
		n, _, err := replicas[0].PresenceStats(ctx, fmt.Sprintf("$conns:u%d", u))
		if err != nil {
			t.Fatal(err)
		}
		if admitted[u] != limit || n != limit {
			t.Fatalf("user %d: %d of %d connections admitted, %d entries stored; want exactly %d", u, admitted[u], each, n, limit)
		}
	}
}
