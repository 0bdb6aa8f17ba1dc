// The engines sharing the database: their leases and the hosts each owns, refreshing on its own.
import { h, icon, replace, clear } from '../dom.js';
import * as api from '../api.js';
import { button, emptyState, every, engineStateBadge, formatTime } from '../ui.js';

const REFRESH_MS = 5000;   // like the inventory and the event log

export function mount(container) {
  const updated = h('span.updated.muted');
  const count = h('span.muted.small');
  const note = h('span.muted.small.legend');
  const tableBox = h('div.table-wrap');
  container.append(
    h('div.page-head', h('div.page-title', h('h1', 'Engines'),
      h('p.subtitle', 'The engines sharing this database, each with its lease; the hosts are spread over the alive ones.')),
    h('div.page-actions', updated, button('Refresh', { onclick: () => poller.now(), dataset: { action: 'refresh' } }, 'refresh'))),
    h('section.card.flush', h('div.card-toolbar', note, h('span.grow'), count), tableBox));

  let lastJson = '';

  async function load() {
    const engines = await api.get('/api/engines');
    const json = JSON.stringify(engines);
    if (json !== lastJson) { lastJson = json; render(engines); }
    updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
  }

  function render(engines) {
    const alive = engines.filter((e) => e.state === 'alive').length;
    count.textContent = `${engines.length} engine${engines.length === 1 ? '' : 's'} · ${alive} alive`;
    // No row is this engine's when it runs without a lease (API only) or has lost it: say so.
    note.textContent = `${engines.some((e) => e.self) ? '' : 'The engine serving this console holds no lease now (it runs without one, or lost it). '}`
      + 'Expired: stopped renewing its lease (crashed or cut off), its hosts went to the alive engines. Stopped: stopped cleanly.';
    if (!engines.length) {
      replace(tableBox, emptyState('No engine is registered in this database yet.', 'engines'));
      return;
    }
    replace(tableBox, h('table.table.engines-table',
      h('thead', h('tr', h('th', 'Name'), h('th', 'State'),
        h('th', { title: 'Hosts the engine monitors and treats: the alive engines share them' }, 'Hosts'),
        h('th', { title: 'Grows with each start of the name, and when the engine comes back after its lease expired' }, 'Generation'),
        h('th', 'Address'), h('th', 'Started'), h('th', 'Last renewal'), h('th', 'Lease expires'))),
      h('tbody', engines.map((e) => h('tr', { dataset: { engine: e.name, state: e.state }, class: e.self ? 'self' : '' },
        h('td', h('span.engine-name', icon('engines', 'icon-sm'), e.name),
          e.self ? h('span.chip.self-tag', { title: 'the engine serving this console' }, 'this engine') : null),
        h('td', engineStateBadge(e.state)),
        h('td.num', { dataset: { col: 'hosts' } }, String(e.hosts)),
        h('td.num', { dataset: { col: 'generation' } }, String(e.generation)),
        h('td.mono', e.address),
        h('td.nowrap', { title: e.started_at }, formatTime(e.started_at)),
        h('td.nowrap', { title: e.renewed_at }, formatTime(e.renewed_at)),
        // Not alive: the lease is over (ended at the stop, or ran out); its end is shown muted.
        h('td.nowrap', { title: e.lease_expires_at, class: e.state === 'alive' ? '' : 'muted' },
          formatTime(e.lease_expires_at)))))));
  }

  const poller = every(REFRESH_MS, load);
  return { unmount() { poller.stop(); clear(container); } };
}
