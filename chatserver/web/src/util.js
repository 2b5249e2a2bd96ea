// Small helpers shared by the page's modules: DOM building, token reading,
// error classification. Nothing here talks to the server.

export const $ = (id) => document.getElementById(id);

export function el(tag, attrs = {}, ...children) {
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
export function decodeClaims(token) {
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

export function randomKey() {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

// normalizeChannel turns what a person types into a channel name: "lobby" → "room:lobby".
export function normalizeChannel(input) {
  const s = input.trim();
  if (!s) return '';
  return s.includes(':') ? s : 'room:' + s;
}

// isDM: a user-limited channel ("dm:#alice,bob"); the personal channel
// ("personal:#alice") is one too, but the page never lists it.
export const isDM = (channel) => channel.includes('#');

// validUserID follows the server's rule for user ids (docs/protocol.md,
// "Tokens"): they end up inside channel names.
export const validUserID = (u) => u.length > 0 && u.length <= 128 && !/[\s,#\u0000-\u001f]/.test(u);

export function messageText(data) {
  if (data && typeof data === 'object' && typeof data.text === 'string') return data.text;
  return JSON.stringify(data);
}

export function isTemporary(err) {
  if (!err) return false;
  // SDK-side codes (< 100) are timeouts and closed transports; 100 internal,
  // 111 too many requests; the server marks the rest with "temporary".
  return err.temporary === true || err.code < 100 || err.code === 100 || err.code === 111;
}

export function errorText(err) {
  if (!err) return 'unknown error';
  return err.message || String(err);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// snippetNodes turns a search snippet, where the server wraps matches in
// <b>…</b>, into text and <mark> nodes: the rest is message text and is never
// parsed as HTML.
export function snippetNodes(snippet) {
  const out = [];
  let inMatch = false;
  for (const part of String(snippet).split(/(<b>|<\/b>)/)) {
    if (part === '<b>') inMatch = true;
    else if (part === '</b>') inMatch = false;
    else if (part) out.push(inMatch ? el('mark', { text: part }) : document.createTextNode(part));
  }
  return out;
}

export function shortTime(value) {
  const d = new Date(value);
  if (Number.isNaN(d.getTime()) || d.getTime() <= 0) return '';
  const now = new Date();
  if (d.toDateString() === now.toDateString()) return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  return d.toLocaleDateString([], { month: 'short', day: 'numeric' });
}
