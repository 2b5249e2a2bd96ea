package parleycli

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/centrifugal/centrifuge-go"
)

const historyHelp = `history [flags] ROOM

Prints ROOM's history, oldest first. In text, edits and deletions are applied
to the messages they change (--raw shows them as they were published); --json
prints every publication as it is stored, one JSON object per line.`

func runHistory(ctx context.Context, args []string, env Env) error {
	fs := newFlagSet("history", historyHelp, env)
	var cf connFlags
	cf.register(fs)
	jsonOut := fs.Bool("json", false, "print one JSON object per publication")
	raw := fs.Bool("raw", false, "text: show edits and deletions as publications instead of applying them")
	limit := fs.Int("limit", 50, "how many publications (the newest, unless --since); -1 for all the server keeps")
	since := fs.Uint64("since", 0, "only publications after this offset (needs --epoch)")
	epoch := fs.String("epoch", "", "the stream epoch --since refers to")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErr("give exactly one ROOM (got %d arguments)", len(pos))
	}
	if *limit == 0 || *limit < -1 {
		return usageErr("--limit must be positive or -1")
	}
	if (*since != 0) != (*epoch != "") {
		return usageErr("--since and --epoch go together")
	}
	channel, err := ChannelFor(pos[0])
	if err != nil {
		return err
	}
	endpoint, token, err := cf.resolve(env)
	if err != nil {
		return err
	}
	s, err := dial(ctx, endpoint, token, cf.timeout, nil)
	if err != nil {
		return err
	}
	defer s.Close()

	opts := []centrifuge.HistoryOption{centrifuge.WithHistoryLimit(int32(*limit))}
	reversed := *since == 0 // the newest page, asked for newest first
	if *since != 0 {
		opts = append(opts, centrifuge.WithHistorySince(&centrifuge.StreamPosition{Offset: *since, Epoch: *epoch}))
	} else {
		opts = append(opts, centrifuge.WithHistoryReverse(true))
	}
	hctx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	res, err := s.client.History(hctx, channel, opts...)
	var pe *centrifuge.Error
	if errors.As(err, &pe) && pe.Code == 103 {
		// Most rooms let only their members read history: join quietly and ask again.
		sub, serr := s.subscribe(ctx, channel, centrifuge.SubscriptionConfig{}, cf.timeout, nil)
		if serr != nil {
			return serr
		}
		res, err = sub.History(hctx, opts...)
	}
	if err != nil {
		return fmt.Errorf("history of %s: %w", channel, describe(err))
	}
	pubs := res.Publications
	if reversed {
		pubs = slices.Clone(pubs)
		slices.Reverse(pubs)
	}
	events := make([]Event, 0, len(pubs))
	for _, p := range pubs {
		events = append(events, publicationEvent(channel, p))
	}
	out := &printer{w: env.Stdout, json: *jsonOut}
	if !*jsonOut && !*raw {
		events = applyChanges(events)
	}
	for _, e := range events {
		out.print(e)
	}
	if err := out.failed(); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

// applyChanges folds edits and deletions into the messages they refer to
// (the latest change wins; a deletion is final). Changes to messages outside
// the page stay as they are, so nothing is silently lost.
func applyChanges(events []Event) []Event {
	index := map[uint64]int{}
	deleted := map[int]bool{}
	var out []Event
	for _, e := range events {
		i, ok := index[e.Ref]
		switch {
		case e.Type == "message":
			index[e.Offset] = len(out)
			out = append(out, e)
		case (e.Type == "edit" || e.Type == "delete") && !ok:
			out = append(out, e)
		case deleted[i]:
		case e.Type == "delete":
			deleted[i] = true
			out[i].Text, out[i].Data = "[deleted]", nil
		case e.Type == "edit":
			text := e.Text
			if text == "" {
				text = string(e.Data)
			}
			out[i].Text, out[i].Data = text+" (edited)", e.Data
		}
	}
	return out
}
