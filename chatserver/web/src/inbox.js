// The inbox: the user's conversations (groups, and DMs once a message
// exists), from the "inbox" RPC, newest activity first, kept current by the
// publications tagged type=inbox on the user's personal channel
// (docs/protocol.md, "Groups, inbox, moderation, search"). Reading a
// conversation on one device sends a "read" event to all of them, which is
// how the badge clears everywhere.
import { state, roomLabel } from './state.js';
import { $, el, isDM, errorText, shortTime } from './util.js';
import { addRoom, selectRoom, cutOffRoom, refreshUnread, saveRooms } from './rooms.js';
import { showGroupPanel, closeGroupPanel, refreshMembersIfOpen } from './groups.js';

const PAGE = 50;
const MAX_PAGE = 200; // the server's limit per request

let reloadTimer = null;
// Order: the server lists conversations by last activity (a group without
// messages by when the user joined it, which the page does not see). Each
// entry keeps its place in that list (rank); what happens live (a message, a
// DM or group opened here) moves it to the top (touched, newest first) until
// the next full reload.
let touchSeq = 0;
const touch = (e) => { e.touched = ++touchSeq; };

// Counting unread live without counting twice: a reload's or a read event's
// entry already counts every message up to its last_offset (base); a message
// push counts only above it, and once per offset (pushes of one conversation
// may overtake each other, and a push committed before a reload's snapshot
// may arrive after its reply).
function snapshot(e, offset) {
  e.base = Math.max(e.base || 0, Number(offset) || 0);
  if (!e.counted) e.counted = new Set();
  for (const off of e.counted) if (off <= e.base) e.counted.delete(off);
}
function countOnce(e, offset) {
  if (!e.counted) e.counted = new Set();
  if (offset <= (e.base || 0) || e.counted.has(offset)) return false;
  e.counted.add(offset);
  return true;
}

// loadInbox (re)loads the conversations loaded so far in one request, or the
// next page with more=true.
export async function loadInbox(more = false) {
  if (!state.user || !state.client) return;
  const offset = more ? state.inboxLoaded : 0;
  const limit = more ? PAGE : Math.min(Math.max(PAGE, state.inboxLoaded), MAX_PAGE);
  try {
    const res = await state.client.rpc('inbox', { limit, offset });
    const list = (res.data && res.data.conversations) || [];
    if (!more) {
      // Kept: DMs opened here that have no message yet, and conversations
      // this user was cut off from (the page keeps saying why).
      for (const [ch, e] of state.inbox) if (!e.local && !state.gone.has(ch)) state.inbox.delete(ch);
    }
    if (!more) for (const e of state.inbox.values()) e.rank = -1; // kept local entries stay on top
    list.forEach((e, i) => {
      e.rank = offset + i;
      e.touched = 0;
      snapshot(e, e.last_offset);
      state.inbox.set(e.channel, e);
    });
    state.inboxLoaded = offset + list.length;
    state.inboxMore = list.length === limit;
    // A group or DM remembered as a room (from before it was in the inbox)
    // is the inbox's now.
    for (const room of state.rooms.values()) {
      if (room.item && state.inbox.has(room.channel)) {
        room.item.remove();
        room.item = room.button = room.badge = null;
      }
    }
    saveRooms();
    $('inbox-status').textContent = state.inbox.size ? '' : 'No conversations yet: create a group or message someone.';
    renderInbox();
    if (state.active) {
      $('room-title').textContent = roomLabel(state.active.channel);
      $('leave-room').hidden = !state.active.item;
      refreshGroupHeader(state.active);
    }
    document.body.dataset.inbox = 'loaded';
  } catch (err) {
    $('inbox-status').textContent = 'Could not load your conversations: ' + errorText(err);
  }
}

// reloadInboxSoon merges the reloads a burst of events asks for.
function reloadInboxSoon() {
  clearTimeout(reloadTimer);
  reloadTimer = setTimeout(() => loadInbox(), 150);
}

function byActivity(a, b) {
  return (b.touched || 0) - (a.touched || 0) || (a.rank ?? -1) - (b.rank ?? -1);
}

export function renderInbox() {
  // The list is rebuilt on every event: keep the keyboard where it was.
  const focused = document.activeElement && document.activeElement.closest && document.activeElement.closest('#inbox-list [data-channel]');
  const entries = [...state.inbox.values()].sort(byActivity);
  const items = entries.map((e) => {
    const gone = state.gone.get(e.channel);
    const unread = gone ? 0 : Number(e.unread) || 0;
    const mentions = gone ? 0 : Number(e.mentions) || 0;
    let preview = gone || e.preview || (e.last_offset ? '' : 'No messages yet');
    if (!gone && e.preview && e.last_user) preview = (e.last_user === state.user ? 'You' : e.last_user) + ': ' + e.preview;
    // One sentence for screen readers instead of the pieces of the layout.
    const label = [roomLabel(e.channel), unread ? unread + ' unread' : '', mentions ? mentions + (mentions === 1 ? ' mention' : ' mentions') : '', preview]
      .filter(Boolean).join(', ');
    const button = el('button', {
      type: 'button',
      'aria-label': label,
      class: 'conv' + (gone ? ' gone' : '') + (e.muted ? ' muted' : ''),
      'data-testid': 'conversation',
      'data-channel': e.channel,
      'aria-current': state.active && state.active.channel === e.channel ? 'true' : 'false',
      onclick: () => openConversation(e.channel),
    },
    el('span', { class: 'conv-main' },
      el('span', { class: 'name', 'data-testid': 'conversation-title', text: roomLabel(e.channel) }),
      el('span', { class: 'preview', 'data-testid': 'conversation-preview', text: preview })),
    el('span', { class: 'conv-side' },
      el('span', { class: 'time', text: e.last_at ? shortTime(e.last_at) : '' }),
      el('span', { class: 'mentions', 'data-testid': 'mentions', hidden: mentions === 0, 'aria-label': mentions + (mentions === 1 ? ' mention' : ' mentions'), text: '@' + mentions }),
      el('span', { class: 'badge', 'data-testid': 'unread', hidden: unread === 0, 'aria-label': unread + ' unread', text: String(unread) })));
    return el('li', {}, button);
  });
  $('inbox-list').replaceChildren(...items);
  renderTotal(entries);
  if (focused) {
    const again = $('inbox-list').querySelector(`[data-channel="${CSS.escape(focused.dataset.channel)}"]`);
    if (again) again.focus();
  }
  $('inbox-more').hidden = !state.inboxMore;
}

// renderTotal shows how many messages wait unread in conversations that are
// not muted: on the phone's drawer button and in the tab's title.
function renderTotal(entries) {
  let total = 0;
  for (const e of entries) if (!e.muted && !state.gone.has(e.channel)) total += Number(e.unread) || 0;
  const b = $('toggle-badge');
  b.hidden = total === 0;
  b.firstChild.textContent = String(total);
  document.title = (total ? '(' + total + ') ' : '') + 'Parley';
}

// openConversation shows a group or DM, subscribing on first open.
export function openConversation(channel) {
  let room = state.rooms.get(channel);
  if (!room) {
    room = addRoom(channel);
    if (!room.gone) refreshUnread([channel]);
  }
  selectRoom(room);
  return room;
}

// localRead clears a conversation's badge on this device at once; the
// server's read event follows (and reaches the user's other devices).
export function localRead(channel) {
  const e = state.inbox.get(channel);
  if (e) snapshot(e, e.last_offset);
  if (e && (e.unread || e.mentions)) {
    e.unread = 0;
    e.mentions = 0;
    renderInbox();
  }
}

// onInboxPush applies one type=inbox publication of the personal channel.
export function onInboxPush(ev) {
  if (!ev || typeof ev !== 'object' || typeof ev.channel !== 'string') return;
  const ch = ev.channel;
  const e = state.inbox.get(ch);
  if (ev.type === 'message' && ev.entry) {
    if (!e || e.local) return reloadInboxSoon(); // a conversation this page has not listed yet
    // A message event may arrive after a read event that already covers it
    // (and message events of one conversation may overtake each other: each
    // still counts, but only the newest sets the preview).
    if (ev.entry.last_offset <= (state.readTop.get(ch) || 0)) return;
    if (ev.entry.last_offset > (e.last_offset || 0)) {
      Object.assign(e, { last_offset: ev.entry.last_offset, last_at: ev.entry.last_at, last_user: ev.entry.last_user, preview: ev.entry.preview });
      touch(e);
    }
    const looking = state.active && state.active.channel === ch && !state.active.gone && document.visibilityState === 'visible';
    if (ev.entry.last_user !== state.user && !looking && countOnce(e, ev.entry.last_offset)) {
      e.unread = (Number(e.unread) || 0) + 1;
      if (ev.mention) e.mentions = (Number(e.mentions) || 0) + 1;
    }
    renderInbox();
  } else if (ev.type === 'read' && ev.entry) {
    state.readTop.set(ch, Math.max(state.readTop.get(ch) || 0, ev.entry.last_offset || 0));
    if (!e) return reloadInboxSoon();
    e.unread = ev.entry.unread || 0;
    e.mentions = ev.entry.mentions || 0;
    snapshot(e, ev.entry.last_offset);
    if ((ev.entry.last_offset || 0) >= (e.last_offset || 0)) Object.assign(e, ev.entry, { title: ev.entry.title || e.title });
    const room = state.rooms.get(ch);
    if (room && room !== state.active) room.unread = e.unread;
    renderInbox();
  } else if (ev.type === 'member') {
    onMemberEvent(ev);
  } else if (ev.type === 'mute' && typeof ev.muted === 'boolean') {
    // Muted or unmuted on one of this user's devices (this one included).
    if (!e) return;
    e.muted = ev.muted;
    renderInbox();
    if (state.active && state.active.channel === ch) refreshGroupHeader(state.active);
  } else if (ev.type === 'settings' && ev.settings && typeof ev.settings.title === 'string') {
    // An admin renamed the group (or changed its rules), on any device of anyone.
    if (e) e.title = ev.settings.title;
    renderInbox();
    if (state.active && state.active.channel === ch) $('room-title').textContent = roomLabel(ch);
    refreshMembersIfOpen(ch);
  }
}

const goneEvents = { removed: 2100, banned: 2101, left: 2102, deleted: 2103 };

// goneText says why the user can no longer read a group, from an
// unsubscribe code (or a member event, which adds who and why).
export function goneText(channel, code, by, reason) {
  const title = roomLabel(channel);
  let text = {
    2100: 'You were removed from ' + title,
    2101: 'You were banned from ' + title,
    2102: 'You left ' + title,
    2103: title + ' was deleted',
  }[code] || 'You can no longer read ' + title;
  if (by && by !== state.user && code !== 2102) text += ' by ' + by;
  if (reason) text += ' (reason: ' + reason + ')';
  return text + '.';
}

function onMemberEvent(ev) {
  const ch = ev.channel;
  const code = goneEvents[ev.event];
  if (code) {
    markGone(ch, goneText(ch, code, ev.by, ev.reason));
    return;
  }
  if (ev.event === 'added') {
    restore(ch);
    reloadInboxSoon();
  }
  let note = '';
  if (ev.event === 'role') note = 'You are now ' + (ev.role === 'admin' ? 'an admin' : ev.role === 'owner' ? 'the owner' : 'a member') + ' of ' + roomLabel(ch) + '.';
  if (ev.event === 'muted') note = 'You are muted in ' + roomLabel(ch) + ' until ' + new Date(ev.until).toLocaleString() + '.';
  if (ev.event === 'unmuted') note = 'You may post in ' + roomLabel(ch) + ' again.';
  if (note) showToast(note);
  refreshMembersIfOpen(ch);
}

// restore undoes markGone when the user is back in a group (added again,
// or joined by a new link): the conversation is read afresh.
export function restore(channel) {
  if (!state.gone.delete(channel)) return;
  const room = state.rooms.get(channel);
  if (!room) return;
  room.gone = '';
  room.error = '';
  room.loaded = false;
  room.sub.subscribe();
  if (state.active === room) selectRoom(room);
}

// markGone: this user was removed or banned from a group (or left it, or it
// was deleted). Every open view of it stops showing its messages.
export function markGone(channel, text) {
  const changed = state.gone.get(channel) !== text;
  state.gone.set(channel, text);
  if (!state.inbox.has(channel)) state.inbox.set(channel, { channel, title: roomLabel(channel), last_offset: 0, unread: 0, mentions: 0, rank: -1 });
  const room = state.rooms.get(channel);
  if (room) cutOffRoom(room, text);
  if (state.active && state.active.channel === channel) {
    refreshGroupHeader(state.active);
    if (changed) showToast(text);
  }
  renderInbox();
}

export function showToast(text) {
  const t = $('toast');
  t.textContent = text;
  t.hidden = false;
  clearTimeout(t.timer);
  t.timer = setTimeout(() => { t.hidden = true; }, 8000);
}

// refreshGroupHeader shows the Members button for a group the user is in.
export function refreshGroupHeader(room) {
  const group = room && state.inbox.has(room.channel) && !isDM(room.channel) && !room.gone;
  $('members-toggle').hidden = !group;
  // Muting is per user and per conversation (groups and DMs): a muted one
  // keeps its badge but leaves the drawer's and the tab title's total.
  const e = room && !room.gone && state.inbox.get(room.channel);
  const mute = $('mute-conversation');
  mute.hidden = !e || e.local;
  if (e) {
    mute.textContent = e.muted ? 'Unmute' : 'Mute';
    mute.setAttribute('aria-pressed', e.muted ? 'true' : 'false');
    mute.setAttribute('aria-label', (e.muted ? 'Unmute ' : 'Mute ') + (e.title || roomLabel(room.channel)));
  }
  if (!group) closeGroupPanel();
  else showGroupPanel(room.channel, false);
}

// addLocalConversation lists a DM opened here before any message exists in it.
export function addLocalConversation(channel) {
  if (!state.inbox.has(channel)) {
    const e = { channel, last_offset: 0, unread: 0, mentions: 0, local: true };
    touch(e);
    state.inbox.set(channel, e);
  }
  renderInbox();
}

// toggleMute mutes or unmutes the open conversation for this user.
export async function toggleMute() {
  const room = state.active;
  const e = room && state.inbox.get(room.channel);
  if (!e) return;
  const muted = !e.muted;
  try {
    const res = await state.client.rpc('inbox.mute', { channel: room.channel, muted });
    e.muted = res.data && typeof res.data.muted === 'boolean' ? res.data.muted : muted;
    showToast((e.muted ? 'Muted ' : 'Unmuted ') + (e.title || roomLabel(room.channel)) + '.');
  } catch (err) {
    showToast('Could not change muting: ' + errorText(err));
  }
  renderInbox();
  refreshGroupHeader(room);
}
