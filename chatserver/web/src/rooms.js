// Rooms: one per channel the page has open (a public room from the room
// list, or a conversation from the inbox). Subscribing, history, presence,
// typing, unread state and read receipts.
import { state, HISTORY_PAGE, ACTIVE_KEY, roomLabel, isConversation } from './state.js';
import { $, el, isDM, isTemporary, errorText, sleep } from './util.js';
import { ingest, placeUnreadMarker, removeUnreadMarker, refreshReceipts } from './messages.js';
import { renderInbox, markGone, localRead, goneText, refreshGroupHeader } from './inbox.js';

const TYPING_SEND_EVERY_MS = 2500;
const TYPING_SHOW_MS = 4000;

export function savedRooms() {
  try {
    const v = JSON.parse(localStorage.getItem('parley.rooms:' + state.user) || '[]');
    return Array.isArray(v) ? v.filter((c) => typeof c === 'string') : [];
  } catch {
    return [];
  }
}

// saveRooms remembers the public rooms joined in this browser: they have no
// membership on the server, so no inbox lists them (groups and DMs are the
// inbox's).
export function saveRooms() {
  const rooms = [...state.rooms.values()].filter((r) => r.item).map((r) => r.channel);
  localStorage.setItem('parley.rooms:' + state.user, JSON.stringify(rooms));
}

export function setStatus(kind, text) {
  const s = $('conn-status');
  s.dataset.state = kind;
  s.textContent = text;
  const enabled = state.active !== null && !state.active.gone;
  $('composer-input').disabled = !enabled;
  $('send').disabled = !enabled;
}

// ---------------------------------------------------------------- rooms

// addRoom opens a channel: a public room gets an entry in the room list; a
// conversation (group or DM) is listed by the inbox instead.
export function addRoom(channel) {
  if (state.rooms.has(channel)) return state.rooms.get(channel);
  const conversation = isConversation(channel);
  const list = el('ol', { class: 'messages' });
  const room = {
    channel,
    messages: new Map(), // offset → message
    changes: new Map(), // offset of an original not loaded yet → latest edit/delete
    log: el('div', { role: 'log', 'aria-live': 'polite', 'aria-label': 'Messages in ' + roomLabel(channel) }, list),
    list,
    epoch: '',
    top: 0, // highest offset seen in this channel
    oldest: 0, // lowest offset loaded from history
    loaded: false,
    noMore: false,
    loadingOlder: false,
    loadSeq: 0,
    lastRead: 0,
    unread: 0,
    marker: null,
    users: new Map(), // user → true (join/leave are per user)
    reads: new Map(), // other user → offset they have read up to
    typing: new Map(), // user → expiry (ms)
    historyStatus: '',
    scrollTop: null,
    error: '',
    gone: state.gone.get(channel) || '', // why this user may no longer read it
    item: null,
    button: null,
    badge: null,
  };
  state.rooms.set(channel, room);
  if (!conversation) {
    room.badge = el('span', { class: 'badge', hidden: true });
    room.button = el('button', { type: 'button', 'data-channel': channel, onclick: () => selectRoom(room) },
      el('span', { class: 'name', text: roomLabel(channel) }), room.badge);
    room.item = el('li', {}, room.button);
    $('room-list').append(room.item);
  }

  const sub = state.client.newSubscription(channel, { recoverable: true, positioned: true, joinLeave: true });
  room.sub = sub;
  sub.on('subscribed', (ctx) => onSubscribed(room, ctx));
  sub.on('publication', (ctx) => ingest(room, ctx, true));
  sub.on('join', (ctx) => {
    room.users.set(ctx.info.user || 'anonymous', true);
    renderOnline(room);
  });
  sub.on('leave', (ctx) => {
    const user = ctx.info.user || 'anonymous';
    room.users.delete(user);
    room.typing.delete(user);
    renderOnline(room);
    renderTyping(room);
  });
  sub.on('unsubscribed', (ctx) => {
    // 2100-2103: removed, banned, left, group deleted (docs/protocol.md); the
    // SDK does not resubscribe after them.
    // The member event on the personal channel says more (who, why): the
    // push that comes first wins only until the other brings the details.
    if (ctx.code >= 2100 && ctx.code <= 2103) {
      if (!state.gone.has(channel)) markGone(channel, goneText(channel, ctx.code));
    }
    else if (ctx.code !== 0) setRoomError(room, 'You are not in this room: ' + (ctx.reason || 'code ' + ctx.code));
  });
  sub.on('error', (ctx) => {
    if (ctx.type !== 'subscribe' || isTemporary(ctx.error)) return;
    // Refused a group it listed: this user was removed while the page was
    // offline (the unsubscribe push went to no connection of theirs).
    if (ctx.error.code === 103 && conversation && !isDM(channel)) markGone(channel, 'You are no longer a member of ' + roomLabel(channel) + '.');
    else setRoomError(room, 'Cannot join: ' + errorText(ctx.error));
  });
  if (room.gone) cutOffRoom(room, room.gone);
  else sub.subscribe();
  return room;
}

// cutOffRoom is what happens to a room this user may no longer read: the
// subscription ends, the messages go, and the page says why.
export function cutOffRoom(room, why) {
  room.gone = why;
  if (room.sub.state !== 'unsubscribed') room.sub.unsubscribe();
  resetRoom(room);
  room.loaded = true;
  room.noMore = true;
  room.users.clear();
  room.typing.clear();
  room.error = why;
  setHistoryStatus(room, ''); // the notice above the messages says why
  if (room === state.active) {
    renderOnline(room);
    renderTyping(room);
    renderNotice(room);
    setStatus($('conn-status').dataset.state, $('conn-status').textContent);
  }
}

function renderNotice(room) {
  const n = $('room-notice');
  n.hidden = !room || !room.gone;
  n.textContent = room && room.gone ? room.gone : '';
}

export function removeRoom(room) {
  room.sub.unsubscribe();
  state.client.removeSubscription(room.sub);
  state.rooms.delete(room.channel);
  if (room.item) room.item.remove();
  saveRooms();
  if (state.active === room) {
    state.active = null;
    const next = state.rooms.values().next().value;
    if (next) selectRoom(next);
    else renderEmpty();
  }
}

export function setRoomError(room, text) {
  room.error = text;
  setHistoryStatus(room, text);
}

export function renderEmpty() {
  $('room-title').textContent = 'No conversation selected';
  renderNotice(null);
  refreshGroupHeader(null);
  $('messages-host').replaceChildren();
  $('leave-room').hidden = true;
  $('online-count').textContent = '0 online';
  $('online-list').replaceChildren();
  $('typing').textContent = '';
  setStatus($('conn-status').dataset.state, $('conn-status').textContent);
}

export function selectRoom(room) {
  if (!room) return;
  const prev = state.active;
  if (prev && prev !== room) {
    prev.scrollTop = $('scroll').scrollTop;
    removeUnreadMarker(prev);
  }
  state.active = room;
  sessionStorage.setItem(ACTIVE_KEY, room.channel);
  state.rooms.forEach((r) => r.button && r.button.setAttribute('aria-current', r === room ? 'true' : 'false'));
  renderInbox();
  $('room-title').textContent = roomLabel(room.channel);
  $('leave-room').hidden = !room.item; // groups are left from the members panel
  renderNotice(room);
  refreshGroupHeader(room);
  $('messages-host').replaceChildren(room.log);
  if (prev !== room) removeUnreadMarker(room);
  placeUnreadMarker(room);
  renderOnline(room);
  renderTyping(room);
  renderHistoryControls(room);
  setStatus($('conn-status').dataset.state, $('conn-status').textContent);
  const sc = $('scroll');
  sc.scrollTop = room.scrollTop === null ? sc.scrollHeight : room.scrollTop;
  closeDrawer();
  markReadSoon(room);
}

async function onSubscribed(room, ctx) {
  const pos = ctx.streamPosition;
  const epochChanged = pos && room.epoch && pos.epoch !== room.epoch;
  if (pos) room.epoch = pos.epoch;
  if (!room.loaded || epochChanged || (ctx.wasRecovering && !ctx.recovered)) {
    // First subscribe, or a gap recovery could not fill: start from the latest page.
    resetRoom(room);
    if (pos) room.top = pos.offset;
    await loadLatest(room);
  } else if (pos && pos.offset > room.top) {
    room.top = pos.offset;
  }
  room.error = '';
  refreshPresence(room);
  refreshReceipts(room);
  if (room === state.active) markReadSoon(room);
}

export function resetRoom(room) {
  room.messages.clear();
  room.reads.clear(); // receipts belong to the history that was lost
  room.changes.clear();
  room.list.replaceChildren();
  room.marker = null;
  room.top = 0;
  room.oldest = 0;
  room.loaded = false;
  room.noMore = false;
  room.loadSeq++;
}

async function loadLatest(room) {
  const seq = room.loadSeq;
  setHistoryStatus(room, 'Loading messages…');
  try {
    const res = await room.sub.history({ limit: HISTORY_PAGE, reverse: true });
    if (seq !== room.loadSeq) return;
    room.epoch = res.epoch || room.epoch;
    if (res.offset > room.top) room.top = res.offset;
    const pubs = res.publications.slice().reverse();
    for (const p of pubs) ingest(room, p, false);
    room.oldest = pubs.length ? pubs[0].offset : res.offset + 1;
    room.noMore = pubs.length < HISTORY_PAGE || room.oldest <= 1;
    room.loaded = true;
    setHistoryStatus(room, room.noMore ? 'Start of the conversation' : '');
    if (room === state.active) {
      placeUnreadMarker(room);
      $('scroll').scrollTop = $('scroll').scrollHeight;
      markReadSoon(room);
    }
  } catch (err) {
    if (seq !== room.loadSeq) return;
    room.loaded = true;
    room.noMore = true;
    setHistoryStatus(room, err && err.code === 108 ? 'This room keeps no history' : 'Could not load history: ' + errorText(err));
  }
}

export async function loadOlder(room) {
  if (!room || !room.loaded || room.noMore || room.loadingOlder) return;
  room.loadingOlder = true;
  const seq = room.loadSeq;
  room.log.setAttribute('aria-busy', 'true');
  setHistoryStatus(room, 'Loading older messages…');
  try {
    const res = await room.sub.history({
      limit: HISTORY_PAGE,
      reverse: true,
      since: { offset: room.oldest, epoch: room.epoch },
    });
    if (seq !== room.loadSeq) return;
    const sc = $('scroll');
    const fromBottom = sc.scrollHeight - sc.scrollTop;
    const pubs = res.publications.slice().reverse();
    for (const p of pubs) ingest(room, p, false);
    if (pubs.length) room.oldest = pubs[0].offset;
    room.noMore = pubs.length < HISTORY_PAGE || room.oldest <= 1;
    if (room === state.active) sc.scrollTop = sc.scrollHeight - fromBottom;
    setHistoryStatus(room, room.noMore ? 'Start of the conversation' : 'Loaded ' + pubs.length + ' older messages');
  } catch (err) {
    if (err && err.code === 112) {
      // The history's epoch changed (history was lost): start over.
      resetRoom(room);
      refreshReceipts(room);
      await loadLatest(room);
    } else {
      setHistoryStatus(room, 'Could not load older messages: ' + errorText(err));
    }
  } finally {
    room.loadingOlder = false;
    room.log.removeAttribute('aria-busy');
  }
}

export function setHistoryStatus(room, text) {
  room.historyStatus = text;
  if (room === state.active) renderHistoryControls(room);
}

function renderHistoryControls(room) {
  $('history-status').textContent = room.historyStatus;
  $('load-older').hidden = !room.loaded || room.noMore;
}

// ---------------------------------------------------------------- presence, typing, receipts

async function refreshPresence(room) {
  try {
    const res = await room.sub.presence();
    room.users = new Map();
    for (const info of Object.values(res.clients || {})) room.users.set(info.user || 'anonymous', true);
  } catch {
    room.users = new Map(); // presence is off in this namespace, or not allowed
  }
  renderOnline(room);
}

export function renderOnline(room) {
  if (room !== state.active) return;
  const users = [...room.users.keys()].sort();
  $('online-count').textContent = users.length + ' online';
  $('online-list').replaceChildren(...users.map((u) => el('li', { text: u === state.user ? u + ' (you)' : u })));
}

export function showTyping(room, user) {
  room.typing.set(user, Date.now() + TYPING_SHOW_MS);
  renderTyping(room);
  setTimeout(() => renderTyping(room), TYPING_SHOW_MS + 50);
}

export function renderTyping(room) {
  const now = Date.now();
  for (const [u, until] of room.typing) if (until <= now) room.typing.delete(u);
  if (room !== state.active) return;
  const names = [...room.typing.keys()].sort();
  let text = '';
  if (names.length === 1) text = names[0] + ' is typing…';
  else if (names.length === 2) text = names[0] + ' and ' + names[1] + ' are typing…';
  else if (names.length > 2) text = 'Several people are typing…';
  if ($('typing').textContent !== text) $('typing').textContent = text;
}

export function sendTyping() {
  const room = state.active;
  if (!room || !state.client || state.client.state !== 'connected') return;
  const now = Date.now();
  if (now - state.lastTypingSent < TYPING_SEND_EVERY_MS) return;
  state.lastTypingSent = now;
  state.client.rpc('typing', { channel: room.channel }).catch(() => {});
}

// renderBadge shows a public room's unread count; a conversation's is the inbox's.
export function renderBadge(room) {
  if (!room.badge) return;
  room.badge.hidden = room.unread === 0;
  room.badge.textContent = String(room.unread);
  room.badge.setAttribute('aria-label', room.unread + ' unread');
}

export async function refreshUnread(channels) {
  if (!state.user || channels.length === 0) return;
  try {
    const res = await state.client.rpc('unread', { channels });
    for (const s of (res.data && res.data.states) || []) {
      const room = state.rooms.get(s.channel);
      if (!room) continue;
      room.lastRead = s.last_read || 0;
      room.unread = s.unread || 0;
      setAcked(room, room.lastRead);
      if (room === state.active) placeUnreadMarker(room);
      renderBadge(room);
      if (room === state.active) markReadSoon(room);
    }
  } catch {
    // Unread counts are a convenience; chatting works without them.
  }
}

// markReadSoon sends a read receipt for what the person has in front of them.
export function markReadSoon(room) {
  if (!state.user || room !== state.active || room.gone || document.visibilityState !== 'visible') return;
  clearTimeout(room.readTimer);
  room.readTimer = setTimeout(() => {
    if (room !== state.active || document.visibilityState !== 'visible') return; // left meanwhile
    const offset = room.top;
    room.unread = 0;
    renderBadge(room);
    localRead(room.channel);
    if (offset <= room.lastRead || !state.client || state.client.state !== 'connected') return;
    room.lastRead = offset;
    state.client.rpc('read', { channel: room.channel, offset }).then(() => {
      setAcked(room, offset);
    }, () => {
      room.lastRead = 0; // try again next time
    });
  }, 300);
}

// setAcked records the read position the server acknowledged (tests and
// debugging read it from the room's entry and message log).
function setAcked(room, offset) {
  if (room.button) room.button.dataset.lastRead = String(offset);
  room.log.dataset.lastRead = String(offset);
}

// jumpTo opens a conversation at one message: history is loaded back to
// it (page by page, so the list has no holes), then it is scrolled into view
// and highlighted.
export async function jumpTo(room, offset) {
  selectRoom(room);
  for (let i = 0; i < 400 && !room.loaded; i++) await sleep(25);
  for (let i = 0; i < 200 && !room.messages.has(offset) && !room.noMore && room.oldest > offset; i++) {
    if (room.loadingOlder) await sleep(25);
    else await loadOlder(room);
  }
  const m = room.messages.get(offset);
  if (!m || room !== state.active) {
    if (room === state.active) setHistoryStatus(room, 'That message is no longer in the history');
    return false;
  }
  for (const h of room.list.querySelectorAll('.highlight')) h.classList.remove('highlight');
  m.el.classList.add('highlight');
  m.el.tabIndex = -1;
  m.el.scrollIntoView({ block: 'center' });
  m.el.focus({ preventScroll: true });
  return true;
}

// ---------------------------------------------------------------- drawer (phones)

export function closeDrawer() {
  $('sidebar').classList.remove('open');
  $('rooms-toggle').setAttribute('aria-expanded', 'false');
}

