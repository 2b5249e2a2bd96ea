// Real-browser test of the web client: two people in two browser contexts of
// headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core),
// each on a different chat server replica, chatting through the page.
//
// Run by browser_test.go, which starts the servers and passes:
//   PARLEY_URL_A, PARLEY_URL_B   base URLs of the two replicas (B sits behind a TCP proxy)
//   PARLEY_TOKEN_ALICE, PARLEY_TOKEN_BOB, PARLEY_API_KEY
//   PARLEY_CONTROL               control server: POST /proxy/disable, /proxy/enable
//   PARLEY_ROOM                  unique room for this run
//   PARLEY_ARTIFACTS             where screenshots go
//   PARLEY_CHROMIUM              browser executable (default /usr/bin/chromium)
// Prints one "ok <step>" line per passed step; exits non-zero with the reason on failure.
import { chromium } from 'playwright-core';
import { env, ok, screenshotter, apiCaller, waiter } from './lib.mjs';

const URL_A = env('PARLEY_URL_A');
const URL_B = env('PARLEY_URL_B');
const TOKEN_ALICE = env('PARLEY_TOKEN_ALICE');
const TOKEN_BOB = env('PARLEY_TOKEN_BOB');
const CONTROL = env('PARLEY_CONTROL');
const ROOM = env('PARLEY_ROOM');
const SIDE = ROOM + '-side';
const EXECUTABLE = env('PARLEY_CHROMIUM', '/usr/bin/chromium');
const WAIT = 15000;

const screenshot = screenshotter(env('PARLEY_ARTIFACTS'));
// The HTTP API (/api/*) is on the admin port.
const api = apiCaller(env('PARLEY_ADMIN_URL_A'), env('PARLEY_API_KEY'));
const waitFor = waiter(WAIT);

async function control(what) {
  const res = await fetch(CONTROL + what, { method: 'POST' });
  if (!res.ok) throw new Error(`control ${what}: ${res.status}`);
}

// waitFor polls a predicate in the page until it holds.

const messageTexts = () => [...document.querySelectorAll('#messages-host li.msg .text')].map((e) => e.textContent);

async function waitMessage(page, who, text) {
  await waitFor(page, `${who} sees message "${text}"`, (t) =>
    [...document.querySelectorAll('#messages-host li.msg .text')].some((e) => e.textContent === t), text);
}

async function waitStatus(page, who, status) {
  await waitFor(page, `${who} status "${status}"`, (s) => document.getElementById('conn-status').textContent === s, status);
}

async function signIn(page, url, token) {
  await page.goto(url + '/?room=' + encodeURIComponent(ROOM));
  // Keyboard only: the token field is labelled and the form submits with the button.
  await page.getByLabel('Token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await waitStatus(page, url, 'Connected');
}

async function send(page, text) {
  const box = page.getByLabel('Message', { exact: true });
  await box.fill(text);
  await box.press('Enter');
}

async function main() {
  // Sixty messages before anyone arrives, so the page has history to scroll back through.
  for (let i = 1; i <= 60; i++) await api('publish', { channel: ROOM, data: { text: `backlog ${i}` } });
  ok('seeded 60 messages of history through the server API');

  const browser = await chromium.launch({
    executablePath: EXECUTABLE,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const failures = [];
  try {
    const aliceCtx = await browser.newContext({ viewport: { width: 1200, height: 800 } });
    const bobCtx = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
    const alice = await aliceCtx.newPage();
    const bob = await bobCtx.newPage();
    for (const [name, p] of [['alice', alice], ['bob', bob]]) {
      p.on('pageerror', (e) => { console.log(`${name} page error: ${e.stack}`); failures.push(`${name} page error: ${e.message}`); });
      p.on('console', (m) => { if (m.type() === 'error') console.log(`${name} console error: ${m.text()}`); });
      p.on('dialog', (d) => d.accept());
    }

    // --- sign in on two different replicas
    await signIn(alice, URL_A, TOKEN_ALICE);
    await signIn(bob, URL_B, TOKEN_BOB);
    ok('alice (replica A) and bob (replica B, phone-sized) signed in and connected');

    // --- accessibility basics: every control has a name, new messages are announced
    for (const [name, p] of [['alice', alice], ['bob', bob]]) {
      const unnamed = await p.evaluate(() => [...document.querySelectorAll('button, input, textarea, select, [tabindex]')]
        .filter((e) => e.offsetParent !== null || e.id === 'scroll')
        .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.getAttribute('aria-labelledby') && !e.textContent.trim())
        .map((e) => e.outerHTML.slice(0, 80)));
      if (unnamed.length) throw new Error(`${name}: controls without an accessible name: ${unnamed.join(' | ')}`);
      const live = await p.evaluate(() => {
        const log = document.querySelector('#messages-host [role=log]');
        return log && log.getAttribute('aria-live') === 'polite' && !!log.getAttribute('aria-label')
          && document.getElementById('conn-status').getAttribute('role') === 'status'
          && document.getElementById('typing').getAttribute('aria-live') === 'polite';
      });
      if (!live) throw new Error(`${name}: the message log, connection status or typing line is not a live region`);
    }
    ok('accessibility: every visible control is named; messages, status and typing are live regions');

    // --- history: the latest page, then scroll back to the start
    await waitMessage(alice, 'alice', 'backlog 60');
    const first = await alice.evaluate(messageTexts);
    if (first.length !== 50 || first[0] !== 'backlog 11') throw new Error(`first page: ${first.length} messages from "${first[0]}"`);
    // Keyboard scroll-back: focus the message area and press Home; reaching the top loads the older page.
    await alice.getByRole('button', { name: 'Load older messages' }).waitFor();
    await alice.getByLabel('Messages', { exact: true }).focus();
    await alice.keyboard.press('Home');
    await waitMessage(alice, 'alice', 'backlog 1');
    await waitFor(alice, 'start of conversation', () => document.getElementById('history-status').textContent === 'Start of the conversation');
    const all = await alice.evaluate(messageTexts);
    for (let i = 0; i < 60; i++) if (all[i] !== `backlog ${i + 1}`) throw new Error(`after scroll-back message ${i} is "${all[i]}"`);
    await screenshot(alice, 'alice-history');
    ok('history: latest 50 shown, scrolling back with the keyboard brought the first 10 in order');

    // --- presence across replicas
    await waitFor(alice, 'alice sees bob online', () => document.getElementById('online-count').textContent === '2 online'
      && [...document.querySelectorAll('#online-list li')].some((l) => l.textContent === 'bob'));
    await waitFor(bob, 'bob sees alice online', () =>
      [...document.querySelectorAll('#online-list li')].map((l) => l.textContent).sort().join() === 'alice,bob (you)');
    ok('presence: each sees the other online across replicas');

    // --- typing
    await bob.getByLabel('Message', { exact: true }).pressSequentially('hel', { delay: 30 });
    await waitFor(alice, 'alice sees bob typing', () => document.getElementById('typing').textContent === 'bob is typing…');
    await screenshot(alice, 'alice-sees-bob-typing');
    ok('typing: alice sees "bob is typing…"');

    // --- messages both ways
    await bob.getByLabel('Message', { exact: true }).fill('');
    await send(bob, 'hello from bob');
    await waitMessage(alice, 'alice', 'hello from bob');
    await waitFor(alice, 'typing cleared by the message', () => document.getElementById('typing').textContent === '');
    await send(alice, 'hi bob');
    await send(alice, 'a message to delete');
    await waitMessage(bob, 'bob', 'hi bob');
    await waitMessage(bob, 'bob', 'a message to delete');
    await waitFor(alice, 'alice\'s messages acknowledged', () =>
      [...document.querySelectorAll('li.msg.mine .receipt')].filter((r) => r.textContent === 'Sent').length === 2);
    await screenshot(bob, 'bob-phone-chat');
    // Phone layout: the page itself never scrolls, only the message list does.
    const layout = await bob.evaluate(() => ({ height: document.documentElement.scrollHeight, width: document.documentElement.scrollWidth }));
    if (layout.height > 844 || layout.width > 390) throw new Error(`phone layout overflows the screen: ${JSON.stringify(layout)}`);
    ok('messages: bob → alice and alice → bob across replicas, sends acknowledged');

    // --- read receipts: bob has the room open, so alice sees that he read her messages
    const seen = ([text, by]) => [...document.querySelectorAll('li.msg.mine')]
      .some((li) => li.querySelector('.text').textContent === text && li.querySelector('.seen').textContent === by);
    await waitFor(alice, 'alice sees "Seen by bob"', seen, ['a message to delete', 'Seen by bob']);
    await waitFor(alice, 'earlier messages seen too', seen, ['hi bob', 'Seen by bob']);
    await screenshot(alice, 'alice-seen-by-bob');
    ok('read receipts: alice sees "Seen by bob" under her messages, across replicas');

    // --- edit and delete own messages, seen by the other side
    const mine = alice.locator('li.msg.mine', { hasText: 'hi bob' });
    await mine.getByRole('button', { name: /^Edit message/ }).click();
    const editBox = alice.getByLabel('Edit message', { exact: true });
    await editBox.fill('hi bob, edited');
    await editBox.press('Enter');
    await waitMessage(bob, 'bob', 'hi bob, edited');
    await waitFor(bob, 'bob sees (edited)', () => [...document.querySelectorAll('li.msg')]
      .some((li) => li.querySelector('.text').textContent === 'hi bob, edited' && li.querySelector('.edited')));
    await alice.locator('li.msg.mine', { hasText: 'a message to delete' }).getByRole('button', { name: /^Delete message/ }).click();
    await waitMessage(bob, 'bob', 'Message deleted');
    const bobTexts = await bob.evaluate(messageTexts);
    if (bobTexts.includes('a message to delete')) throw new Error('deleted text still shown to bob');
    const theirs = await bob.locator('li.msg', { hasText: 'hi bob, edited' }).getByRole('button').count();
    if (theirs !== 0) throw new Error('bob is offered edit/delete on alice\'s message');
    await screenshot(bob, 'bob-sees-edit-delete');
    ok('edit and delete: alice changed her messages, bob sees the edit and the deletion, and cannot edit hers');

    // --- unread counts and read receipts: bob is in a side room nobody is looking at
    await bob.getByRole('button', { name: 'Rooms' }).click();
    await bob.getByLabel('Join a room').fill(SIDE);
    await bob.getByLabel('Join a room').press('Enter');
    await waitFor(bob, 'bob in side room', (s) => document.getElementById('room-title').textContent === '#' + s.slice(5), SIDE);
    await bob.getByRole('button', { name: 'Rooms' }).click();
    await bob.locator(`#room-list button[data-channel="${ROOM}"]`).click();
    await api('publish', { channel: SIDE, data: { text: 'side 1' } });
    await api('publish', { channel: SIDE, data: { text: 'side 2' } });
    await api('publish', { channel: SIDE, data: { text: 'side 3' } });
    await bob.getByRole('button', { name: 'Rooms' }).click();
    await waitFor(bob, 'side room badge 3', (s) => {
      const b = document.querySelector(`#room-list button[data-channel="${s}"] .badge`);
      return b && !b.hidden && b.textContent === '3' && b.getAttribute('aria-label') === '3 unread';
    }, SIDE);
    await screenshot(bob, 'bob-unread-badge');
    await bob.locator(`#room-list button[data-channel="${SIDE}"]`).click();
    await waitMessage(bob, 'bob', 'side 3');
    await waitFor(bob, 'new-messages marker', () => !!document.querySelector('.unread-marker'));
    await waitFor(bob, 'badge cleared', (s) => document.querySelector(`#room-list button[data-channel="${s}"] .badge`).hidden, SIDE);
    // The page records the receipt the server acknowledged; after a reload the
    // read state comes back from the server's "unread" RPC.
    const lastRead = (s) => document.querySelector(`#room-list button[data-channel="${s}"]`)?.dataset.lastRead === '3';
    await waitFor(bob, 'read receipt acknowledged', lastRead, SIDE);
    await bob.reload();
    await waitStatus(bob, 'bob', 'Connected');
    await waitMessage(bob, 'bob', 'side 3');
    await waitFor(bob, 'read state loaded from the server', lastRead, SIDE);
    const badge = await bob.locator(`#room-list button[data-channel="${SIDE}"] .badge`).isHidden();
    if (!badge) throw new Error('side room still shows unread after reading it and reloading');
    ok('unread counts: 3 unread in the side room, read on opening, still read after reload');

    // --- history after reload (bob is back in the main room from the reload's saved state)
    await bob.getByRole('button', { name: 'Rooms' }).click();
    await bob.locator(`#room-list button[data-channel="${ROOM}"]`).click();
    await bob.reload();
    await waitStatus(bob, 'bob', 'Connected');
    await waitMessage(bob, 'bob', 'hello from bob');
    await waitMessage(bob, 'bob', 'hi bob, edited');
    await waitMessage(bob, 'bob', 'Message deleted');
    // No read event since the reload: the receipts RPC tells bob alice read his message.
    await waitFor(bob, 'bob sees "Seen by alice" after reload', seen, ['hello from bob', 'Seen by alice']);
    await screenshot(bob, 'bob-after-reload');
    ok('history after reload: bob\'s page rebuilt the room from history with the edit, the deletion and alice\'s read receipt');

    // --- recovery after the server side cuts bob's connection
    await bob.evaluate(() => { document.querySelector('li.msg').dataset.probe = 'kept'; });
    await control('/proxy/disable');
    await waitFor(bob, 'bob notices the drop', () => document.getElementById('conn-status').textContent === 'Reconnecting…');
    await send(alice, 'while you were away 1');
    await send(alice, 'while you were away 2');
    await waitFor(alice, 'alice\'s messages acknowledged', () =>
      [...document.querySelectorAll('li.msg.mine .receipt')].filter((r) => r.textContent === 'Sent').length >= 3);
    await screenshot(bob, 'bob-reconnecting');
    await control('/proxy/enable');
    await waitStatus(bob, 'bob', 'Connected');
    await waitMessage(bob, 'bob', 'while you were away 1');
    await waitMessage(bob, 'bob', 'while you were away 2');
    const kept = await bob.evaluate(() => document.querySelector('li.msg').dataset.probe);
    if (kept !== 'kept') throw new Error('the room was rebuilt from scratch instead of recovered');
    const order = await bob.evaluate(messageTexts);
    const i1 = order.indexOf('while you were away 1');
    if (order[i1 + 1] !== 'while you were away 2') throw new Error('recovered messages out of order: ' + order.slice(-4).join(' | '));
    await screenshot(bob, 'bob-recovered');
    ok('recovery: connection cut at the proxy, missed messages recovered in order without rebuilding the room');

    // --- the server asks bob to reconnect (disconnect with a reconnect code)
    await api('disconnect', { user: 'bob', code: 3001, reason: 'test: reconnect' });
    await waitFor(bob, 'bob reconnects', () => document.getElementById('conn-status').textContent !== 'Connected');
    await waitStatus(bob, 'bob', 'Connected');
    await send(bob, 'back after the server disconnect');
    await waitMessage(alice, 'alice', 'back after the server disconnect');
    await screenshot(alice, 'alice-final');
    ok('server disconnect with a reconnect code: bob reconnected by himself and kept chatting');
  } catch (err) {
    // Leave a picture of every page at the moment of failure.
    for (const ctx of browser.contexts()) {
      for (const p of ctx.pages()) await screenshot(p, 'failure').catch(() => {});
    }
    throw err;
  } finally {
    await browser.close();
  }
  if (failures.length) throw new Error(failures.join('\n'));
}

main().then(() => {
  console.log('PASS browser chat');
}, (err) => {
  console.error('FAIL ' + (err && err.stack ? err.stack : err));
  process.exit(1);
});
