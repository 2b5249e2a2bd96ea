// Real-browser test of the web page's fallbacks: headless Chromium reaches a
// replica through an HTTP proxy that refuses WebSocket (and, for the SSE run,
// HTTP-streaming too), the way some corporate proxies do. The page must fall
// back by itself, sign in, chat, and recover after the proxy cuts its stream.
//
// Run by browser_fallback_test.go, which passes:
//   PARLEY_URL        the proxy in front of the replica
//   PARLEY_ADMIN_URL  the replica's admin listener (HTTP API), PARLEY_API_KEY
//   PARLEY_TOKEN      a token for the person signing in
//   PARLEY_CONTROL    control server: POST /cut ends every request in flight through the proxy
//   PARLEY_ROOM       unique room for this run
//   PARLEY_TRANSPORT  the transport the page must end up on (http_stream or sse)
//   PARLEY_ARTIFACTS  where screenshots go; PARLEY_CHROMIUM the browser (default /usr/bin/chromium)
// Prints one "ok <step>" line per passed step; exits non-zero with the reason on failure.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { env, ok, waiter } from './lib.mjs';

const URL = env('PARLEY_URL');
const ADMIN_URL = env('PARLEY_ADMIN_URL');
const API_KEY = env('PARLEY_API_KEY');
const TOKEN = env('PARLEY_TOKEN');
const CONTROL = env('PARLEY_CONTROL');
const ROOM = env('PARLEY_ROOM');
const TRANSPORT = env('PARLEY_TRANSPORT');
const ARTIFACTS = env('PARLEY_ARTIFACTS');
const EXECUTABLE = env('PARLEY_CHROMIUM', '/usr/bin/chromium');
const WAIT = 20000;

mkdirSync(ARTIFACTS, { recursive: true });


async function post(url, headers, body) {
  const res = await fetch(url, { method: 'POST', headers, body });
  if (!res.ok) throw new Error(`${url}: ${res.status} ${await res.text()}`);
}

const waitFor = waiter(WAIT);

async function waitMessage(page, text) {
  await waitFor(page, `message "${text}" shown`, (t) =>
    [...document.querySelectorAll('#messages-host li.msg .text')].some((e) => e.textContent === t), text);
}

async function main() {
  const browser = await chromium.launch({
    executablePath: EXECUTABLE,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const failures = [];
  try {
    const page = await (await browser.newContext({ viewport: { width: 1000, height: 700 } })).newPage();
    page.on('pageerror', (e) => failures.push(`page error: ${e.message}`));

    await page.goto(URL + '/?room=' + encodeURIComponent(ROOM));
    await page.getByLabel('Token').fill(TOKEN);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await waitFor(page, 'connected', () => document.getElementById('conn-status').textContent === 'Connected');
    const used = await page.evaluate(() => document.body.dataset.transport);
    if (used !== TRANSPORT) throw new Error(`connected over ${used}, want ${TRANSPORT}`);
    ok(`signed in over ${TRANSPORT} with WebSocket refused by the proxy`);

    const box = page.getByLabel('Message', { exact: true });
    await box.fill(`hello over ${TRANSPORT}`);
    await box.press('Enter');
    await waitMessage(page, `hello over ${TRANSPORT}`);
    await waitFor(page, 'the message is confirmed', () =>
      [...document.querySelectorAll('#messages-host li.msg.mine')].some((e) => Number(e.dataset.offset) > 0));
    ok('sent a message through /emulation and got it back on the stream');

    await post(CONTROL + '/cut', {});
    await waitFor(page, 'the page notices the cut', () => document.getElementById('conn-status').textContent === 'Reconnecting…');
    await post(ADMIN_URL + '/api/publish', { 'X-API-Key': API_KEY, 'Content-Type': 'application/json' },
      JSON.stringify({ channel: ROOM, data: { text: 'sent during the cut' } }));
    await waitFor(page, 'reconnected', () => document.getElementById('conn-status').textContent === 'Connected');
    await waitMessage(page, 'sent during the cut');
    const again = await page.evaluate(() => document.body.dataset.transport);
    if (again !== TRANSPORT) throw new Error(`reconnected over ${again}, want ${TRANSPORT}`);
    ok('recovered after the proxy cut the stream: the message sent meanwhile is shown');
    await page.screenshot({ path: path.join(ARTIFACTS, `fallback-${TRANSPORT}.png`) });
  } finally {
    await browser.close();
  }
  if (failures.length) throw new Error(failures.join('; '));
}

main().then(() => process.exit(0), (e) => {
  console.log('FAIL ' + (e && e.stack ? e.stack : e));
  process.exit(1);
});
