// The event log, filterable by host and severity, refreshing on its own.
import { h, replace, clear } from '../dom.js';
import * as api from '../api.js';
import { button, emptyState, every, formatTime, severityBadge, label } from '../ui.js';
import { showOperation } from '../power.js';

const SEVERITIES = [['', 'All severities'], ['warning', 'Warnings and errors'], ['error', 'Errors only']];

export function mount(container) {
  const f = { host: '', severity: '', text: '', limit: '200' };
  const hostSel = h('select', { name: 'host', 'aria-label': 'Host' }, h('option', { value: '' }, 'All hosts'));
  const sevSel = h('select', { name: 'severity', 'aria-label': 'Severity' },
    SEVERITIES.map(([v, t]) => h('option', { value: v }, t)));
  const text = h('input.search', { type: 'search', name: 'text', placeholder: 'Search messages', 'aria-label': 'Search messages' });
  const limitSel = h('select', { name: 'limit', 'aria-label': 'How many' },
    ['100', '200', '500', '2000'].map((n) => h('option', { value: n, selected: n === f.limit }, `last ${n}`)));
  const updated = h('span.updated.muted');
  const tableBox = h('div.table-wrap.events-box');
  const count = h('span.muted.small');
  container.append(
    h('div.page-head', h('div.page-title', h('h1', 'Events'),
      h('p.subtitle', 'What the engine did and saw: power operations, each proxy tried, status changes, skipped fencing.')),
    h('div.page-actions', updated, button('Refresh', { onclick: () => poller.now(), dataset: { action: 'refresh' } }, 'refresh'))),
    h('section.card.flush',
      h('div.card-toolbar.filters',
        h('label.filter', h('span', 'Host'), hostSel), h('label.filter', h('span', 'Severity'), sevSel),
        h('label.filter', h('span', 'Show'), limitSel), text, h('span.grow'), count),
      tableBox));

  let rows = [];
  let lastJson = '';
  const open = new Set();

  async function loadHosts() {
    const hosts = await api.get('/api/hosts');
    const keep = hostSel.value;
    replace(hostSel, h('option', { value: '' }, 'All hosts'),
      hosts.sort((a, b) => a.name.localeCompare(b.name)).map((x) => h('option', { value: String(x.id) }, x.name)));
    hostSel.value = keep;
  }

  async function load() {
    const query = api.qs({ host: f.host, severity: f.severity, limit: f.limit });
    const list = await api.get(`/api/events${query}`);
    rows = list.reverse();
    const json = JSON.stringify(rows);
    if (json !== lastJson) { lastJson = json; render(); }
    tableBox.dataset.query = query;   // what is shown (the tests wait for it)
    updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
  }

  function render() {
    const q = f.text.toLowerCase();
    const shown = q ? rows.filter((e) => `${e.message} ${e.kind} ${e.host || ''} ${e.engine || ''}`.toLowerCase().includes(q)) : rows;
    count.textContent = `${shown.length} event${shown.length === 1 ? '' : 's'}`;
    if (!shown.length) { replace(tableBox, emptyState('No event matches these filters.', 'list')); return; }
    // The engine column only when a listed event names one: events written by
    // the CLI, by the API (audit, logins) or before engines had names carry
    // none, and a column of dashes would only narrow the messages. It comes
    // last (who wrote it, like the operation), so the other columns never move.
    const withEngine = shown.some((e) => e.engine);
    const columns = withEngine ? 7 : 6;
    replace(tableBox, h('table.table.events-table',
      h('thead', h('tr', h('th', 'Time'), h('th', 'Severity'), h('th', 'Host'), h('th', 'Event'), h('th', 'Message'), h('th', 'Operation'),
        withEngine ? h('th', { title: 'The engine that wrote the event' }, 'Engine') : null)),
      h('tbody', shown.map((e) => {
        const hasDetails = e.details && Object.keys(e.details).length;
        const tr = h('tr', { dataset: { eventId: String(e.id), severity: e.severity }, class: hasDetails ? 'clickable' : '' },
          h('td.nowrap', formatTime(e.time)),
          h('td', severityBadge(e.severity)),
          h('td', e.host_id ? h('a', { href: `#/hosts/${e.host_id}` }, e.host) : h('span.muted', e.host || '—')),
          h('td', h('span.kind', e.kind)),
          h('td.msg', e.message),
          h('td', e.operation_id ? h('button.linklike', { type: 'button', onclick: (ev) => { ev.stopPropagation(); openOp(e.operation_id); } },
            `#${e.operation_id}`) : ''),
          withEngine ? h('td.nowrap', { dataset: { col: 'engine' } }, e.engine ? h('span.engine-ref', e.engine)
            : h('span.muted', { title: 'no engine named: written by the CLI, by the API (audit, logins) or before engines had names' }, '—')) : null);
        const nodes = [tr];
        if (hasDetails) {
          tr.addEventListener('click', () => { open.has(e.id) ? open.delete(e.id) : open.add(e.id); render(); });
          if (open.has(e.id)) {
            nodes.push(h('tr.details-row', h('td', { colspan: columns }, h('dl.kv-list',
              Object.entries(e.details).map(([k, v]) => [h('dt', label(k)), h('dd', typeof v === 'object' ? JSON.stringify(v) : String(v))])))));
          }
        }
        return nodes;
      }))));
  }

  async function openOp(id) {
    try { showOperation(await api.get(`/api/operations/${id}`)); } catch (err) { /* gone */ }
  }

  hostSel.addEventListener('change', () => { f.host = hostSel.value; poller.now(); });
  sevSel.addEventListener('change', () => { f.severity = sevSel.value; poller.now(); });
  limitSel.addEventListener('change', () => { f.limit = limitSel.value; poller.now(); });
  text.addEventListener('input', () => { f.text = text.value; render(); });

  loadHosts().catch(() => {});
  const hostsPoller = setInterval(() => loadHosts().catch(() => {}), 30000);
  const poller = every(5000, load);
  return { unmount() { poller.stop(); clearInterval(hostsPoller); clear(container); } };
}
