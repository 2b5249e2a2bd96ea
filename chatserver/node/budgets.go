package node

import (
	"sync"
	"time"

	"github.com/parley-chat/parley/chatserver/internal/bucket"
)

// BudgetBurstSeconds is how many seconds of a command budget's rate a
// client may spend at once: a reconnecting client resubscribing to its
// channels, or a page of history, is a burst, not abuse.
const BudgetBurstSeconds = 10

// userBudgets are the command budgets shared by each user's connections on
// this node (limits.userCommandCostPerSecond), so opening more connections
// does not multiply what a user may cost.
type userBudgets struct {
	mu sync.Mutex
	m  map[string]*userBudget
}

type userBudget struct {
	b     *bucket.Bucket
	conns int
}

// UserBudget returns the command budget user's connections share on this
// node and registers one more connection using it; the connection calls
// ReleaseUserBudget when it ends. Anonymous connections (user "") share
// none: nil, which every Take allows.
func (n *Node) UserBudget(user string) *bucket.Bucket {
	rate := float64(n.cfg.Limits.UserCommandCostPerSecond)
	if user == "" || rate <= 0 {
		return nil
	}
	n.budgets.mu.Lock()
	defer n.budgets.mu.Unlock()
	if n.budgets.m == nil {
		n.budgets.m = map[string]*userBudget{}
	}
	ub := n.budgets.m[user]
	if ub == nil {
		ub = &userBudget{b: bucket.New(rate, rate*BudgetBurstSeconds)}
		n.budgets.m[user] = ub
	}
	ub.conns++
	return ub.b
}

// ReleaseUserBudget undoes one UserBudget. After the user's last
// connection on this node the budget is kept until it has refilled, so
// reconnecting does not buy a fresh one; then it is dropped (a full budget
// and a new one are the same).
func (n *Node) ReleaseUserBudget(user string) {
	n.budgets.mu.Lock()
	defer n.budgets.mu.Unlock()
	ub := n.budgets.m[user]
	if ub == nil {
		return
	}
	if ub.conns--; ub.conns > 0 {
		return
	}
	wait := ub.b.UntilFull()
	if wait <= 0 {
		delete(n.budgets.m, user)
		return
	}
	time.AfterFunc(wait, func() {
		n.budgets.mu.Lock()
		defer n.budgets.mu.Unlock()
		if n.budgets.m[user] == ub && ub.conns == 0 {
			delete(n.budgets.m, user)
		}
	})
}
