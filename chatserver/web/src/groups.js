// Groups: creating one, inviting (by user id, or by a link that carries an
// invite code in its fragment), the members panel with the moderation an
// admin or owner may do, and starting a DM. Every action is one RPC of
// docs/protocol.md, "Groups, inbox, moderation, search"; the server checks
// the roles again, the page only hides what would be refused.
import { state, JOIN_KEY, roomLabel } from './state.js';
import { $, el, errorText, validUserID } from './util.js';
import { loadInbox, openConversation, addLocalConversation, showToast, restore } from './inbox.js';

const rank = { owner: 0, admin: 1, member: 2 };
const MUTE_CHOICES = [[600, '10 minutes'], [3600, '1 hour'], [86400, '1 day']];

const panel = { channel: '', role: '', members: [], group: null, pages: 1, seq: 0 };
const MEMBER_PAGE = 200;

function setGroupStatus(text) {
  $('group-status').textContent = text;
}

export async function createGroup(title) {
  const res = await state.client.rpc('group.create', { title });
  const channel = res.data.channel;
  // The page lists it right away; the inbox reload confirms it.
  state.inbox.set(channel, { channel, title, last_offset: 0, unread: 0, mentions: 0, rank: -1 });
  await loadInbox();
  openConversation(channel);
  return channel;
}

// dmChannel is the DM between this user and another: "dm:#alice,bob", the
// ids sorted so both sides name the same channel.
export function dmChannel(other) {
  return 'dm:#' + [state.user, other].sort().join(',');
}

export function startDM(other) {
  const channel = dmChannel(other);
  addLocalConversation(channel);
  return openConversation(channel);
}

// joinByCode uses an invite code (from a "#join=CODE" link).
export async function joinByCode(code) {
  try {
    const res = await state.client.rpc('group.join', { code });
    sessionStorage.removeItem(JOIN_KEY);
    const channel = res.data.channel;
    restore(channel);
    await loadInbox();
    openConversation(channel);
    showToast('You joined ' + roomLabel(channel) + '.');
  } catch (err) {
    if (err && (err.code < 100 || err.code === 100)) return; // temporary: tried again on the next connect
    sessionStorage.removeItem(JOIN_KEY);
    showToast('Could not join with that invite link: ' + errorText(err));
  }
}

// showGroupPanel fills the members panel for channel; open=false only
// switches a panel that is already open.
export async function showGroupPanel(channel, open = true) {
  const p = $('group-panel');
  if (!open && p.hidden) return;
  if (!open && panel.channel === channel) return;
  p.hidden = false;
  $('members-toggle').setAttribute('aria-expanded', 'true');
  if (panel.channel !== channel) {
    panel.pages = 1;
    $('invite-link').value = '';
    $('invite-link-row').hidden = true;
    setGroupStatus('');
  }
  panel.channel = channel;
  $('group-panel-title').textContent = roomLabel(channel);
  await refreshMembers();
}

export function closeGroupPanel() {
  $('group-panel').hidden = true;
  $('members-toggle').setAttribute('aria-expanded', 'false');
  panel.channel = '';
}

export function refreshMembersIfOpen(channel) {
  if (panel.channel === channel && !$('group-panel').hidden) refreshMembers();
}

async function refreshMembers() {
  const channel = panel.channel;
  const seq = ++panel.seq;
  try {
    const g = await state.client.rpc('group.get', { channel });
    // Members come 200 a request (the server's page); "More members" asks
    // for one more page each time it is pressed.
    const list = [];
    for (let page = 0; page < panel.pages; page++) {
      const m = await state.client.rpc('group.members', { channel, limit: MEMBER_PAGE, offset: page * MEMBER_PAGE });
      const got = (m.data && m.data.members) || [];
      list.push(...got);
      if (got.length < MEMBER_PAGE) break;
    }
    if (seq !== panel.seq) return;
    panel.role = g.data.role;
    panel.members = list;
    $('members-more').hidden = list.length < panel.pages * MEMBER_PAGE;
    panel.group = g.data.group;
    $('group-role').textContent = 'Your role: ' + panel.role + ' · ' + g.data.group.members + ' members';
    renderMembers();
  } catch (err) {
    if (seq === panel.seq) setGroupStatus('Could not load the members: ' + errorText(err));
  }
}

function renderMembers() {
  const mine = rank[panel.role] ?? 9;
  const rows = panel.members.map((m) => {
    const muted = m.muted_until && Date.parse(m.muted_until) > Date.now();
    const li = el('li', { class: 'member', 'data-testid': 'member', 'data-user': m.user, 'data-role': m.role },
      el('span', { class: 'who' },
        el('span', { class: 'name', text: m.name || m.user }),
        m.name ? el('span', { class: 'uid', text: ' @' + m.user }) : null),
      el('span', { class: 'role', 'data-testid': 'member-role', text: m.role + (muted ? ' · muted' : '') }));
    const actions = el('span', { class: 'member-actions' });
    if (m.user !== state.user) {
      if (panel.role === 'owner' && m.role !== 'owner') {
        const to = m.role === 'admin' ? 'member' : 'admin';
        actions.append(el('button', { type: 'button', text: to === 'admin' ? 'Make admin' : 'Make member', 'aria-label': (to === 'admin' ? 'Make admin: ' : 'Make member: ') + m.user,
          onclick: () => act('group.role', { user: m.user, role: to }, m.user + ' is now ' + to) }));
        actions.append(el('button', { type: 'button', text: 'Make owner', 'aria-label': 'Make owner: ' + m.user,
          onclick: () => {
            if (window.confirm('Hand ownership of ' + roomLabel(panel.channel) + ' to ' + m.user + '? You stay an admin.')) {
              act('group.transfer', { user: m.user }, m.user + ' is now the owner');
            }
          } }));
      }
      if (mine <= rank.admin && mine < (rank[m.role] ?? 9)) {
        const select = el('select', { 'aria-label': 'Mute ' + m.user + ' for' },
          ...MUTE_CHOICES.map(([s, label]) => el('option', { value: s, text: label })));
        actions.append(
          muted
            ? el('button', { type: 'button', text: 'Unmute', 'aria-label': 'Unmute ' + m.user, onclick: () => act('group.mute', { user: m.user, duration: 0 }, m.user + ' may post again') })
            : el('span', { class: 'mute' }, select, el('button', { type: 'button', text: 'Mute', 'aria-label': 'Mute ' + m.user,
              onclick: () => act('group.mute', { user: m.user, duration: Number(select.value) }, m.user + ' is muted for ' + select.selectedOptions[0].textContent) })),
          el('button', { type: 'button', text: 'Remove', 'aria-label': 'Remove ' + m.user,
            onclick: () => expel('group.remove', m.user, 'Remove ' + m.user + ' from the group?', ' was removed') }),
          el('button', { type: 'button', class: 'danger', text: 'Ban', 'aria-label': 'Ban ' + m.user,
            onclick: () => expel('group.ban', m.user, 'Ban ' + m.user + ' from the group? They cannot rejoin.', ' was banned') }));
      }
    }
    if (actions.childElementCount) li.append(actions);
    return li;
  });
  $('member-list').replaceChildren(...rows);
  $('admin-tools').hidden = mine > rank.admin;
  $('delete-group').hidden = panel.role !== 'owner';
  // The settings form shows the group's current settings unless the admin
  // is in the middle of editing them.
  if (mine <= rank.admin && panel.group && !$('settings-form').contains(document.activeElement)) {
    $('settings-title').value = panel.group.title || '';
    $('settings-topic').value = panel.group.topic || '';
    $('settings-who-posts').value = panel.group.who_posts || 'members';
    $('settings-who-invites').value = panel.group.who_invites || 'members';
  }
  if (mine <= rank.admin && $('audit').open) loadAudit();
  $('leave-group').hidden = panel.role === 'owner';
  $('group-tools').hidden = false;
}

// auditText says one audit entry in words: "carol banned mallory (spam)".
const auditVerbs = {
  create: 'created the group', update: 'changed the settings', join: 'joined', invite: 'added',
  leave: 'left', remove: 'removed', ban: 'banned', unban: 'lifted the ban on', mute: 'muted', unmute: 'unmuted',
  role: 'changed the role of', transfer: 'handed ownership to', delete: 'deleted', delete_message: 'deleted a message of',
};
function auditText(a) {
  let verb = auditVerbs[a.action] || a.action;
  if (a.action === 'invite' && !a.target) verb = 'created an invite link';
  if (a.action === 'create' && a.target === a.actor) verb = 'created the group';
  let text = (a.actor || 'the server') + ' ' + verb;
  if (a.target && a.target !== a.actor && a.action !== 'create') text += ' ' + a.target;
  const d = a.detail && typeof a.detail === 'object' ? a.detail : {};
  const notes = [];
  if (d.role) notes.push('now ' + d.role);
  if (d.until && !String(d.until).startsWith('0001')) notes.push('until ' + new Date(d.until).toLocaleString());
  if (d.reason) notes.push('reason: ' + d.reason);
  if (d.invited_by) notes.push('invited by ' + d.invited_by);
  if (notes.length) text += ' (' + notes.join(', ') + ')';
  return text;
}

// loadAudit shows the group's newest audit entries (admins and the owner).
async function loadAudit() {
  const channel = panel.channel;
  try {
    const res = await state.client.rpc('group.audit', { channel, limit: 50 });
    if (channel !== panel.channel) return;
    const rows = ((res.data && res.data.entries) || []).map((a) => el('li', { 'data-testid': 'audit-entry', 'data-action': a.action },
      el('time', { datetime: a.at, text: new Date(a.at).toLocaleString() }), ' ', auditText(a)));
    $('audit-list').replaceChildren(...(rows.length ? rows : [el('li', { text: 'Nothing recorded yet.' })]));
  } catch (err) {
    $('audit-list').replaceChildren(el('li', { text: 'Could not load the activity log: ' + errorText(err) }));
  }
}

// expel removes or bans after asking; the optional reason is shown to the
// member and kept in the audit log.
function expel(method, user, question, done) {
  const reason = window.prompt(question + '\nReason (optional):', '');
  if (reason === null) return;
  const params = { user };
  if (reason.trim()) params.reason = reason.trim().slice(0, 200);
  act(method, params, user + done);
}

async function act(method, params, done) {
  const channel = panel.channel;
  try {
    await state.client.rpc(method, { channel, ...params });
    setGroupStatus(done + '.');
  } catch (err) {
    setGroupStatus('Not done: ' + errorText(err));
  }
  if (panel.channel === channel) await refreshMembers();
}

// wireGroups connects the forms of the sidebar and the members panel.
export function wireGroups() {
  $('new-group-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const title = $('new-group-title').value.trim();
    const err = $('new-group-error');
    if (!title) {
      err.hidden = false;
      err.textContent = 'Give the group a title.';
      return;
    }
    err.hidden = true;
    try {
      await createGroup(title);
      $('new-group-title').value = '';
    } catch (ex) {
      err.hidden = false;
      err.textContent = 'Could not create the group: ' + errorText(ex);
    }
  });
  $('dm-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const user = $('dm-input').value.trim();
    const err = $('dm-error');
    if (!validUserID(user) || user === state.user) {
      err.hidden = false;
      err.textContent = user === state.user ? 'That is you.' : 'Type a user id (no spaces, commas or #).';
      return;
    }
    err.hidden = true;
    $('dm-input').value = '';
    startDM(user);
    $('composer-input').focus();
  });
  $('members-toggle').addEventListener('click', () => {
    if ($('group-panel').hidden && state.active) showGroupPanel(state.active.channel);
    else closeGroupPanel();
  });
  $('group-panel-close').addEventListener('click', () => {
    closeGroupPanel();
    $('members-toggle').focus();
  });
  $('add-member-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const user = $('add-member-input').value.trim();
    if (!validUserID(user)) return setGroupStatus('Type a user id (no spaces, commas or #).');
    $('add-member-input').value = '';
    await act('group.add', { user }, user + ' was added');
  });
  $('create-invite').addEventListener('click', async () => {
    try {
      const res = await state.client.rpc('group.invite', { channel: panel.channel, ttl: 86400 });
      const link = location.origin + location.pathname + '#join=' + encodeURIComponent(res.data.code);
      $('invite-link').value = link;
      $('invite-link-row').hidden = false;
      $('invite-link').select();
      setGroupStatus('Invite link valid until ' + new Date(res.data.expires).toLocaleString() + '.');
    } catch (err) {
      setGroupStatus('Could not create an invite link: ' + errorText(err));
    }
  });
  $('copy-invite').addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText($('invite-link').value);
      setGroupStatus('Link copied.');
    } catch {
      $('invite-link').select(); // no clipboard access: the person copies it
    }
  });
  $('audit').addEventListener('toggle', () => {
    if ($('audit').open && panel.channel) loadAudit();
  });
  $('unban-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const user = $('unban-input').value.trim();
    if (!validUserID(user)) return setGroupStatus('Type a user id (no spaces, commas or #).');
    $('unban-input').value = '';
    await act('group.unban', { user }, user + ' may join again');
  });
  $('members-more').addEventListener('click', () => {
    panel.pages++;
    refreshMembers();
  });
  $('settings-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const title = $('settings-title').value.trim();
    if (!title) return setGroupStatus('Give the group a title.');
    await act('group.update', {
      title, topic: $('settings-topic').value.trim(),
      who_posts: $('settings-who-posts').value, who_invites: $('settings-who-invites').value,
    }, 'Settings saved');
  });
  $('delete-group').addEventListener('click', async () => {
    if (!window.confirm('Delete ' + roomLabel(panel.channel) + ' for every member? Its history is dropped.')) return;
    await act('group.delete', {}, 'The group was deleted');
  });
  $('leave-group').addEventListener('click', async () => {
    if (!window.confirm('Leave ' + roomLabel(panel.channel) + '?')) return;
    await act('group.leave', {}, 'You left');
  });
}
