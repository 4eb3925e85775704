// The relay's dashboard: reads the relay's own JSON API every few seconds and draws it.
// Plain browser JavaScript, no dependencies; every value from the API is put in the page
// as text, never as markup (keys and errors are the users' data).

import { $, api, el, fill, fillTable, number } from './dom.js';

const REFRESH_MS = 2000;
const TOKEN_KEY = 'outbox-relay.admin-token';

function age(seconds) {
  if (seconds === null || seconds === undefined) return '–';
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} d`;
}


function message(text, kind = '') {
  const node = $('message');
  node.textContent = text;
  node.dataset.kind = kind;
}

/** A line chart of `values` (one per sample) into an SVG with a 600×160 view box. */
function drawChart(svg, series) {
  const width = 600;
  const height = 160;
  const max = Math.max(1, ...series.flatMap((s) => s.values));
  const n = Math.max(...series.map((s) => s.values.length), 0);
  const x = (i) => (n <= 1 ? width : (i / (n - 1)) * width);
  const y = (v) => height - 4 - (v / max) * (height - 12);
  const children = [];
  for (const s of series) {
    if (s.values.length === 0) continue;
    const points = s.values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`);
    const ns = 'http://www.w3.org/2000/svg';
    if (s.area) {
      const area = document.createElementNS(ns, 'path');
      area.setAttribute('class', 'area');
      area.setAttribute('d', `M0,${height} L${points.join(' L')} L${width},${height} Z`);
      children.push(area);
    }
    const line = document.createElementNS(ns, 'path');
    line.setAttribute('class', `line ${s.class ?? ''}`);
    line.setAttribute('d', `M${points.join(' L')}`);
    children.push(line);
  }
  svg.replaceChildren(...children);
  svg.dataset.points = String(n);
  svg.dataset.max = String(Math.max(0, ...series.flatMap((s) => s.values)));
  return max;
}

/** A histogram bar `percent` wide; styled through the DOM, which the content policy allows. */
function renderActivity(activity) {
  const samples = activity.samples;
  const rates = [];
  for (let i = 1; i < samples.length; i++) {
    const dt = (samples[i].t - samples[i - 1].t) / 1000;
    rates.push(dt > 0 ? Math.max(0, samples[i].published - samples[i - 1].published) / dt : 0);
  }
  const recent = rates.slice(-5);
  const rate = recent.length ? Math.round(recent.reduce((a, b) => a + b, 0) / recent.length) : null;
  $('rate').textContent = number(rate);
  $('rate').dataset.value = String(rate ?? '');
  const span = samples.length > 1 ? `last ${age((samples.at(-1).t - samples[0].t) / 1000)}` : 'collecting…';
  const maxRate = drawChart($('chart-throughput'), [{ values: rates, area: true }]);
  $('throughput-span').textContent = span;
  $('throughput-max').textContent = `max ${number(Math.round(maxRate))}/s`;
  const unsent = samples.map((s) => s.pending + s.failed + s.dead);
  const maxBacklog = drawChart($('chart-backlog'), [
    { values: unsent, area: true },
    { values: samples.map((s) => s.dead), class: 'dead' },
  ]);
  $('backlog-span').textContent = span;
  $('backlog-max').textContent = `max ${number(maxBacklog)} rows (dead in red)`;

  $('window').textContent = String(activity.windowSeconds);
  const most = Math.max(1, ...activity.partitions.map((p) => p.records));
  const bars = activity.partitions.map((p) =>
    el(
      'div',
      { class: 'bar', 'data-topic': p.topic, 'data-partition': String(p.partition), 'data-records': String(p.records) },
      el('span', { class: 'label', title: `${p.topic}[${p.partition}]` }, `${p.topic}[${p.partition}]`),
      el('span', {}, fill((p.records / most) * 100)),
      el('span', { class: 'n' }, number(p.records)),
    ),
  );
  $('partitions').replaceChildren(...(bars.length ? bars : [el('span', { class: 'muted' }, 'nothing published in this window')]));
}

function renderStatus(status) {
  const verdict = $('verdict');
  verdict.textContent = status.verdict;
  verdict.dataset.verdict = status.verdict;
  $('reason').textContent = status.reason;
  $('reason').title = status.reason;
  const u = status.unsent;
  $('unsent').textContent = number(u.pending + u.failed + u.dead);
  $('unsent-split').textContent = `${number(u.pending)} pending · ${number(u.failed)} failed · ${number(u.dead)} dead`;
  $('oldest').textContent = u.pending + u.failed + u.dead > 0 ? age(u.oldestSeconds) : '–';
  $('group').textContent = status.relay.group ?? 'none';
  const live = status.relay.members.filter((m) => m.live).length;
  $('members').textContent = `${live} live relay(s), ${status.relay.shards ?? 0} shards${status.relay.successor ? `, taken over by ${status.relay.successor}` : ''}`;

  const byShard = new Map(status.relay.byShard.map((s) => [s.shard, s]));
  fillTable('shards', status.relay.owners, (o) => {
    const s = byShard.get(o.shard) ?? { pending: 0, failed: 0, dead: 0 };
    return el(
      'tr',
      {},
      el('td', { class: 'num' }, o.shard),
      el('td', {}, o.owner ?? 'unowned'),
      el('td', {}, o.leaseExpiresAt ? new Date(o.leaseExpiresAt).toLocaleTimeString() : '–'),
      el('td', { class: 'num' }, number(s.pending)),
      el('td', { class: 'num' }, number(s.failed)),
      el('td', { class: 'num' }, number(s.dead)),
    );
  });
  const lag = status.consumers.flatMap((c) => c.partitions.map((p) => ({ group: c.group, ...p })));
  fillTable('lag', lag, (p) =>
    el(
      'tr',
      { 'data-group': p.group },
      el('td', {}, p.group),
      el('td', {}, p.topic),
      el('td', { class: 'num' }, p.partition),
      el('td', { class: 'num' }, number(p.storedOffset)),
      el('td', { class: 'num' }, number(p.endOffset)),
      el('td', { class: 'num' }, number(p.lag)),
    ),
  );
}

/** Rows repaired from this tab, newest first, followed at each refresh: id → { repair, at }. */
const repaired = new Map();
const REPAIRS_KEPT = 20;

function follow(id, repair) {
  repaired.delete(id);
  repaired.set(id, { repair, at: new Date() });
  while (repaired.size > REPAIRS_KEPT) repaired.delete(repaired.keys().next().value);
}

/** Each followed row as it is now (GET /api/rows/:id); one that is gone says so. */
async function renderRepairs() {
  const entries = [...repaired.entries()].reverse();
  const rows = await Promise.all(entries.map(([id, r]) => api(`/api/rows/${id}`).then((row) => ({ id, ...r, row }), (err) => ({ id, ...r, row: null, error: err.message }))));
  fillTable('repairs', rows, (r) =>
    el(
      'tr',
      { 'data-id': r.id, 'data-state': r.row?.state ?? 'unknown' },
      el('td', { class: 'num' }, r.id),
      el('td', {}, r.repair),
      el('td', {}, r.at.toLocaleTimeString()),
      el('td', { class: `state-${r.row?.state ?? 'unknown'}` }, r.row?.state ?? r.error),
      el('td', { class: 'num' }, r.row?.attempts ?? '–'),
      el('td', {}, r.row?.kafka ? `partition ${r.row.kafka.partition}, offset ${r.row.kafka.offset}` : r.row?.state === 'sent' ? 'marked from a checkpoint' : '–'),
      el('td', { class: 'error', title: r.row?.lastError ?? '' }, r.row?.lastError ?? ''),
    ),
  );
}

/** A mutating call: needs the token and a reason, reports what changed or why not. */
async function act(path, description, extra = {}, { confirmText, followRow } = {}) {
  const token = $('token').value.trim();
  const reason = $('action-reason').value.trim();
  if (!token) return message('Enter the admin token first (the relay\'s --admin-token).', 'error');
  if (!reason) return message('Enter a reason first: every repair is audited.', 'error');
  if (confirmText && !window.confirm(confirmText)) return message(`${description}: cancelled`);
  try {
    const result = await api(path, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ reason, actor: 'dashboard', ...extra }),
    });
    sessionStorage.setItem(TOKEN_KEY, token);
    if (followRow) follow(followRow.id, followRow.repair);
    message(`${description}: done${result.audit ? ` (audit ${result.audit})` : ''}`, 'ok');
  } catch (err) {
    if (err.status === 401) sessionStorage.removeItem(TOKEN_KEY);
    message(`${description}: ${err.message}`, 'error');
  }
  await refresh();
}

function renderStuck(rows) {
  fillTable('stuck', rows, (r) =>
    el(
      'tr',
      { 'data-id': r.id, 'data-state': r.state },
      el('td', { class: 'num' }, r.id),
      el('td', {}, r.topic),
      el('td', {}, r.key ?? '∅'),
      el('td', {}, r.state + (r.held ? ' (held)' : '')),
      el('td', { class: 'num' }, r.attempts),
      el('td', {}, age(r.ageSeconds)),
      el('td', {}, r.heldBack ?? (r.blockedBy ? `row ${r.blockedBy}` : '–')),
      el('td', { class: 'error', title: r.lastError ?? '' }, r.lastError ?? ''),
      el(
        'td',
        {},
        el('button', { 'data-action': 'retry', onclick: () => act(`/api/rows/${r.id}/retry`, `retry row ${r.id}`, {}, { followRow: { id: r.id, repair: 'retry' } }) }, 'Retry'),
        ' ',
        el(
          'button',
          {
            'data-action': 'skip',
            onclick: () =>
              act(`/api/rows/${r.id}/skip`, `skip row ${r.id}`, {}, { confirmText: `Skip row ${r.id} for good? It will never be published; its key moves on.`, followRow: { id: r.id, repair: 'skip' } }),
          },
          'Skip',
        ),
      ),
    ),
  );
}

function renderDeadLetters(letters) {
  fillTable('dead-letters', letters, (d) =>
    el(
      'tr',
      { 'data-id': d.id, 'data-group': d.group },
      el('td', {}, d.group),
      el('td', { class: 'num' }, d.id),
      el('td', {}, `${d.topic}[${d.partition}]@${d.offset}`),
      el('td', {}, d.state),
      el('td', { class: 'num' }, d.attempts),
      el('td', { class: 'error', title: d.error }, d.error),
      el(
        'td',
        {},
        d.state === 'pending'
          ? el('button', { 'data-action': 'replay', onclick: () => act(`/api/dead-letters/${d.id}/replay`, `replay dead letter ${d.id}`, { group: d.group }) }, 'Replay')
          : '',
      ),
    ),
  );
}

const STUCK_LIMIT = 50;

/** Dead rows first, then failed, then pending for over a minute: what needs a hand comes first. */
async function stuckRows() {
  const lists = await Promise.all([
    api(`/api/stuck?state=dead&olderThan=0s&limit=${STUCK_LIMIT}`),
    api(`/api/stuck?state=failed&olderThan=0s&limit=${STUCK_LIMIT}`),
    api(`/api/stuck?state=pending&olderThan=1m&limit=${STUCK_LIMIT}`),
  ]);
  const more = lists.some((l) => l.rows.length === STUCK_LIMIT);
  return { rows: lists.flatMap((l) => l.rows).slice(0, STUCK_LIMIT * 2), more };
}

let refreshing;
async function refresh() {
  refreshing ??= (async () => {
    try {
      const [status, activity, stuck] = await Promise.all([api('/api/status'), api('/api/activity'), stuckRows()]);
      renderStatus(status);
      renderActivity(activity);
      renderStuck(stuck.rows);
      $('stuck-count').textContent = stuck.rows.length ? `${stuck.rows.length}${stuck.more ? '+ (the first of each state; outbox-relay stuck lists all)' : ''}` : '';
      const groups = status.consumers.filter((c) => c.deadLettersPending > 0).map((c) => c.group);
      const letters = await Promise.all(groups.map(async (group) => (await api(`/api/dead-letters?group=${encodeURIComponent(group)}&limit=50`)).deadLetters.map((d) => ({ group, ...d }))));
      renderDeadLetters(letters.flat());
      await renderRepairs();
      $('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
      document.body.dataset.loaded = 'true';
    } catch (err) {
      $('updated').textContent = `refresh failed: ${err.message}`;
    } finally {
      refreshing = undefined;
    }
  })();
  return refreshing;
}

$('token').value = sessionStorage.getItem(TOKEN_KEY) ?? '';
for (const id of ['token', 'action-reason']) $(id).addEventListener('input', () => message(''));
refresh();
// A hidden tab stops polling; it catches up when shown again.
setInterval(() => document.visibilityState === 'visible' && refresh(), REFRESH_MS);
document.addEventListener('visibilitychange', () => document.visibilityState === 'visible' && refresh());
