// Drives Parley's fallback transports with the Centrifuge JS SDK (the npm
// package the web page bundles) in Node: one transport and format per run,
// its stream on one replica and its commands (/emulation) sent to another.
// sdk_fallback_test.go runs it against real replicas; run by hand:
//
//   PARLEY_STREAM=http://127.0.0.1:8000 PARLEY_EMULATION=http://127.0.0.1:8010 \
//   PARLEY_ADMIN=http://127.0.0.1:8001 PARLEY_API_KEY=... PARLEY_TOKEN=<jwt for PARLEY_USER> \
//   PARLEY_USER=alice PARLEY_TRANSPORT=sse PARLEY_FORMAT=json node test/sdk-fallback.mjs
//
// It prints one line per step and exits non-zero on the first failure.
import { Centrifuge as JSONCentrifuge } from 'centrifuge';
import { Centrifuge as ProtobufCentrifuge } from 'centrifuge/build/protobuf';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(k + ' is required');
  return v;
};
const stream = env('PARLEY_STREAM');
const emulation = env('PARLEY_EMULATION');
const admin = env('PARLEY_ADMIN');
const apiKey = env('PARLEY_API_KEY');
const token = env('PARLEY_TOKEN');
const user = env('PARLEY_USER');
const transport = env('PARLEY_TRANSPORT');
const format = env('PARLEY_FORMAT');
const timeoutMs = 10000;

// NodeEventSource is the part of the browser's EventSource the SDK uses,
// over fetch: Node 20 has no EventSource of its own.
class NodeEventSource {
  constructor(url) {
    this.onopen = null;
    this.onmessage = null;
    this.onerror = null;
    this._abort = new AbortController();
    this._run(url).catch((e) => {
      if (!this._abort.signal.aborted && this.onerror) this.onerror(e);
    });
  }

  async _run(url) {
    const resp = await fetch(url, { headers: { Accept: 'text/event-stream' }, signal: this._abort.signal });
    if (resp.status !== 200) throw new Error('SSE status ' + resp.status);
    if (this.onopen) this.onopen();
    const decoder = new TextDecoder();
    let buf = '';
    let data = [];
    for await (const chunk of resp.body) {
      buf += decoder.decode(chunk, { stream: true });
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).replace(/\r$/, '');
        buf = buf.slice(nl + 1);
        if (line === '') {
          if (data.length > 0 && this.onmessage) this.onmessage({ data: data.join('\n') });
          data = [];
        } else if (line.startsWith('data:')) {
          data.push(line.slice(5).replace(/^ /, ''));
        }
      }
    }
    throw new Error('SSE stream ended');
  }

  close() {
    this._abort.abort();
  }
}

function step(name) {
  console.log('step: ' + name);
}

function waitFor(emitter, event, pred = () => true, what = event) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      emitter.off(event, on);
      reject(new Error('timeout waiting for ' + what));
    }, timeoutMs);
    function on(ctx) {
      if (!pred(ctx)) return;
      clearTimeout(t);
      emitter.off(event, on);
      resolve(ctx);
    }
    emitter.on(event, on);
  });
}

async function api(method, body) {
  const resp = await fetch(admin + '/api/' + method, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-API-Key': apiKey },
    body: JSON.stringify(body),
  });
  const out = await resp.json();
  if (resp.status !== 200 || out.error) throw new Error(method + ': ' + resp.status + ' ' + JSON.stringify(out));
  return out.result;
}

function text(data) {
  return format === 'protobuf' ? JSON.parse(new TextDecoder().decode(data)).text : data.text;
}

function encode(obj) {
  return format === 'protobuf' ? new TextEncoder().encode(JSON.stringify(obj)) : obj;
}

async function main() {
  const Centrifuge = format === 'protobuf' ? ProtobufCentrifuge : JSONCentrifuge;
  const client = new Centrifuge([{ transport, endpoint: stream + '/connection/' + transport }], {
    token,
    emulationEndpoint: emulation + '/emulation',
    websocket: null,
    eventsource: NodeEventSource,
    fetch: globalThis.fetch,
    readableStream: globalThis.ReadableStream,
    minReconnectDelay: 1500,
    maxReconnectDelay: 2000,
    timeout: timeoutMs,
  });
  client.on('error', () => {});

  step('connect');
  const connected = waitFor(client, 'connected');
  client.connect();
  const ctx = await connected;
  if (ctx.transport !== transport) throw new Error('connected over ' + ctx.transport + ', want ' + transport);

  step('subscribe');
  const channel = 'room:sdk-' + transport + '-' + format;
  const sub = client.newSubscription(channel, { recoverable: true, positioned: true, joinLeave: true });
  const texts = [];
  sub.on('publication', (p) => texts.push(text(p.data)));
  sub.on('error', () => {});
  const subscribed = waitFor(sub, 'subscribed');
  sub.subscribe();
  await subscribed;

  step('publish');
  const got = waitFor(sub, 'publication', (p) => text(p.data) === 'one', 'publication "one"');
  await sub.publish(encode({ text: 'one' }));
  await got;

  step('history');
  const hist = await sub.history({ limit: 10 });
  if (hist.publications.length !== 1 || text(hist.publications[0].data) !== 'one') {
    throw new Error('history: ' + JSON.stringify(hist));
  }

  step('presence');
  const pres = await sub.presence();
  const users = Object.values(pres.clients).map((c) => c.user);
  if (!users.includes(user)) throw new Error('presence without ' + user + ': ' + users);

  step('recovery after the stream is cut');
  const cut = waitFor(client, 'connecting', (c) => c.code === 3011, 'reconnect after 3011');
  await api('disconnect', { user, code: 3011, reason: 'cut by the test' });
  await cut;
  // Published while the client is away: it comes back through recovery.
  await api('publish', { channel, data: { text: 'two' } });
  const resubscribed = await waitFor(sub, 'subscribed');
  if (!resubscribed.wasRecovering || !resubscribed.recovered) {
    throw new Error('not recovered: ' + JSON.stringify(resubscribed));
  }
  const deadline = Date.now() + timeoutMs;
  while (!texts.includes('two') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  if (texts.filter((t) => t === 'two').length !== 1) throw new Error('publications after recovery: ' + texts);

  step('server disconnect code');
  const gone = waitFor(client, 'disconnected');
  await api('disconnect', { user, code: 3503, reason: 'bye' });
  const d = await gone;
  if (d.code !== 3503) throw new Error('disconnected with ' + d.code + ', want 3503');
  client.disconnect();
  console.log('ok');
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error('FAIL: ' + (e && e.stack ? e.stack : e));
    process.exit(1);
  },
);
