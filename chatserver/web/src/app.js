// Parley web client: the chat page the chat server embeds and serves at "/".
//
// Everything on the wire goes through the official Centrifuge JavaScript SDK
// (npm "centrifuge"), bundled by esbuild into static/app.js (`make web`).
// Chat semantics use the server's RPC methods (chatserver/node/chat.go):
//
//	publish {channel, data, key}     idempotent send: a retry with the same key is stored once
//	typing  {channel}                typing indicator (a publication tagged type=typing, never stored)
//	read     {channel, offset}       read receipt; the others get a read event (tag type=read, never stored)
//	unread   {channels}              read states and unread counts
//	receipts {channel}               how far each member has read (shown as "Seen by" under your messages)
//	edit    {channel, offset, data}  author-only edit (a publication tagged type=edit, ref=<offset>)
//	delete  {channel, offset}        author-only delete (a publication tagged type=delete, ref=<offset>)
//
// Messages are JSON {"text": "..."}. The token lives in sessionStorage (this
// tab only, survives a reload); the list of joined rooms in localStorage per user.
import { Centrifuge, UnauthorizedError } from 'centrifuge';

const HISTORY_PAGE = 50;
const TYPING_SEND_EVERY_MS = 2500;
const TYPING_SHOW_MS = 4000;
const PUBLISH_ATTEMPTS = 6;
const TOKEN_KEY = 'parley.token';
const ACTIVE_KEY = 'parley.active';

const $ = (id) => document.getElementById(id);

const state = {
  client: null,
  token: '',
  user: '',
  claims: {},
  rooms: new Map(), // channel → room
  active: null,
  lastTypingSent: 0,
  signingOut: false,
};

// ---------------------------------------------------------------- helpers

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) if (c) e.append(c);
  return e;
}

// decodeClaims reads a JWT's payload for display (user name, granted rooms).
// It verifies nothing: the server does.
function decodeClaims(token) {
  try {
    const part = token.split('.')[1];
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const json = decodeURIComponent(Array.from(atob(b64), (c) => '%' + c.charCodeAt(0).toString(16).padStart(2, '0')).join(''));
    const claims = JSON.parse(json);
    return claims && typeof claims === 'object' ? claims : {};
  } catch {
    return {};
  }
}

function randomKey() {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

function roomLabel(channel) {
  if (channel.startsWith('room:')) return '#' + channel.slice(5);
  if (channel.startsWith('dm:#')) return 'DM ' + channel.slice(4).split(',').join(', ');
  return channel;
}

// normalizeChannel turns what a person types into a channel name: "lobby" → "room:lobby".
function normalizeChannel(input) {
  const s = input.trim();
  if (!s) return '';
  return s.includes(':') ? s : 'room:' + s;
}

function messageText(data) {
  if (data && typeof data === 'object' && typeof data.text === 'string') return data.text;
  return JSON.stringify(data);
}

function isTemporary(err) {
  if (!err) return false;
  // SDK-side codes (< 100) are timeouts and closed transports; 100 internal,
  // 111 too many requests; the server marks the rest with "temporary".
  return err.temporary === true || err.code < 100 || err.code === 100 || err.code === 111;
}

function errorText(err) {
  if (!err) return 'unknown error';
  return err.message || String(err);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function savedRooms() {
  try {
    const v = JSON.parse(localStorage.getItem('parley.rooms:' + state.user) || '[]');
    return Array.isArray(v) ? v.filter((c) => typeof c === 'string') : [];
  } catch {
    return [];
  }
}

function saveRooms() {
  localStorage.setItem('parley.rooms:' + state.user, JSON.stringify([...state.rooms.keys()]));
}

// ---------------------------------------------------------------- connection

function setStatus(kind, text) {
  const s = $('conn-status');
  s.dataset.state = kind;
  s.textContent = text;
  const enabled = state.active !== null;
  $('composer-input').disabled = !enabled;
  $('send').disabled = !enabled;
}

function showSignin(message) {
  $('app').hidden = true;
  $('signin').hidden = false;
  const e = $('signin-error');
  e.hidden = !message;
  e.textContent = message || '';
  $('token-input').focus();
}

function start(token) {
  state.token = token;
  state.claims = token ? decodeClaims(token) : {};
  state.user = typeof state.claims.sub === 'string' ? state.claims.sub : '';
  $('whoami').textContent = state.user || 'anonymous';
  $('signin').hidden = true;
  $('app').hidden = false;

  // WebSocket first; where a proxy or carrier breaks it, the SDK falls back
  // to HTTP-streaming, then SSE (commands then go to /emulation).
  const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
  const origin = location.protocol + '//' + location.host;
  const client = new Centrifuge([
    { transport: 'websocket', endpoint: scheme + location.host + '/connection/websocket' },
    { transport: 'http_stream', endpoint: origin + '/connection/http_stream' },
    { transport: 'sse', endpoint: origin + '/connection/sse' },
  ], {
    token,
    // Tokens are minted elsewhere: when this one expires the person signs in again.
    getToken: token ? () => Promise.reject(new UnauthorizedError('your token expired: sign in again')) : null,
    name: 'parley-web',
    minReconnectDelay: 250,
    maxReconnectDelay: 8000,
  });
  state.client = client;

  client.on('connecting', (ctx) => {
    setStatus('connecting', ctx.code === 0 ? 'Connecting…' : 'Reconnecting…');
  });
  client.on('connected', (ctx) => {
    setStatus('connected', 'Connected');
    document.body.dataset.transport = ctx.transport;
    refreshUnread([...state.rooms.keys()]);
  });
  client.on('disconnected', (ctx) => {
    setStatus('disconnected', 'Disconnected');
    if (state.signingOut) return;
    sessionStorage.removeItem(TOKEN_KEY);
    showSignin('Disconnected: ' + (ctx.reason || 'code ' + ctx.code) + '. Sign in again.');
  });

  // Rooms: the ones this person joined before, the ones granted in the
  // token, the one named in ?room=, or the lobby.
  const granted = Array.isArray(state.claims.channels)
    ? state.claims.channels.filter((c) => typeof c === 'string' && !c.endsWith('*') && !c.includes('$'))
    : [];
  // ?room= opens that room once; after that the tab remembers the active room.
  const wanted = normalizeChannel(new URLSearchParams(location.search).get('room') || '');
  if (wanted) history.replaceState(null, '', location.pathname);
  const channels = [...new Set([...savedRooms(), ...granted, ...(wanted ? [wanted] : [])])];
  if (channels.length === 0) channels.push('room:lobby');
  for (const c of channels) addRoom(c);
  saveRooms();
  const active = wanted || sessionStorage.getItem(ACTIVE_KEY);
  selectRoom(state.rooms.get(active) || state.rooms.values().next().value);
  client.connect();
}

function signOut() {
  state.signingOut = true;
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(ACTIVE_KEY);
  if (state.client) state.client.disconnect();
  location.replace(location.pathname);
}

// ---------------------------------------------------------------- rooms

function addRoom(channel) {
  if (state.rooms.has(channel)) return state.rooms.get(channel);
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
  };
  const badge = el('span', { class: 'badge', hidden: true });
  const button = el('button', { type: 'button', 'data-channel': channel, onclick: () => selectRoom(room) },
    el('span', { class: 'name', text: roomLabel(channel) }), badge);
  state.rooms.set(channel, room);
  room.item = el('li', {}, button);
  room.button = button;
  room.badge = badge;
  $('room-list').append(room.item);

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
    if (ctx.code !== 0) setRoomError(room, 'You are not in this room: ' + (ctx.reason || 'code ' + ctx.code));
  });
  sub.on('error', (ctx) => {
    if (ctx.type === 'subscribe' && !isTemporary(ctx.error)) setRoomError(room, 'Cannot join: ' + errorText(ctx.error));
  });
  sub.subscribe();
  return room;
}

function removeRoom(room) {
  room.sub.unsubscribe();
  state.client.removeSubscription(room.sub);
  state.rooms.delete(room.channel);
  room.item.remove();
  saveRooms();
  if (state.active === room) {
    state.active = null;
    const next = state.rooms.values().next().value;
    if (next) selectRoom(next);
    else renderEmpty();
  }
}

function setRoomError(room, text) {
  room.error = text;
  setHistoryStatus(room, text);
}

function renderEmpty() {
  $('room-title').textContent = 'No room selected';
  $('messages-host').replaceChildren();
  $('leave-room').hidden = true;
  $('online-count').textContent = '0 online';
  $('online-list').replaceChildren();
  $('typing').textContent = '';
  setStatus($('conn-status').dataset.state, $('conn-status').textContent);
}

function selectRoom(room) {
  if (!room) return;
  const prev = state.active;
  if (prev && prev !== room) {
    prev.scrollTop = $('scroll').scrollTop;
    removeUnreadMarker(prev);
  }
  state.active = room;
  sessionStorage.setItem(ACTIVE_KEY, room.channel);
  state.rooms.forEach((r) => r.button.setAttribute('aria-current', r === room ? 'true' : 'false'));
  $('room-title').textContent = roomLabel(room.channel);
  $('leave-room').hidden = false;
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

function resetRoom(room) {
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

async function loadOlder(room) {
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

function setHistoryStatus(room, text) {
  room.historyStatus = text;
  if (room === state.active) renderHistoryControls(room);
}

function renderHistoryControls(room) {
  $('history-status').textContent = room.historyStatus;
  $('load-older').hidden = !room.loaded || room.noMore;
}

// ---------------------------------------------------------------- messages

// ingest applies one publication (live, recovered or from history) to a room.
function ingest(room, p, live) {
  const tags = p.tags || {};
  const user = (p.info && p.info.user) || '';
  const offset = p.offset || 0;
  if (tags.type === 'typing') {
    if (live && user && user !== state.user) showTyping(room, user);
    return;
  }
  if (tags.type === 'read') {
    if (live) applyReads(room, (p.data && p.data.reads) || []);
    return;
  }
  if (offset > room.top) room.top = offset;
  if (tags.type === 'edit' || tags.type === 'delete') {
    const ref = Number(tags.ref);
    const change = { type: tags.type, data: p.data, offset };
    const m = room.messages.get(ref);
    if (m) applyChange(room, m, change);
    else {
      const prev = room.changes.get(ref);
      if (!prev || prev.offset < offset) room.changes.set(ref, change);
    }
    return;
  }
  if (offset && room.messages.has(offset)) return; // already shown (recovery overlap, our own send)
  const m = {
    offset,
    user,
    server: !p.info, // published through the server API, not by a person
    text: messageText(p.data),
    edited: false,
    deleted: false,
    changeOffset: 0,
  };
  m.el = renderMessage(room, m);
  if (offset) room.messages.set(offset, m);
  const pending = room.changes.get(offset);
  if (pending) {
    room.changes.delete(offset);
    applyChange(room, m, pending);
  }
  insertSorted(room, m.el, offset);
  if (!live) return;
  if (user && room.typing.delete(user)) renderTyping(room);
  if (user === state.user && state.user) {
    markReadSoon(room);
  } else if (offset > room.lastRead) {
    if (room === state.active && document.visibilityState === 'visible') markReadSoon(room);
    else {
      room.unread++;
      renderBadge(room);
    }
  }
  if (room === state.active) stickToBottom();
}

function applyChange(room, m, change) {
  if (change.offset && change.offset <= m.changeOffset) return; // older than what is shown
  if (m.deleted) return; // deleting is final
  m.changeOffset = change.offset;
  if (change.type === 'delete') {
    m.deleted = true;
    m.text = '';
  } else {
    m.edited = true;
    m.text = messageText(change.data);
  }
  const fresh = renderMessage(room, m);
  m.el.replaceWith(fresh);
  m.el = fresh;
}

function renderMessage(room, m) {
  const mine = state.user !== '' && m.user === state.user;
  const li = el('li', {
    class: 'msg' + (mine ? ' mine' : '') + (m.deleted ? ' deleted' : '') + (m.pending ? ' pending' : '') + (m.failed ? ' failed' : ''),
    'data-offset': m.offset || '',
    'data-user': m.user,
  });
  li.append(el('span', { class: 'author', text: m.user || (m.server ? 'server' : 'anonymous') }), el('span', { class: 'visually-hidden', text: ': ' }));
  li.append(el('p', { class: 'text', text: m.deleted ? 'Message deleted' : m.text }));
  const meta = el('div', { class: 'meta' });
  if (m.edited && !m.deleted) meta.append(el('span', { class: 'edited', text: '(edited)' }));
  if (mine) {
    let receipt = 'Sent';
    if (m.pending) receipt = 'Sending…';
    if (m.failed) receipt = 'Not sent: ' + m.failed;
    meta.append(el('span', { class: 'receipt', text: receipt }));
    meta.append(el('span', { class: 'seen', text: seenText(room, m) }));
  }
  if (mine && m.failed) {
    meta.append(el('span', { class: 'actions' }, el('button', { type: 'button', text: 'Retry', onclick: () => m.retry() })));
  } else if (mine && m.offset && !m.deleted) {
    meta.append(el('span', { class: 'actions' },
      el('button', { type: 'button', class: 'edit', 'aria-label': 'Edit message: ' + m.text.slice(0, 40), text: 'Edit', onclick: () => startEdit(room, m) }),
      el('button', { type: 'button', class: 'delete', 'aria-label': 'Delete message: ' + m.text.slice(0, 40), text: 'Delete', onclick: () => deleteMessage(room, m) }),
    ));
  }
  li.append(meta);
  return li;
}

// insertSorted keeps a room's list in offset order; unsent messages (offset 0) stay last.
function insertSorted(room, node, offset) {
  const key = offset || Infinity;
  let after = room.list.lastElementChild;
  while (after) {
    const o = Number(after.dataset.offset) || (after.classList.contains('unread-marker') ? Number(after.dataset.after) + 0.5 : Infinity);
    if (o <= key) break;
    after = after.previousElementSibling;
  }
  if (after) after.after(node);
  else room.list.prepend(node);
}

function stickToBottom() {
  const sc = $('scroll');
  if (sc.scrollHeight - sc.scrollTop - sc.clientHeight < 120) sc.scrollTop = sc.scrollHeight;
}

function removeUnreadMarker(room) {
  if (room.marker) {
    room.marker.remove();
    room.marker = null;
  }
}

// placeUnreadMarker shows where unread messages start while a room is open;
// reading the room does not move it, leaving the room removes it.
function placeUnreadMarker(room) {
  if (room.unread === 0) return;
  removeUnreadMarker(room);
  const marker = el('li', { class: 'unread-marker', role: 'separator', 'data-after': room.lastRead, text: 'New messages' });
  room.marker = marker;
  insertSorted(room, marker, room.lastRead + 0.5);
}

async function send(room, text) {
  const m = { offset: 0, user: state.user, text, edited: false, deleted: false, changeOffset: 0, pending: true, failed: '' };
  const key = randomKey();
  m.el = renderMessage(room, m);
  insertSorted(room, m.el, 0);
  $('scroll').scrollTop = $('scroll').scrollHeight;
  const attempt = async () => {
    let lastErr;
    for (let i = 0; i < PUBLISH_ATTEMPTS; i++) {
      try {
        return await state.client.rpc('publish', { channel: room.channel, data: { text }, key });
      } catch (err) {
        lastErr = err;
        if (!isTemporary(err)) break;
        await sleep(Math.min(500 * 2 ** i, 4000));
      }
    }
    throw lastErr;
  };
  m.retry = async () => {
    m.failed = '';
    m.pending = true;
    rerender(room, m);
    await deliver();
  };
  const deliver = async () => {
    try {
      const res = await attempt();
      const offset = res.data && res.data.offset;
      m.pending = false;
      if (!offset || room.messages.has(offset)) {
        m.el.remove(); // the broadcast got here first (or the room keeps no offsets)
        return;
      }
      m.offset = offset;
      room.messages.set(offset, m);
      const fresh = renderMessage(room, m);
      m.el.remove();
      m.el = fresh;
      insertSorted(room, fresh, offset);
      if (offset > room.top) room.top = offset;
      markReadSoon(room);
    } catch (err) {
      m.pending = false;
      m.failed = errorText(err);
      rerender(room, m);
    }
  };
  await deliver();
}

function rerender(room, m) {
  const fresh = renderMessage(room, m);
  m.el.replaceWith(fresh);
  m.el = fresh;
}

function startEdit(room, m) {
  const input = el('textarea', { rows: 2, 'aria-label': 'Edit message' });
  input.value = m.text;
  const cancel = () => {
    form.replaceWith(m.el);
    const b = m.el.querySelector('button.edit');
    if (b) b.focus();
  };
  const form = el('form', { class: 'edit-form' }, input,
    el('button', { type: 'submit', text: 'Save' }),
    el('button', { type: 'button', text: 'Cancel', onclick: cancel }));
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') cancel();
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text || text === m.text) return cancel();
    try {
      const res = await state.client.rpc('edit', { channel: room.channel, offset: m.offset, data: { text }, key: randomKey() });
      form.replaceWith(m.el);
      applyChange(room, m, { type: 'edit', data: { text }, offset: (res.data && res.data.offset) || 0 });
      const b = m.el.querySelector('button.edit');
      if (b) b.focus();
    } catch (err) {
      setHistoryStatus(room, 'Could not edit: ' + errorText(err));
    }
  });
  m.el.replaceWith(form);
  input.focus();
}

async function deleteMessage(room, m) {
  if (!window.confirm('Delete this message?')) return;
  try {
    const res = await state.client.rpc('delete', { channel: room.channel, offset: m.offset, key: randomKey() });
    applyChange(room, m, { type: 'delete', data: null, offset: (res.data && res.data.offset) || 0 });
    $('composer-input').focus();
  } catch (err) {
    setHistoryStatus(room, 'Could not delete: ' + errorText(err));
  }
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

function renderOnline(room) {
  if (room !== state.active) return;
  const users = [...room.users.keys()].sort();
  $('online-count').textContent = users.length + ' online';
  $('online-list').replaceChildren(...users.map((u) => el('li', { text: u === state.user ? u + ' (you)' : u })));
}

function showTyping(room, user) {
  room.typing.set(user, Date.now() + TYPING_SHOW_MS);
  renderTyping(room);
  setTimeout(() => renderTyping(room), TYPING_SHOW_MS + 50);
}

function renderTyping(room) {
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

function sendTyping() {
  const room = state.active;
  if (!room || !state.client || state.client.state !== 'connected') return;
  const now = Date.now();
  if (now - state.lastTypingSent < TYPING_SEND_EVERY_MS) return;
  state.lastTypingSent = now;
  state.client.rpc('typing', { channel: room.channel }).catch(() => {});
}

// ---------------------------------------------------------------- seen by

// seenText says who has read a message of yours: everyone whose read
// receipt reaches its offset.
function seenText(room, m) {
  if (!m.offset || m.deleted) return '';
  const names = [];
  for (const [user, offset] of room.reads) if (offset >= m.offset) names.push(user);
  if (names.length === 0) return '';
  names.sort();
  if (names.length <= 3) return 'Seen by ' + names.join(', ');
  return 'Seen by ' + names.slice(0, 2).join(', ') + ' and ' + (names.length - 2) + ' others';
}

function renderSeen(room) {
  for (const m of room.messages.values()) {
    if (m.user !== state.user || !state.user) continue;
    const span = m.el.querySelector('.seen');
    if (span) {
      const text = seenText(room, m);
      if (span.textContent !== text) span.textContent = text;
    }
  }
}

// applyReads takes receipts (a read event, or the receipts RPC); a receipt
// never moves back.
function applyReads(room, reads) {
  let changed = false;
  for (const r of reads) {
    if (!r || typeof r.user !== 'string' || !r.user || r.user === state.user) continue;
    const offset = Number(r.last_read) || 0;
    if (offset > (room.reads.get(r.user) || 0)) {
      room.reads.set(r.user, offset);
      changed = true;
    }
  }
  if (changed) renderSeen(room);
}

async function refreshReceipts(room) {
  if (!state.user) return;
  try {
    const res = await state.client.rpc('receipts', { channel: room.channel });
    applyReads(room, (res.data && res.data.receipts) || []);
  } catch {
    // Receipts are a convenience; chatting works without them.
  }
}

function renderBadge(room) {
  room.badge.hidden = room.unread === 0;
  room.badge.textContent = String(room.unread);
  room.badge.setAttribute('aria-label', room.unread + ' unread');
}

async function refreshUnread(channels) {
  if (!state.user || channels.length === 0) return;
  try {
    const res = await state.client.rpc('unread', { channels });
    for (const s of (res.data && res.data.states) || []) {
      const room = state.rooms.get(s.channel);
      if (!room) continue;
      room.lastRead = s.last_read || 0;
      room.unread = s.unread || 0;
      room.button.dataset.lastRead = String(room.lastRead);
      if (room === state.active) placeUnreadMarker(room);
      renderBadge(room);
      if (room === state.active) markReadSoon(room);
    }
  } catch {
    // Unread counts are a convenience; chatting works without them.
  }
}

// markReadSoon sends a read receipt for what the person has in front of them.
function markReadSoon(room) {
  if (!state.user || room !== state.active || document.visibilityState !== 'visible') return;
  clearTimeout(room.readTimer);
  room.readTimer = setTimeout(() => {
    if (room !== state.active || document.visibilityState !== 'visible') return; // left meanwhile
    const offset = room.top;
    room.unread = 0;
    renderBadge(room);
    if (offset <= room.lastRead || !state.client || state.client.state !== 'connected') return;
    room.lastRead = offset;
    state.client.rpc('read', { channel: room.channel, offset }).then(() => {
      room.button.dataset.lastRead = String(offset); // what the server has acknowledged
    }, () => {
      room.lastRead = 0; // try again next time
    });
  }, 300);
}

// ---------------------------------------------------------------- drawer (phones)

function closeDrawer() {
  $('sidebar').classList.remove('open');
  $('rooms-toggle').setAttribute('aria-expanded', 'false');
}

// ---------------------------------------------------------------- wiring

function init() {
  // A demo may hand out a link with #token=…: keep it for this tab, drop it from the address bar.
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.has('token')) {
    sessionStorage.setItem(TOKEN_KEY, hash.get('token'));
    history.replaceState(null, '', location.pathname + location.search);
  }

  $('signin-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const token = $('token-input').value.trim();
    sessionStorage.setItem(TOKEN_KEY, token);
    $('token-input').value = '';
    start(token);
  });
  $('signout').addEventListener('click', signOut);
  $('join-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const channel = normalizeChannel($('join-input').value);
    const err = $('join-error');
    if (!/^[^\s]{1,255}$/.test(channel)) {
      err.hidden = false;
      err.textContent = 'Type a room name without spaces.';
      return;
    }
    err.hidden = true;
    $('join-input').value = '';
    const room = addRoom(channel);
    saveRooms();
    refreshUnread([channel]);
    selectRoom(room);
    $('composer-input').focus();
  });
  $('leave-room').addEventListener('click', () => state.active && removeRoom(state.active));
  $('load-older').addEventListener('click', () => loadOlder(state.active));
  $('scroll').addEventListener('scroll', () => {
    if ($('scroll').scrollTop < 40) loadOlder(state.active);
  });
  $('rooms-toggle').addEventListener('click', () => {
    const open = $('sidebar').classList.toggle('open');
    $('rooms-toggle').setAttribute('aria-expanded', String(open));
    if (open) {
      const current = $('room-list').querySelector('button[aria-current=true]') || $('join-input');
      current.focus();
    }
  });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && $('sidebar').classList.contains('open')) {
      closeDrawer();
      $('rooms-toggle').focus();
    }
  });

  const input = $('composer-input');
  const autosize = () => {
    input.style.height = 'auto';
    input.style.height = Math.min(input.scrollHeight, 128) + 'px';
  };
  input.addEventListener('input', () => {
    autosize();
    if (input.value.trim()) sendTyping();
  });
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $('composer').requestSubmit();
    }
  });
  $('composer').addEventListener('submit', (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text || !state.active) return;
    input.value = '';
    autosize();
    state.lastTypingSent = 0;
    send(state.active, text);
  });
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && state.active) markReadSoon(state.active);
  });

  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token !== null) start(token);
  else showSignin('');
}

init();
