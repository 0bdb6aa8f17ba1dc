// Fencing readiness: the matrix of hosts × their candidate proxies, as the PM
// health check last found it (GET /api/readiness), refreshing on its own.
// Each cell holds one mark per fence agent of the host: works, fails (why on
// hover, and in the row's details), not tried; a blank cell: that proxy is no
// candidate of the host. Hosts that cannot be fenced, or only through one
// proxy (a single point of failure), are flagged.
import { h, icon, replace, clear } from '../dom.js';
import * as api from '../api.js';
import { ago, button, emptyState, every, formatTime, label, readinessBadge } from '../ui.js';

const REFRESH_MS = 5000;   // like the inventory, the event log and the engines
const ENGINE = 'engine';
const MARK = { works: 'check', fails: 'x', not_tried: 'minus' };
const STATE_TEXT = { works: 'works', fails: 'fails', not_tried: 'not tried' };
const FLAGS = {
  unfenceable: ['bad', 'cannot be fenced', 'No proxy can reach its fence agents: it cannot be fenced now'],
  single_path: ['warn', 'single point of failure', 'Only one proxy can fence it: if that proxy fails, it cannot be fenced'],
};
const SHOW = [['', 'All hosts'], ['problems', 'Cannot be fenced or single path']];

export function mount(container) {
  const f = { show: '', cluster: '' };
  const updated = h('span.updated.muted');
  const summary = h('div.readiness-summary');
  const note = h('span.muted.small.legend.check-note');
  const showSel = h('select', { name: 'show', 'aria-label': 'Show' },
    SHOW.map(([v, t]) => h('option', { value: v }, t)));
  const clusterSel = h('select', { name: 'cluster', 'aria-label': 'Cluster' }, h('option', { value: '' }, 'All clusters'));
  const tableBox = h('div.table-wrap.readiness-box');
  const legend = h('div.readiness-legend.muted.small',
    h('span', mark('works'), ' works'), h('span', mark('fails'), ' fails (hover for why)'),
    h('span', mark('not_tried'), ' not tried'), h('span', h('span.cell-blank'), ' not a candidate'),
    h('span', 'Click a host for each path and its reason.'));
  container.append(
    h('div.page-head', h('div.page-title', h('h1', 'Readiness'),
      h('p.subtitle', 'Can each host be fenced now, and through which proxies? The PM health check asks every candidate proxy of each host’s chain for a status of each fence agent.')),
    h('div.page-actions', updated, button('Refresh', { onclick: () => poller.now(), dataset: { action: 'refresh' } }, 'refresh'))),
    summary,
    h('section.card.flush',
      h('div.card-toolbar.filters',
        h('label.filter', h('span', 'Show'), showSel), h('label.filter', h('span', 'Cluster'), clusterSel),
        h('span.grow'), note),
      tableBox, legend));

  let rows = [];
  let lastJson = '';
  const open = new Set();

  async function load() {
    const [list, enabled, interval] = await Promise.all([
      api.get('/api/readiness'),
      api.get('/api/config/PMHealthCheckEnabled').catch(() => null),
      api.get('/api/config/PMHealthCheckIntervalInSec').catch(() => null)]);
    const json = JSON.stringify([list, enabled, interval]);
    if (json !== lastJson) {
      lastJson = json;
      rows = list;
      showNote(enabled, interval);
      fillClusters();
      render();
    }
    updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
  }

  function showNote(enabled, interval) {
    if (!enabled) { note.textContent = ''; return; }
    const on = enabled.value === 'true';
    note.classList.toggle('off', !on);
    note.textContent = on
      ? `The PM health check runs every ${interval ? interval.value : '?'} s, on the engine that owns each host.`
      : 'The PM health check is off (PMHealthCheckEnabled): what is shown is as last found, if ever.';
  }

  function fillClusters() {
    const keep = clusterSel.value;
    const names = [...new Set(rows.map((r) => r.cluster).filter(Boolean))].sort();
    replace(clusterSel, h('option', { value: '' }, 'All clusters'), names.map((n) => h('option', { value: n }, n)));
    clusterSel.value = names.includes(keep) ? keep : '';
    f.cluster = clusterSel.value;
  }

  function shown() {
    return rows.filter((r) => (!f.cluster || r.cluster === f.cluster)
      && (!f.show || r.readiness === 'unfenceable' || r.readiness === 'single_path'));
  }

  function renderSummary() {
    const count = (state) => rows.filter((r) => r.readiness === state).length;
    replace(summary, [['ready', 'ready'], ['single_path', 'single path'], ['unfenceable', 'cannot be fenced'], ['unknown', 'unknown']]
      .map(([state, text]) => h('div.summary-item', { dataset: { readiness: state, count: String(count(state)) } },
        h('span.summary-count', String(count(state))), readinessBadge(state, text))));
  }

  function render() {
    renderSummary();
    const list = shown();
    if (!list.length) {
      replace(tableBox, emptyState(rows.length ? 'No host matches these filters.' : 'No host in the inventory yet.', 'list'));
      return;
    }
    // The columns: every proxy some shown host has as a candidate, hosts by
    // name, the engine last.
    const proxies = [...new Set(list.flatMap((r) => r.checks.map((c) => c.proxy)))]
      .sort((a, b) => (a === ENGINE) - (b === ENGINE) || a.localeCompare(b));
    const columns = 4 + proxies.length;
    replace(tableBox, h('table.table.readiness-table',
      h('thead', h('tr', h('th', 'Host'), h('th', 'Readiness'),
        h('th.num', { title: 'How many proxies must fail before the host cannot be fenced (with one agent: the proxies that work)' }, 'Paths'),
        proxies.map((p) => h('th.proxy-col', { dataset: { proxy: p }, title: p === ENGINE ? 'the engine itself' : `proxy host ${p}` },
          h('span.proxy-name', p))),
        h('th', 'Checked'))),
      h('tbody', list.map((r) => {
        const tr = h('tr.clickable', { dataset: { host: r.host, readiness: r.readiness }, title: r.message },
          h('td.nowrap', h('a.host-link', { href: `#/hosts/${r.host_id}`, onclick: (ev) => ev.stopPropagation() }, r.host),
            flag(r.readiness)),
          h('td', readinessBadge(r.readiness)),
          h('td.num', { dataset: { col: 'paths' } }, r.readiness === 'unknown' ? '—' : String(r.paths)),
          proxies.map((p) => cell(r, p)),
          h('td.nowrap.muted', { title: r.checked_at || 'not checked yet' }, r.checked_at ? ago(r.checked_at) : '—'));
        tr.addEventListener('click', () => { open.has(r.host_id) ? open.delete(r.host_id) : open.add(r.host_id); render(); });
        return open.has(r.host_id) ? [tr, details(r, columns)] : [tr];
      }))));
  }

  showSel.addEventListener('change', () => { f.show = showSel.value; render(); });
  clusterSel.addEventListener('change', () => { f.cluster = clusterSel.value; render(); });

  const poller = every(REFRESH_MS, load);
  return { unmount() { poller.stop(); clear(container); } };
}

function mark(state) {
  return h('span.mark', { class: `mark-${state}`, dataset: { state } }, icon(MARK[state], 'icon-xs'));
}

function flag(readiness) {
  const f = FLAGS[readiness];
  if (!f) return null;
  return h('span.chip.readiness-flag', { class: `tone-${f[0]}`, title: f[2], dataset: { flag: readiness } },
    icon('alert', 'icon-xs'), f[1]);
}

/** The host's paths through one proxy: one mark per agent, why on hover. */
function cell(r, proxy) {
  const paths = r.checks.filter((c) => c.proxy === proxy);
  if (!paths.length) return h('td.matrix-cell.none', { dataset: { proxy } });
  const states = new Set(paths.map((c) => c.state));
  const state = states.size === 1 ? paths[0].state : 'mixed';
  const why = paths.map((c) => `${c.agent}: ${STATE_TEXT[c.state]}${c.message ? ` — ${c.message}` : ''}`).join('\n');
  return h('td.matrix-cell', { class: `cell-${state}`, dataset: { proxy, state }, title: `${proxy} (${paths[0].source})\n${why}` },
    paths.map((c) => mark(c.state)));
}

function details(r, columns) {
  return h('tr.details-row', { dataset: { detailsOf: r.host } }, h('td', { colspan: columns },
    h('p.readiness-message', r.message),
    r.checks.length ? h('table.table.compact.paths-table',
      h('thead', h('tr', h('th', 'Proxy'), h('th', 'Source'), h('th', 'Agent'), h('th', 'State'), h('th', 'Detail'), h('th.num', 'Took'))),
      h('tbody', r.checks.map((c) => h('tr', { dataset: { proxy: c.proxy, state: c.state } },
        h('td.mono', c.proxy), h('td', c.source), h('td.mono', c.agent),
        h('td.nowrap', mark(c.state), ' ', STATE_TEXT[c.state]),
        h('td.msg', c.message), h('td.num.nowrap', c.state === 'not_tried' ? '' : `${c.duration.toFixed(2)} s`))))) : null,
    h('p.muted.small', r.checked_at
      ? `Checked ${formatTime(r.checked_at)} by engine ${r.engine || '—'}; ${label(r.readiness)} since ${formatTime(r.changed_at)}.`
      : 'Not checked yet.')));
}
