package web_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/parley-chat/parley/chatserver/internal/testenv"
	"github.com/parley-chat/parley/chatserver/servertest"
)

// TestBrowserGroups runs test/browser-groups.mjs: the story of issue 17 in
// headless Chromium, five pages on two replicas that share fresh RabbitMQ
// exchanges and a fresh PostgreSQL database (servertest.Config has the
// group namespace "grp", "dm" for DMs and the personal namespace). Alice
// creates a group and invites bob (by user id) and carol and mallory (by
// link); bob, on a phone and a desktop page at once, reads on one and the
// badge clears on the other; alice makes carol admin, carol bans mallory,
// whose open page says so and shows nothing more; bob finds a message by
// search and jumps to it; bob starts a DM with alice by user id.
//
// Screenshots of the key steps go to artifacts/web-groups/ (failures too);
// with PARLEY_UPDATE_SCREENSHOTS=1 the key steps go to docs/screenshots/web-groups/,
// which docs/clients.md shows.
func TestBrowserGroups(t *testing.T) {
	if testing.Short() {
		t.Skip("real-browser test skipped in -short mode")
	}
	node := browserDeps(t)

	top := testenv.NewTopology(t)
	db := testenv.NewDatabase(t, "parley_webgroups")
	a := startReplica(t, 0, top, db)
	b := startReplica(t, 1, top, db)

	artifacts := artifactsDir(t, "web-groups")
	removeOldScreenshots(artifacts)
	shots := artifacts
	if os.Getenv("PARLEY_UPDATE_SCREENSHOTS") == "1" {
		abs, err := filepath.Abs("../../docs/screenshots/web-groups")
		if err != nil {
			t.Fatal(err)
		}
		shots = abs
		removeOldScreenshots(shots)
	}
	runBrowserScript(t, node, "test/browser-groups.mjs", 4*time.Minute, wantGroupSteps,
		"PARLEY_URL_A="+a.HTTP,
		"PARLEY_URL_B="+b.HTTP,
		"PARLEY_ADMIN_URL_A="+a.Admin, // the HTTP API is on the admin listener
		"PARLEY_API_KEY="+servertest.APIKey,
		"PARLEY_TOKEN_ALICE="+profileToken(t, "alice", "Alice Archer"),
		"PARLEY_TOKEN_BOB="+profileToken(t, "bob", "Bob Baker"),
		"PARLEY_TOKEN_CAROL="+profileToken(t, "carol", "Carol Chen"),
		"PARLEY_TOKEN_MALLORY="+profileToken(t, "mallory", "Mallory Moss"),
		"PARLEY_ARTIFACTS="+artifacts,
		"PARLEY_SCREENSHOTS="+shots,
		"PARLEY_CHROMIUM="+chromiumPath,
	)
	t.Logf("screenshots in %s", shots)
}

// wantGroupSteps is how many "ok" lines test/browser-groups.mjs prints.
const wantGroupSteps = 16
