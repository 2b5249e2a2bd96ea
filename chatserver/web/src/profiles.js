// Display names of the people whose messages a page shows. The server keeps
// each user's profile from their token (name, picture); the page asks for the
// names it needs with the profiles rpc, in batches of at most 100 ids (the
// server's limit) gathered over 50 ms, and keeps them for the tab, so a room's
// history costs one lookup, not one per message.
import { state } from './state.js';
import { isTemporary } from './util.js';

const BATCH = 100;
const known = new Map(); // user id -> display name ('' when there is none)
const wanted = new Set();
let timer = null;

// displayName is the user's profile name when the page knows it, else ''.
export function displayName(user) {
  return known.get(user) || '';
}

// wantProfile asks for a user's name unless it is known or already asked for.
export function wantProfile(user) {
  if (!user || known.has(user) || wanted.has(user)) return;
  wanted.add(user);
  if (!timer) timer = setTimeout(flush, 50);
}

async function flush() {
  timer = null;
  const users = [...wanted].slice(0, BATCH);
  for (const u of users) wanted.delete(u);
  if (wanted.size) timer = setTimeout(flush, 50);
  if (!state.client || users.length === 0) return;
  try {
    const res = await state.client.rpc('profiles', { users });
    for (const u of users) known.set(u, '');
    for (const p of (res.data && res.data.profiles) || []) {
      if (p && typeof p.user === 'string' && typeof p.name === 'string') known.set(p.user, p.name);
    }
  } catch (err) {
    // Names are a nicety: ids stay shown. A temporary failure is asked
    // again by the user's next message; a server without profiles (no
    // group namespace configured) is not asked again.
    if (!isTemporary(err)) for (const u of users) known.set(u, '');
    return;
  }
  for (const u of users) showName(u);
}

// showName puts a newly learnt name on the messages already shown.
function showName(user) {
  const name = known.get(user);
  if (!name) return;
  for (const a of document.querySelectorAll('.author[data-author]')) {
    if (a.dataset.author === user) {
      a.textContent = name;
      a.title = user;
    }
  }
}
