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
// and the groups methods (chatserver/groups/rpc.go): the inbox (inbox.js),
// groups and moderation (groups.js), search (search.js).
//
// Messages are JSON {"text": "..."}. The token lives in sessionStorage (this
// tab only, survives a reload); the public rooms joined in localStorage per
// user; groups and DMs come from the server's inbox.
import { Centrifuge, UnauthorizedError } from 'centrifuge';
import { state, TOKEN_KEY, ACTIVE_KEY, JOIN_KEY, isConversation } from './state.js';
import { $, decodeClaims, normalizeChannel } from './util.js';
import {
  savedRooms, saveRooms, setStatus, addRoom, removeRoom, selectRoom, loadOlder, closeDrawer, refreshUnread,
  sendTyping, markReadSoon, renderEmpty,
} from './rooms.js';
import { send } from './messages.js';
import { loadInbox, onInboxPush, openConversation, toggleMute } from './inbox.js';
import { wireGroups, joinByCode, closeGroupPanel } from './groups.js';
import { wireSearch } from './search.js';

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
    afterConnect();
  });
  // The personal channel (a server-side subscription): inbox events. They
  // are never stored, so every (re)connect reloads the inbox instead.
  client.on('publication', (ctx) => {
    if (ctx.tags && ctx.tags.type === 'inbox') onInboxPush(ctx.data);
  });
  client.on('disconnected', (ctx) => {
    setStatus('disconnected', 'Disconnected');
    if (state.signingOut) return;
    sessionStorage.removeItem(TOKEN_KEY);
    showSignin('Disconnected: ' + (ctx.reason || 'code ' + ctx.code) + '. Sign in again.');
  });

  // Rooms: the public ones this person joined before, the ones granted in
  // the token, the one named in ?room=; the lobby for anonymous visitors (who
  // have no inbox). Groups and DMs come with the inbox once connected.
  const granted = Array.isArray(state.claims.channels)
    ? state.claims.channels.filter((c) => typeof c === 'string' && !c.endsWith('*') && !c.includes('$'))
    : [];
  // ?room= opens that room once; after that the tab remembers the active room.
  const wanted = normalizeChannel(new URLSearchParams(location.search).get('room') || '');
  if (wanted) history.replaceState(null, '', location.pathname);
  const channels = [...new Set([...savedRooms(), ...granted, ...(wanted && !isConversation(wanted) ? [wanted] : [])])];
  if (channels.length === 0 && !state.user) channels.push('room:lobby');
  for (const c of channels) addRoom(c);
  saveRooms();
  const active = wanted || sessionStorage.getItem(ACTIVE_KEY) || '';
  if (state.rooms.has(active)) selectRoom(state.rooms.get(active));
  else {
    // A group or DM: opened once the inbox says it is one of this user's.
    pendingActive = active;
    const first = state.rooms.values().next().value;
    if (first && !active) selectRoom(first);
    else renderEmpty();
  }
  client.connect();
}

let pendingActive = '';

async function afterConnect() {
  if (!state.user) return;
  await loadInbox();
  if (pendingActive) {
    const ch = pendingActive;
    pendingActive = '';
    if (state.inbox.has(ch) || ch.startsWith('dm:#')) openConversation(ch);
  }
  const code = sessionStorage.getItem(JOIN_KEY);
  if (code) await joinByCode(code);
}

function signOut() {
  state.signingOut = true;
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(ACTIVE_KEY);
  if (state.client) state.client.disconnect();
  location.replace(location.pathname);
}

// ---------------------------------------------------------------- wiring

function init() {
  // A demo may hand out a link with #token=…: keep it for this tab, drop it from the address bar.
  // An invite link is "#join=CODE": joined once connected.
  const takeHash = () => {
    const h = new URLSearchParams(location.hash.slice(1));
    if (h.has('token')) sessionStorage.setItem(TOKEN_KEY, h.get('token'));
    if (h.has('join')) sessionStorage.setItem(JOIN_KEY, h.get('join'));
    if (h.has('token') || h.has('join')) history.replaceState(null, '', location.pathname + location.search);
    return h.has('join');
  };
  takeHash();
  window.addEventListener('hashchange', () => {
    // An invite link opened in a tab that is signed in already.
    if (takeHash() && state.client && state.client.state === 'connected') joinByCode(sessionStorage.getItem(JOIN_KEY));
  });

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
    if (isConversation(channel)) {
      openConversation(channel);
      $('composer-input').focus();
      return;
    }
    const room = addRoom(channel);
    saveRooms();
    refreshUnread([channel]);
    selectRoom(room);
    $('composer-input').focus();
  });
  $('leave-room').addEventListener('click', () => state.active && removeRoom(state.active));
  $('inbox-more').addEventListener('click', () => loadInbox(true));
  wireGroups();
  $('mute-conversation').addEventListener('click', () => toggleMute());
  wireSearch();
  $('load-older').addEventListener('click', () => loadOlder(state.active));
  $('scroll').addEventListener('scroll', () => {
    if ($('scroll').scrollTop < 40) loadOlder(state.active);
  });
  $('rooms-toggle').addEventListener('click', () => {
    const open = $('sidebar').classList.toggle('open');
    $('rooms-toggle').setAttribute('aria-expanded', String(open));
    if (open) {
      const current = $('sidebar').querySelector('button[aria-current=true]') || $('inbox-list').querySelector('button') || $('search-input');
      current.focus();
    }
  });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && !$('group-panel').hidden) {
      closeGroupPanel();
      $('members-toggle').focus();
    } else if (e.key === 'Escape' && $('sidebar').classList.contains('open')) {
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
    if (!text || !state.active || state.active.gone) return;
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
