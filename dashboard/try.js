// The "Try it" panel (the relay runs with --playground): a preset or key design tried
// through the real relay on a scratch schema and topic, as `outbox-relay try` does; each
// try's result is drawn, and kept in a history to compare tries side by side.

import { $, api, el, fill, fillTable, number } from './dom.js';

/** Each try of this page, oldest first. */
const history = [];

function say(text, kind = '') {
  const node = $('try-message');
  node.textContent = text;
  node.dataset.kind = kind;
}

function choose(card) {
  for (const other of document.querySelectorAll('#try .preset')) other.setAttribute('aria-pressed', String(other === card));
  $('try-keys').value = card.dataset.keyBuckets;
}

function chosenPreset() {
  return document.querySelector('#try .preset[aria-pressed="true"]')?.dataset.preset ?? 'reliable';
}

function bars(target, entries, label) {
  const most = Math.max(1, ...entries.map(([, n]) => n));
  target.replaceChildren(
    ...entries.map(([name, n]) =>
      el('div', { class: 'bar', 'data-name': String(name), 'data-n': String(n) }, el('span', { class: 'label', title: label(name) }, label(name)), el('span', {}, fill((n / most) * 100)), el('span', { class: 'n' }, number(n))),
    ),
  );
}

function render(report) {
  const skewed = report.skew >= 1.5;
  $('try-skew').textContent = `skew ${report.skew} (${skewed ? 'uneven: a few keys carry most events' : 'even'})`;
  $('try-skew').dataset.skewed = String(skewed);
  bars($('try-histogram'), Object.entries(report.partitionHistogram), (p) => `partition ${p}`);
  fillTable('try-samples', report.samples, (s) => el('tr', {}, el('td', {}, s.key), el('td', {}, s.partition), el('td', {}, s.offset)));
  const figures = [
    ['published', `${number(report.publishedPerSec)} events/s`],
    ['enqueued', `${number(report.enqueuedPerSec)} events/s`],
    ['commit → visible', `p50 ${report.latencyMs.p50} ms, p99 ${report.latencyMs.p99} ms`],
    ['batches', `${number(report.batches)}, ${report.meanBatchSize} rows each`],
    ['bytes', `${number(report.rawBytes)} raw, ${report.compression}`],
    ['exactly once', report.duplicates === 0 && report.missing === 0 ? 'yes' : `no: ${report.duplicates} duplicated, ${report.missing} missing`],
  ];
  $('try-figures').replaceChildren(...figures.flatMap(([name, value]) => [el('dt', {}, name), el('dd', {}, value)]));
  history.push(report);
  bars(
    $('try-history'),
    history.map((r, i) => [i, r.publishedPerSec]),
    (i) => `#${Number(i) + 1} ${history[i].preset}, ${history[i].keyBuckets} keys, ${history[i].events} events`,
  );
}

async function send() {
  const token = $('token').value.trim();
  if (!token) return say('Enter the admin token first (the relay\'s --admin-token, in the Operator bar).', 'error');
  const body = {
    preset: chosenPreset(),
    events: Number($('try-events').value),
    keyBuckets: Number($('try-keys').value),
    payloadBytes: Number($('try-payload').value),
  };
  $('try-send').disabled = true;
  say(`Trying ${body.preset} with ${number(body.events)} events over ${number(body.keyBuckets)} key(s)…`);
  try {
    const report = await api('/api/try', { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: JSON.stringify(body) });
    render(report);
    say(`Try ${history.length}: ${number(report.publishedPerSec)} events/s published.`, 'ok');
  } catch (err) {
    say(`The try failed: ${err.message}`, 'error');
  } finally {
    $('try-send').disabled = false;
  }
}

async function init() {
  let info;
  try {
    info = await api('/api/try');
  } catch {
    return; // An older relay, or none: no panel.
  }
  if (!info.enabled) return;
  $('try-events').max = String(info.maxEvents);
  for (const card of document.querySelectorAll('#try .preset')) card.addEventListener('click', () => choose(card));
  $('try-send').addEventListener('click', () => void send());
  $('try').hidden = false;
}

void init();
