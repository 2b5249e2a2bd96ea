// Messages of a room: applying publications (live, recovered, from history),
// rendering them, sending, editing and deleting one's own, and "Seen by".
import { state } from './state.js';
import { $, el, randomKey, messageText, isTemporary, errorText, sleep } from './util.js';
import { displayName, wantProfile } from './profiles.js';
import { markReadSoon, renderTyping, showTyping, setHistoryStatus, renderBadge } from './rooms.js';

const PUBLISH_ATTEMPTS = 6;

// ingest applies one publication (live, recovered or from history) to a room.
export function ingest(room, p, live) {
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

export function renderMessage(room, m) {
  const mine = state.user !== '' && m.user === state.user;
  const li = el('li', {
    class: 'msg' + (mine ? ' mine' : '') + (m.deleted ? ' deleted' : '') + (m.pending ? ' pending' : '') + (m.failed ? ' failed' : ''),
    'data-offset': m.offset || '',
    'data-user': m.user,
  });
  // The author's profile name when known (the id as a tooltip), else the id
  // until the name arrives.
  if (m.user) wantProfile(m.user);
  const name = m.user ? displayName(m.user) : '';
  li.append(el('span', { class: 'author', 'data-author': m.user || undefined, title: name ? m.user : undefined, text: name || m.user || (m.server ? 'server' : 'anonymous') }),
    el('span', { class: 'visually-hidden', text: ': ' }));
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
export function insertSorted(room, node, offset) {
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

export function stickToBottom() {
  const sc = $('scroll');
  if (sc.scrollHeight - sc.scrollTop - sc.clientHeight < 120) sc.scrollTop = sc.scrollHeight;
}

export function removeUnreadMarker(room) {
  if (room.marker) {
    room.marker.remove();
    room.marker = null;
  }
}

// placeUnreadMarker shows where unread messages start while a room is open;
// reading the room does not move it, leaving the room removes it.
export function placeUnreadMarker(room) {
  if (room.unread === 0) return;
  removeUnreadMarker(room);
  const marker = el('li', { class: 'unread-marker', role: 'separator', 'data-after': room.lastRead, text: 'New messages' });
  room.marker = marker;
  insertSorted(room, marker, room.lastRead + 0.5);
}

export async function send(room, text) {
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

export function renderSeen(room) {
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
export function applyReads(room, reads) {
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

export async function refreshReceipts(room) {
  if (!state.user) return;
  try {
    const res = await state.client.rpc('receipts', { channel: room.channel });
    applyReads(room, (res.data && res.data.receipts) || []);
  } catch {
    // Receipts are a convenience; chatting works without them.
  }
}

