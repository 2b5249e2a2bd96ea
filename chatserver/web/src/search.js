// Search: the "search" RPC over the user's conversations; a hit opens its
// conversation at that message (rooms.js jumpTo loads history back to it).
import { state, roomLabel } from './state.js';
import { $, el, errorText, snippetNodes, shortTime } from './util.js';
import { openConversation } from './inbox.js';
import { jumpTo } from './rooms.js';

const LIMIT = 20;

async function search(query) {
  const status = $('search-status');
  status.textContent = 'Searching…';
  $('search-results').replaceChildren();
  try {
    const res = await state.client.rpc('search', { query, limit: LIMIT });
    const hits = (res.data && res.data.hits) || [];
    status.textContent = hits.length === 0 ? 'No messages found.' : hits.length + (hits.length === 1 ? ' message found.' : ' messages found.');
    $('search-results').replaceChildren(...hits.map((h) => el('li', {},
      el('button', { type: 'button', class: 'hit', 'data-testid': 'search-hit', 'data-channel': h.channel, 'data-offset': h.offset,
        onclick: () => open(h) },
      el('span', { class: 'hit-where', text: (h.title || roomLabel(h.channel)) + (h.user ? ' · ' + h.user : '') + ' · ' + shortTime(h.time) }),
      el('span', { class: 'hit-snippet' }, ...snippetNodes(h.snippet))))));
  } catch (err) {
    status.textContent = 'Search failed: ' + errorText(err);
  }
}

async function open(hit) {
  if (!state.inbox.has(hit.channel)) {
    // A conversation on an inbox page not loaded yet: listed (last) until the
    // next reload, so the page treats it as the conversation it is.
    state.inbox.set(hit.channel, { channel: hit.channel, title: hit.title || '', last_offset: hit.offset, unread: 0, mentions: 0, rank: 1e9 });
  }
  const room = openConversation(hit.channel);
  await jumpTo(room, hit.offset);
}

export function wireSearch() {
  $('search-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const q = $('search-input').value.trim();
    if (q) search(q);
  });
}
