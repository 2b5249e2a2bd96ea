// The page's state, shared by its modules.

export const HISTORY_PAGE = 50;
export const TOKEN_KEY = 'parley.token';
export const ACTIVE_KEY = 'parley.active';
export const JOIN_KEY = 'parley.join';

export const state = {
  client: null,
  token: '',
  user: '',
  claims: {},
  rooms: new Map(), // channel → room (subscribed, or a conversation opened once)
  active: null,
  lastTypingSent: 0,
  signingOut: false,
  // The inbox (RPC "inbox", kept current by pushes on the personal channel).
  inbox: new Map(), // channel → entry {channel, title, last_offset, last_at, preview, unread, mentions, …}
  inboxLoaded: 0, // how many conversations the last load asked for (paging)
  inboxMore: false,
  readTop: new Map(), // channel → last_offset of the latest read event (stale message events are dropped)
  gone: new Map(), // channel → why this user can no longer read it (removed, banned, left, deleted)
};

// roomLabel is what the page calls a channel: the inbox title of a group or
// DM, "#lobby" for a room.
export function roomLabel(channel) {
  const e = state.inbox.get(channel);
  if (e && e.title) return e.title;
  if (channel.startsWith('room:')) return '#' + channel.slice(5);
  if (channel.startsWith('dm:#')) {
    const others = channel.slice(4).split(',').filter((u) => u !== state.user);
    return others.length ? others.join(', ') : state.user;
  }
  return channel;
}

// isConversation: a channel the inbox lists (a group, or a DM), as opposed
// to a public room this browser remembers.
export function isConversation(channel) {
  return state.inbox.has(channel) || channel.startsWith('dm:#');
}
