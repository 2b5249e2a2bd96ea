// Helpers the real-browser test scripts share (browser.mjs,
// browser-groups.mjs, browser-fallback.mjs): the environment the Go tests
// pass, step reporting, numbered screenshots, the HTTP API and waiting on a
// predicate in a page.
import { mkdirSync } from 'node:fs';
import path from 'node:path';

// env reads a variable the Go test sets, or its default; a missing one is an error.
export function env(k, d) {
  const v = process.env[k] ?? d;
  if (v === undefined) throw new Error(`${k} is not set`);
  return v;
}

// ok reports a passed step; the Go test counts these lines.
export function ok(step) {
  console.log('ok ' + step);
}

// screenshotter numbers viewport screenshots into dir (created) in the order taken.
export function screenshotter(dir) {
  mkdirSync(dir, { recursive: true });
  let n = 0;
  return async (page, name) => {
    n++;
    await page.screenshot({ path: path.join(dir, `${String(n).padStart(2, '0')}-${name}.png`), fullPage: false });
  };
}

// apiCaller posts JSON to a replica's HTTP API (/api/<method> on the admin
// port) with the API key and returns the parsed reply.
export function apiCaller(adminURL, apiKey) {
  return async (method, body) => {
    const res = await fetch(adminURL + '/api/' + method, {
      method: 'POST',
      headers: { 'X-API-Key': apiKey, 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    if (!res.ok) throw new Error(`/api/${method}: ${res.status} ${await res.text()}`);
    return res.json();
  };
}

// waiter returns waitFor(page, what, fn, arg): polls fn in the page until it
// holds, for at most wait ms; with pageText the error shows the start of the
// page's text (what the user saw).
export function waiter(wait, { pageText = false } = {}) {
  return async (page, what, fn, arg) => {
    try {
      await page.waitForFunction(fn, arg, { timeout: wait, polling: 50 });
    } catch (err) {
      let msg = `${what}: not within ${wait}ms (${err.message.split('\n')[0]})`;
      if (pageText) msg += '\npage text: ' + await page.evaluate(() => document.body.innerText.slice(0, 600)).catch(() => '?');
      throw new Error(msg);
    }
  };
}
