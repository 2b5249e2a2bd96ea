// Real-browser test of the page's groups, inbox, moderation, search and DMs
// (issue 17): five pages of headless Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core) on two chat server replicas.
//
// Run by browser_groups_test.go, which starts the servers and passes:
//   PARLEY_URL_A, PARLEY_URL_B   base URLs of the two replicas
//   PARLEY_ADMIN_URL_A, PARLEY_API_KEY   the HTTP API (to seed many messages quickly)
//   PARLEY_TOKEN_ALICE, _BOB, _CAROL, _MALLORY   tokens with profile names
//   PARLEY_SCREENSHOTS           where the key steps' screenshots go
//   PARLEY_ARTIFACTS             where failure screenshots go
//   PARLEY_CHROMIUM              browser executable (default /usr/bin/chromium)
// Prints one "ok <step>" line per passed step; exits non-zero with the reason on failure.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { env, ok, screenshotter, apiCaller, waiter } from './lib.mjs';

const URL_A = env('PARLEY_URL_A');
const URL_B = env('PARLEY_URL_B');
const TOKENS = {
  alice: env('PARLEY_TOKEN_ALICE'),
  bob: env('PARLEY_TOKEN_BOB'),
  carol: env('PARLEY_TOKEN_CAROL'),
  mallory: env('PARLEY_TOKEN_MALLORY'),
};
const ARTIFACTS = env('PARLEY_ARTIFACTS');
const EXECUTABLE = env('PARLEY_CHROMIUM', '/usr/bin/chromium');
const WAIT = 15000;
const DESKTOP = { viewport: { width: 1280, height: 800 } };
const PHONE = { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true };
const FILLER = 60; // more than the page's first history page (50)

const screenshot = screenshotter(env('PARLEY_SCREENSHOTS'));
mkdirSync(ARTIFACTS, { recursive: true }); // failure screenshots land here
const api = apiCaller(env('PARLEY_ADMIN_URL_A'), env('PARLEY_API_KEY'));
const waitFor = waiter(WAIT, { pageText: true });

// inspectConv reads a conversation's entry in the inbox (title, preview, and
// the badges as shown, '' when hidden). With want it reports whether the
// entry has every field of want (previewStarts: the preview's beginning);
// without, it returns the entry (null when it is not listed).
const inspectConv = ([channel, want]) => {
  const b = document.querySelector(`[data-testid=conversation][data-channel="${channel}"]`);
  if (!b) return want ? false : null;
  const shown = (sel) => { const e = b.querySelector(sel); return e && !e.hidden ? e.textContent : ''; };
  const c = {
    title: b.querySelector('[data-testid=conversation-title]').textContent,
    preview: b.querySelector('[data-testid=conversation-preview]').textContent,
    unread: shown('[data-testid=unread]'),
    mentions: shown('[data-testid=mentions]'),
    gone: b.classList.contains('gone'),
    muted: b.classList.contains('muted'),
  };
  if (!want) return c;
  return Object.entries(want).every(([k, v]) => (k === 'previewStarts' ? c.preview.startsWith(v) : c[k] === v));
};

async function waitConv(page, who, channel, what, want) {
  try {
    await page.waitForFunction(inspectConv, [channel, want], { timeout: WAIT, polling: 50 });
  } catch (err) {
    const got = await page.evaluate(inspectConv, [channel, null]).catch(() => '?');
    throw new Error(`${who}: ${what}: not within ${WAIT}ms: want ${JSON.stringify(want)}, have ${JSON.stringify(got)} (${err.message.split('\n')[0]})`);
  }
}

const title = (page) => page.evaluate(() => document.getElementById('room-title').textContent);

async function waitTitle(page, who, t) {
  await waitFor(page, `${who} has "${t}" open`, (x) => document.getElementById('room-title').textContent === x, t);
}

async function waitMessage(page, who, text) {
  await waitFor(page, `${who} sees message "${text}"`, (t) =>
    [...document.querySelectorAll('#messages-host li.msg .text')].some((e) => e.textContent === t), text);
}

async function signIn(page, url, user) {
  // A "#token=" link: the page keeps the token for the tab and drops it from the address bar.
  await page.goto(url + '/#token=' + TOKENS[user]);
  await waitFor(page, `${user} connected`, () => document.getElementById('conn-status').textContent === 'Connected'
    && document.body.dataset.inbox === 'loaded');
}

// sidebar opens the drawer on a phone-sized page (on a desktop it is always shown).
async function sidebar(page) {
  const toggle = page.locator('#rooms-toggle');
  if (await toggle.isVisible() && (await toggle.getAttribute('aria-expanded')) !== 'true') await toggle.click();
}

async function send(page, text) {
  const box = page.getByLabel('Message', { exact: true });
  await box.fill(text);
  await box.press('Enter');
}

async function members(page) {
  if (await page.locator('#group-panel').isHidden()) await page.getByRole('button', { name: 'Members', exact: true }).click();
  await waitFor(page, 'members listed', () => document.querySelectorAll('#member-list [data-testid=member]').length > 0);
}

const memberRole = (page, user) => page.evaluate((u) => {
  const li = document.querySelector(`#member-list [data-testid=member][data-user="${u}"]`);
  return li ? li.dataset.role : '';
}, user);

async function unnamedControls(page) {
  return page.evaluate(() => [...document.querySelectorAll('button, input, textarea, select, [tabindex]')]
    .filter((e) => e.offsetParent !== null)
    .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.getAttribute('aria-labelledby') && !e.textContent.trim())
    .map((e) => e.outerHTML.slice(0, 80)));
}

async function main() {
  const browser = await chromium.launch({
    executablePath: EXECUTABLE,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const failures = [];
  const open = async (name, opts) => {
    const p = await (await browser.newContext(opts)).newPage();
    p.setDefaultTimeout(WAIT);
    p.on('pageerror', (e) => { console.log(`${name} page error: ${e.stack}`); failures.push(`${name} page error: ${e.message}`); });
    p.on('console', (m) => { if (m.type() === 'error') console.log(`${name} console error: ${m.text()}`); });
    // "Ban mallory from the group? Reason (optional):"
    p.on('dialog', (d) => d.accept(d.type() === 'prompt' ? 'spamming links' : undefined));
    return p;
  };
  try {
    // Pages on different replicas: alice, bob's desktop and mallory on A; bob's phone and carol on B.
    const alice = await open('alice', DESKTOP);
    const bobPhone = await open('bob-phone', PHONE);
    const bobDesk = await open('bob-desktop', DESKTOP);
    const carol = await open('carol', DESKTOP);
    const mallory = await open('mallory', DESKTOP);
    await signIn(alice, URL_A, 'alice');
    await signIn(bobPhone, URL_B, 'bob');
    await signIn(bobDesk, URL_A, 'bob');
    await signIn(carol, URL_B, 'carol');
    await signIn(mallory, URL_A, 'mallory');
    ok('five pages signed in on two replicas (bob twice: phone 390x844 on B, desktop 1280x800 on A), inboxes loaded');

    // --- alice creates a group; it is in her inbox and open
    await alice.getByLabel('New group').fill('Launch');
    await alice.getByRole('button', { name: 'Create', exact: true }).click();
    await waitTitle(alice, 'alice', 'Launch');
    const group = await alice.evaluate(() => document.querySelector('[data-testid=conversation][aria-current=true]')?.dataset.channel);
    if (!group || !group.startsWith('grp:')) throw new Error(`the new group is not the current conversation: ${group}`);
    await waitConv(alice, 'alice', group, 'Launch listed', { title: 'Launch', preview: 'No messages yet' });

    // --- alice adds bob by user id: both of bob's pages list the group
    await members(alice);
    if ((await memberRole(alice, 'alice')) !== 'owner') throw new Error('alice is not listed as the owner');
    await alice.getByLabel('Add a member (user id)').fill('bob');
    await alice.getByRole('button', { name: 'Add', exact: true }).click();
    await waitFor(alice, 'bob is a member', () => document.querySelector('#member-list [data-user=bob]')?.dataset.role === 'member');
    for (const [who, p] of [['bob phone', bobPhone], ['bob desktop', bobDesk]]) await waitConv(p, who, group, 'Launch listed', { title: 'Launch' });
    await screenshot(alice, 'alice-created-group-added-bob');
    ok('alice created "Launch" and added bob by user id: it is in the inbox of both of bob\'s pages');

    // --- alice creates an invite link; carol (replica B) and mallory (A) open it
    await alice.getByRole('button', { name: 'Create invite link' }).click();
    await waitFor(alice, 'invite link shown', () => document.getElementById('invite-link').value.includes('#join='));
    const link = await alice.locator('#invite-link').inputValue();
    if (!link.startsWith(URL_A + '/#join=')) throw new Error(`invite link is ${link}`);
    const code = link.slice(link.indexOf('#join=') + 6);
    // The same link on each person's own replica (the page on A made it).
    await carol.goto(URL_B + '/#join=' + code);
    await mallory.goto(URL_A + '/#join=' + code);
    for (const [who, p] of [['carol', carol], ['mallory', mallory]]) {
      await waitTitle(p, who, 'Launch');
      await waitConv(p, who, group, 'Launch listed', { title: 'Launch' });
      await waitFor(p, `${who} told they joined`, () => document.getElementById('toast').textContent === 'You joined Launch.');
      if ((await p.evaluate(() => location.hash)) !== '') throw new Error(`${who}: the invite code stayed in the address bar`);
    }
    ok('an invite link (#join=CODE) made by alice let carol (replica B) and mallory (replica A) join');

    // --- alice makes carol admin; carol is told
    await alice.getByRole('button', { name: 'Close' }).click();
    await members(alice);
    await waitFor(alice, 'carol and mallory listed', () => ['carol', 'mallory'].every((u) => document.querySelector(`#member-list [data-user=${u}]`)));
    await alice.getByRole('button', { name: 'Make admin: carol' }).click();
    await waitFor(alice, 'carol is admin', () => document.querySelector('#member-list [data-user=carol]')?.dataset.role === 'admin');
    await waitFor(carol, 'carol told she is admin', () => document.getElementById('toast').textContent === 'You are now an admin of Launch.');
    if ((await unnamedControls(alice)).length) throw new Error('alice: controls without an accessible name: ' + (await unnamedControls(alice)).join(' | '));
    await screenshot(alice, 'alice-members-carol-admin');
    ok('alice made carol admin from the members panel; carol\'s page says so; every visible control is named');

    // --- messages: one to find later, sixty more, then a mention of bob
    await send(alice, 'The quarterly report is ready');
    await waitMessage(mallory, 'mallory', 'The quarterly report is ready');
    for (let i = 1; i <= FILLER; i++) await api('publish', { channel: group, data: { text: `status update ${i}` } });
    await send(alice, '@bob please review');
    const total = String(FILLER + 2);
    for (const [who, p] of [['bob phone', bobPhone], ['bob desktop', bobDesk]]) {
      await waitConv(p, who, group, `${total} unread, 1 mention`, { unread: total, mentions: '@1', preview: 'alice: @bob please review' });
    }
    // The phone's drawer button and the tab titles carry the total.
    await waitFor(bobPhone, 'drawer button shows 62', (t) => !document.getElementById('toggle-badge').hidden
      && document.getElementById('toggle-badge').textContent === t + ' unread', total);
    if ((await bobDesk.title()) !== `(${total}) Parley`) throw new Error(`bob's desktop tab title: ${await bobDesk.title()}`);
    await screenshot(bobDesk, 'bob-desktop-unread');
    await sidebar(bobPhone);
    await screenshot(bobPhone, 'bob-phone-inbox');
    ok(`inbox: bob's phone and desktop both show ${total} unread and 1 mention with alice's preview, live`);

    // --- bob reads on the phone; the desktop's badge clears
    await bobPhone.locator(`[data-testid=conversation][data-channel="${group}"]`).click();
    await waitTitle(bobPhone, 'bob phone', 'Launch');
    await waitMessage(bobPhone, 'bob phone', '@bob please review');
    // Authors are shown by their profile name (from alice's token), the id as a tooltip.
    await waitFor(bobPhone, 'alice\'s profile name on her message', (t) => [...document.querySelectorAll('li.msg')].some((li) =>
      li.querySelector('.text')?.textContent === t && li.querySelector('.author')?.textContent === 'Alice Archer'
      && li.querySelector('.author')?.title === 'alice'), '@bob please review');
    await waitConv(bobDesk, 'bob desktop', group, 'badge cleared by reading on the phone', { unread: '', mentions: '' });
    await waitConv(bobPhone, 'bob phone', group, 'badge cleared', { unread: '', mentions: '' });
    await waitFor(bobDesk, 'desktop tab title cleared', () => document.title === 'Parley');
    if ((await title(bobDesk)) === 'Launch') throw new Error('bob\'s desktop opened the group itself');
    const layout = await bobPhone.evaluate(() => ({ h: document.documentElement.scrollHeight, w: document.documentElement.scrollWidth }));
    if (layout.h > 844 || layout.w > 390) throw new Error(`phone layout overflows the screen: ${JSON.stringify(layout)}`);
    await screenshot(bobPhone, 'bob-phone-reads');
    await screenshot(bobDesk, 'bob-desktop-badge-cleared');
    ok('bob read on the phone (replica B): the unread and mention badges cleared on his desktop page (replica A); alice shown by her profile name');

    // --- carol (admin) bans mallory; mallory's open page says so and shows nothing more
    await waitMessage(mallory, 'mallory', '@bob please review');
    await members(carol);
    await carol.getByRole('button', { name: 'Ban mallory' }).click();
    await waitFor(carol, 'mallory gone from the members', () => !document.querySelector('#member-list [data-user=mallory]'));
    const banned = 'You were banned from Launch by carol (reason: spamming links).';
    await waitFor(mallory, 'mallory told she is banned', (t) => {
      const n = document.getElementById('room-notice');
      return !n.hidden && n.textContent === t;
    }, banned);
    await waitFor(mallory, 'messages gone', () => document.querySelectorAll('#messages-host li.msg').length === 0
      && document.getElementById('composer-input').disabled);
    await waitConv(mallory, 'mallory', group, 'inbox entry marked', { gone: true, previewStarts: 'You were banned from Launch' });
    await screenshot(mallory, 'mallory-banned');
    // Opening it again shows the notice, not the conversation.
    await mallory.locator(`[data-testid=conversation][data-channel="${group}"]`).click();
    await mallory.waitForTimeout(500);
    const after = await mallory.evaluate(() => ({
      msgs: document.querySelectorAll('#messages-host li.msg').length,
      notice: document.getElementById('room-notice').textContent,
      members: !document.getElementById('members-toggle').hidden,
    }));
    if (after.msgs !== 0 || after.notice !== banned || after.members) throw new Error(`mallory after reopening: ${JSON.stringify(after)}`);
    ok('carol banned mallory: mallory\'s open page says "banned by carol", shows no messages, and cannot post or reopen it');

    // --- carol mutes bob for an hour: his pages are told, his phone's message
    // is refused until she unmutes him, then it goes out on retry
    await bobPhone.getByRole('button', { name: 'Members', exact: true }).click();
    await waitFor(bobPhone, 'members on the phone', () => document.querySelectorAll('#member-list [data-testid=member]').length === 3);
    if ((await bobPhone.locator('#member-list button').count()) !== 0) throw new Error('bob (a member) is offered moderation buttons');
    await carol.getByLabel('Mute bob for').selectOption('3600');
    await carol.getByRole('button', { name: 'Mute bob', exact: true }).click();
    await waitFor(carol, 'carol sees bob muted', () =>
      document.querySelector('#member-list [data-user=bob] [data-testid=member-role]')?.textContent === 'member · muted');
    await waitFor(bobDesk, 'bob\'s desktop told', () => document.getElementById('toast').textContent.startsWith('You are muted in Launch until '));
    await waitFor(bobPhone, 'bob\'s open members panel shows it', () =>
      document.querySelector('#member-list [data-user=bob] [data-testid=member-role]')?.textContent === 'member · muted');
    await screenshot(bobPhone, 'bob-phone-members-muted');
    await bobPhone.getByRole('button', { name: 'Close' }).click();
    await send(bobPhone, 'can I still post?');
    await waitFor(bobPhone, 'post refused while muted', () => [...document.querySelectorAll('li.msg.failed')].some((li) =>
      li.querySelector('.text').textContent === 'can I still post?' && li.querySelector('.receipt').textContent.includes('muted until')));
    await carol.getByRole('button', { name: 'Unmute bob' }).click();
    await waitFor(bobPhone, 'bob told he may post', () => document.getElementById('toast').textContent === 'You may post in Launch again.');
    await bobPhone.locator('li.msg.failed', { hasText: 'can I still post?' }).getByRole('button', { name: 'Retry' }).click();
    await waitMessage(carol, 'carol', 'can I still post?');
    ok('carol muted bob for an hour: both of his pages were told, his post was refused, and went out after she unmuted him');

    // --- bob searches from the desktop and jumps to the hit
    await bobDesk.getByLabel('Search messages').fill('quarterly');
    await bobDesk.getByRole('button', { name: 'Search', exact: true }).click();
    await waitFor(bobDesk, 'one hit', () => document.querySelectorAll('[data-testid=search-hit]').length === 1
      && document.querySelector('[data-testid=search-hit] mark')?.textContent.toLowerCase() === 'quarterly'
      && document.querySelector('[data-testid=search-hit] .hit-where').textContent.startsWith('Launch · alice · '));
    await screenshot(bobDesk, 'bob-search');
    await bobDesk.locator('[data-testid=search-hit]').click();
    await waitTitle(bobDesk, 'bob desktop', 'Launch');
    await waitFor(bobDesk, 'hit highlighted and in view', () => {
      const h = document.querySelector('#messages-host li.msg.highlight');
      if (!h || h.querySelector('.text').textContent !== 'The quarterly report is ready') return false;
      const r = h.getBoundingClientRect();
      const s = document.getElementById('scroll').getBoundingClientRect();
      return r.top >= s.top && r.bottom <= s.bottom;
    });
    const loaded = await bobDesk.evaluate(() => document.querySelectorAll('#messages-host li.msg').length);
    if (loaded !== FILLER + 3) throw new Error(`after the jump ${loaded} messages are loaded, want all ${FILLER + 3}`);
    await screenshot(bobDesk, 'bob-jumped-to-hit');
    ok('search: bob found "quarterly", and the hit opened Launch scrolled back past the first history page to the highlighted message');

    // --- bob starts a DM with alice by user id
    await bobDesk.getByLabel('Message someone (user id)').fill('alice');
    await bobDesk.getByRole('button', { name: 'Start', exact: true }).click();
    await waitTitle(bobDesk, 'bob desktop', 'alice');
    await send(bobDesk, 'hi alice, a DM from bob');
    const dm = 'dm:#alice,bob';
    await waitConv(alice, 'alice', dm, 'DM listed with 1 unread', { title: 'Bob Baker', unread: '1', preview: 'bob: hi alice, a DM from bob' });
    await waitConv(bobDesk, 'bob desktop', dm, 'DM titled by profile', { title: 'Alice Archer' });
    await alice.locator(`[data-testid=conversation][data-channel="${dm}"]`).click();
    await waitTitle(alice, 'alice', 'Bob Baker');
    await waitMessage(alice, 'alice', 'hi alice, a DM from bob');
    await waitConv(alice, 'alice', dm, 'DM read', { unread: '' });
    await screenshot(alice, 'alice-dm-from-bob');
    ok('DM: bob started one with alice by user id; alice\'s inbox listed it under bob\'s profile name with 1 unread, and she read it');

    // --- paging: 55 more groups with bob (made through the HTTP API) make a second page
    for (let i = 1; i <= 55; i++) await api('groups/create', { title: `Project ${i}`, owner: 'dave', members: ['bob'] });
    const listed = () => [...document.querySelectorAll('#inbox-list [data-testid=conversation-title]')].map((e) => e.textContent);
    await waitFor(bobDesk, 'first page of 50, newest first', () => {
      const t = [...document.querySelectorAll('#inbox-list [data-testid=conversation-title]')].map((e) => e.textContent);
      return t.length === 50 && t[0] === 'Project 55' && !document.getElementById('inbox-more').hidden;
    });
    await bobDesk.getByRole('button', { name: 'More conversations' }).click();
    await waitFor(bobDesk, 'second page', () => document.querySelectorAll('#inbox-list [data-testid=conversation]').length === 57
      && document.getElementById('inbox-more').hidden);
    const all = await bobDesk.evaluate(listed);
    const want = [...Array.from({ length: 55 }, (_, i) => `Project ${55 - i}`), 'Alice Archer', 'Launch'];
    if (all.join('|') !== want.join('|')) throw new Error(`inbox order after paging: ${all.slice(0, 3).join(', ')} … ${all.slice(-4).join(', ')}`);
    ok('inbox paging: 50 conversations first, newest first; "More conversations" brought the other 7 in order');


    // --- alice removes carol, then adds her back: carol's open page follows both
    await alice.locator(`[data-testid=conversation][data-channel="${group}"]`).click();
    await waitTitle(alice, 'alice', 'Launch');
    await members(alice);
    await alice.getByRole('button', { name: 'Remove carol' }).click();
    const removed = 'You were removed from Launch by alice (reason: spamming links).';
    await waitFor(carol, 'carol told she was removed', (t) => document.getElementById('room-notice').textContent === t
      && document.querySelectorAll('#messages-host li.msg').length === 0 && document.getElementById('composer-input').disabled, removed);
    await alice.getByLabel('Add a member (user id)').fill('carol');
    await alice.getByRole('button', { name: 'Add', exact: true }).click();
    await waitFor(carol, 'carol reads Launch again', () => document.getElementById('room-notice').hidden
      && document.getElementById('room-title').textContent === 'Launch' && !document.getElementById('composer-input').disabled
      && [...document.querySelectorAll('#messages-host li.msg .text')].some((e) => e.textContent === 'can I still post?'));
    await waitConv(carol, 'carol', group, 'listed again', { title: 'Launch', gone: false });
    ok('alice removed carol (her open page said so and emptied) and added her back (the page reads the group again)');

    // --- alice (owner) reads the activity log; a ban bars re-adding until she lifts it
    await alice.locator('#audit summary').click();
    const auditRows = () => [...document.querySelectorAll('#audit-list [data-testid=audit-entry]')].map((e) => e.textContent);
    await waitFor(alice, 'activity log lists the ban and the removal', () => {
      const t = [...document.querySelectorAll('#audit-list [data-testid=audit-entry]')].map((e) => e.textContent);
      return t.some((x) => x.endsWith('carol banned mallory (reason: spamming links)')) && t.some((x) => x.endsWith('alice removed carol (reason: spamming links)'));
    });
    await alice.getByLabel('Add a member (user id)').fill('mallory');
    await alice.getByRole('button', { name: 'Add', exact: true }).click();
    await waitFor(alice, 'adding a banned user refused', () => document.getElementById('group-status').textContent.startsWith('Not done: '));
    await alice.getByLabel('Lift a ban (user id)').fill('mallory');
    await alice.getByRole('button', { name: 'Unban', exact: true }).click();
    await waitFor(alice, 'the unban logged first', () =>
      document.querySelector('#audit-list [data-testid=audit-entry]')?.textContent.endsWith('alice lifted the ban on mallory'));
    await alice.getByLabel('Add a member (user id)').fill('mallory');
    await alice.getByRole('button', { name: 'Add', exact: true }).click();
    await waitFor(mallory, 'mallory reads Launch again', () => document.getElementById('room-notice').hidden
      && !document.getElementById('composer-input').disabled
      && [...document.querySelectorAll('#messages-host li.msg .text')].some((e) => e.textContent === 'can I still post?'));
    await screenshot(alice, 'alice-activity-log');
    const log = await alice.evaluate(auditRows);
    ok(`activity log (${log.length} entries) shows the ban and removal; re-adding mallory was refused until alice lifted the ban, then her page read the group again`);

    // --- bob mutes Launch on his desktop: the badge stays, the tab's total leaves it out, the server keeps it
    await bobDesk.locator(`[data-testid=conversation][data-channel="${group}"]`).click();
    await waitTitle(bobDesk, 'bob desktop', 'Launch');
    await bobDesk.getByRole('button', { name: 'Mute Launch' }).click();
    const isMuted = (ch) => document.querySelector(`#inbox-list [data-testid=conversation][data-channel="${ch}"]`)?.classList.contains('muted')
      && document.getElementById('mute-conversation').getAttribute('aria-pressed') === 'true';
    await waitFor(bobDesk, 'Launch muted', isMuted, group);
    // The phone lists Launch on its second inbox page (the 55 projects came after it).
    await sidebar(bobPhone);
    await bobPhone.getByRole('button', { name: 'More conversations' }).click();
    await waitConv(bobPhone, 'bob phone', group, 'muted on the other device too', { muted: true });
    await bobDesk.locator(`[data-testid=conversation][data-channel="${dm}"]`).click();
    await waitTitle(bobDesk, 'bob desktop', 'Alice Archer');
    await send(alice, 'news bob has muted');
    await waitConv(bobDesk, 'bob desktop', group, 'a muted conversation keeps its badge', { unread: '1' });
    if ((await bobDesk.title()) !== 'Parley') throw new Error(`bob's tab title counts a muted conversation: ${await bobDesk.title()}`);
    await bobDesk.reload();
    await bobDesk.locator(`[data-testid=conversation][data-channel="${group}"]`).click();
    await waitFor(bobDesk, 'still muted after a reload (kept by the server)', isMuted, group);
    await bobDesk.getByRole('button', { name: 'Unmute Launch' }).click();
    await waitFor(bobDesk, 'unmuted', (ch) => !document.querySelector(`#inbox-list [data-testid=conversation][data-channel="${ch}"]`)?.classList.contains('muted'), group);
    await waitConv(bobPhone, 'bob phone', group, 'unmuted on the other device too', { muted: false });
    ok('bob muted Launch on his desktop: his phone followed, the badge stayed out of the tab title, the mute survived a reload, and he unmuted it');

    // --- alice renames the group (every member's page follows), hands ownership to carol, and carol deletes it
    await alice.getByLabel('Title', { exact: true }).fill('Launch 2');
    await alice.getByRole('button', { name: 'Save settings' }).click();
    await waitConv(bobDesk, 'bob desktop', group, 'renamed live', { title: 'Launch 2' });
    await waitTitle(carol, 'carol', 'Launch 2');
    await alice.getByRole('button', { name: 'Make owner: carol' }).click();
    await waitFor(carol, 'carol told she owns it', () => document.getElementById('toast').textContent === 'You are now the owner of Launch 2.');
    await waitFor(alice, 'alice is an admin now', () => document.getElementById('group-role').textContent.startsWith('Your role: admin'));
    if (await alice.locator('#delete-group').isVisible()) throw new Error('alice, no longer the owner, is offered Delete group');
    await members(carol);
    await carol.getByRole('button', { name: 'Delete group' }).click();
    const deleted = 'Launch 2 was deleted by carol.';
    for (const [who, p] of [['bob desktop', bobDesk], ['mallory', mallory], ['alice', alice]]) {
      await waitFor(p, `${who} told the group was deleted`, (t) => document.getElementById('room-notice').textContent === t
        && document.querySelectorAll('#messages-host li.msg').length === 0 && document.getElementById('composer-input').disabled, deleted);
    }
    await waitConv(bobPhone, 'bob phone', group, 'struck through on the other device', { gone: true });
    ok('alice renamed the group (bob\'s inbox and carol\'s header followed live), made carol the owner, and carol deleted it: every open page said so');

    // --- a group of 205 (made through the HTTP API): the members panel lists a page of 200, "More members" the rest
    const everyone = (await api('groups/create', { title: 'Everyone', owner: 'bob', members: Array.from({ length: 204 }, (_, i) => `user${i}`) })).result.channel;
    await waitConv(bobDesk, 'bob desktop', everyone, 'the big group listed', { title: 'Everyone' });
    await bobDesk.locator(`[data-testid=conversation][data-channel="${everyone}"]`).click();
    await waitTitle(bobDesk, 'bob desktop', 'Everyone');
    await members(bobDesk);
    await waitFor(bobDesk, 'a first page of 200 members', () => document.querySelectorAll('#member-list [data-testid=member]').length === 200
      && !document.getElementById('members-more').hidden);
    await bobDesk.getByRole('button', { name: 'More members' }).click();
    await waitFor(bobDesk, 'all 205 members', () => document.querySelectorAll('#member-list [data-testid=member]').length === 205
      && document.getElementById('members-more').hidden);
    await bobDesk.getByRole('button', { name: 'Close' }).click();
    ok('members paging: a group of 205 lists 200, then "More members" shows all 205');
  } catch (err) {
    // Leave a picture of every page at the moment of failure.
    let i = 0;
    for (const ctx of browser.contexts()) {
      for (const p of ctx.pages()) await p.screenshot({ path: path.join(ARTIFACTS, `failure-${++i}.png`) }).catch(() => {});
    }
    throw err;
  } finally {
    await browser.close();
  }
  if (failures.length) throw new Error(failures.join('\n'));
}

main().then(() => {
  console.log('PASS browser groups');
}, (err) => {
  console.error('FAIL ' + (err && err.stack ? err.stack : err));
  process.exit(1);
});
