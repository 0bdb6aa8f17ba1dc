// Inventory: hosts (with their status and power state), clusters, data centers.
import { h, icon, replace, clear } from '../dom.js';
import * as api from '../api.js';
import * as state from '../state.js';
import {
  button, emptyState, every, iconButton, isMenuOpen, menuButton, powerBadge, statusBadge, ago,
  toast, label,
} from '../ui.js';
import { ACTIONS, runPowerAction } from '../power.js';
import { entryLabel } from '../chain.js';

const REFRESH_MS = 5000;          // inventory (hosts, statuses)
const POWER_MS = 60000;           // power state of visible hosts, one at a time
const POWER_BATCH = 20;           // at most this many hosts per automatic round

export function mount(container, params) {
  const view = {
    tab: params.tab, data: null, loadedAt: null, filterDc: null, filterCluster: null, text: '',
    lastJson: '',
  };
  const title = h('div.page-title', h('h1', 'Inventory'),
    h('p.subtitle', 'Data centers, clusters and hosts, with their status and power state.'));
  const updated = h('span.updated.muted');
  const refreshBtn = button('Refresh', { onclick: () => poller.now(), dataset: { action: 'refresh' } }, 'refresh');
  const powerBtn = button('Check power', {
    title: 'Ask each visible host with power management for its power state',
    onclick: () => checkVisible(true), dataset: { action: 'check-power' },
  }, 'power');
  const tabs = h('div.tabs', { role: 'tablist' });
  const body = h('div.tab-body');
  container.append(h('div.page-head', title, h('div.page-actions', updated, powerBtn, refreshBtn)), tabs, body);

  const unsubscribe = state.onPower((hostId) => {
    const cell = body.querySelector(`td.power-cell[data-host-id="${hostId}"]`);
    if (cell) renderPowerCell(cell, hostId);
  });

  function setTab(tab) {
    view.tab = tab;
    view.lastJson = '';
    render();
  }

  async function load() {
    const [dcs, clusters, hosts] = await Promise.all([
      api.get('/api/datacenters'), api.get('/api/clusters'), api.get('/api/hosts')]);
    view.data = { dcs, clusters, hosts };
    view.loadedAt = new Date().toISOString();
    const json = JSON.stringify([view.tab, view.filterDc, view.filterCluster, view.text, dcs, clusters, hosts]);
    if (json !== view.lastJson && !isMenuOpen()) {
      view.lastJson = json;
      render();
    }
    updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
  }

  const poller = every(REFRESH_MS, load);

  // Power state: on demand, and every POWER_MS for the hosts on screen.
  async function checkVisible(manual = false) {
    if (!view.data || (!manual && document.hidden)) return;
    const ids = visibleHosts().filter((h2) => h2.power_management.enabled).map((h2) => h2.id);
    const due = manual ? ids : ids.filter((id) => {
      const p = state.power.get(id);
      return !p || Date.now() - new Date(p.at).getTime() > POWER_MS - 1000;
    }).slice(0, POWER_BATCH);
    if (manual && !due.length) toast('No visible host has power management enabled.', 'info');
    // Two at a time: a fence agent call can take seconds; never a burst.
    const queue = [...due];
    const worker = async () => {
      while (queue.length) {
        const id = queue.shift();
        try { await state.checkPower(id); } catch { /* shown in the cell */ }
      }
    };
    await Promise.all([worker(), worker()]);
  }
  let powerTimer = null;
  let stopped = false;
  const firstPower = setTimeout(function tick() {
    checkVisible(false).finally(() => { if (!stopped) powerTimer = setTimeout(tick, POWER_MS); });
  }, 800);

  function visibleHosts() {
    const { hosts, clusters } = view.data;
    const clusterDc = new Map(clusters.map((c) => [c.id, c.data_center.id]));
    const text = view.text.toLowerCase();
    return hosts.filter((x) => (view.filterCluster === null || x.cluster.id === view.filterCluster)
      && (view.filterDc === null || clusterDc.get(x.cluster.id) === view.filterDc)
      && (!text || x.name.toLowerCase().includes(text) || x.address.toLowerCase().includes(text)
          || x.status.includes(text)));
  }

  function render() {
    if (!view.data) return;
    const { dcs, clusters, hosts } = view.data;
    replace(tabs,
      tabLink('hosts', `Hosts`, hosts.length), tabLink('clusters', 'Clusters', clusters.length),
      tabLink('datacenters', 'Data centers', dcs.length));
    powerBtn.hidden = view.tab !== 'hosts';
    if (view.tab === 'hosts') renderHosts();
    else if (view.tab === 'clusters') renderClusters();
    else renderDcs();
  }

  function tabLink(tab, text, count) {
    return h('a.tab', { href: `#/${tab}`, role: 'tab', class: view.tab === tab ? 'active' : '',
                        'aria-selected': String(view.tab === tab) },
      text, h('span.count', String(count)));
  }

  // -- hosts ------------------------------------------------------------------------

  function renderHosts() {
    const { dcs, clusters, hosts } = view.data;
    const tree = h('aside.tree', { 'aria-label': 'Data centers and clusters' },
      treeItem('All data centers', hosts.length, view.filterDc === null && view.filterCluster === null,
        () => { view.filterDc = null; view.filterCluster = null; }, 'all'),
      dcs.map((dc) => {
        const dcClusters = clusters.filter((c) => c.data_center.id === dc.id);
        const n = hosts.filter((x) => dcClusters.some((c) => c.id === x.cluster.id)).length;
        return h('div.tree-group',
          treeItem(dc.name, n, view.filterDc === dc.id && view.filterCluster === null,
            () => { view.filterDc = dc.id; view.filterCluster = null; }, 'dc'),
          dcClusters.map((c) => treeItem(c.name, hosts.filter((x) => x.cluster.id === c.id).length,
            view.filterCluster === c.id, () => { view.filterDc = null; view.filterCluster = c.id; }, 'cluster')));
      }));
    const search = h('input.search', { type: 'search', placeholder: 'Filter by name, address or status',
                                        value: view.text, 'aria-label': 'Filter hosts' });
    search.addEventListener('input', () => {
      view.text = search.value;
      const tb = body.querySelector('tbody');
      if (tb) replace(tb, hostRows());
    });
    const table = h('table.table.hosts-table',
      h('thead', h('tr', h('th', 'Name'), h('th', 'Address'), h('th', 'Cluster'), h('th', 'Status'),
        h('th', 'Power'), h('th', 'Power management'), h('th', 'Proxy chain'),
        api.isAdmin() ? h('th.actions-col', h('span.sr-only', 'Actions')) : null)),
      h('tbody', hostRows()));
    replace(body, h('div.split', tree,
      h('section.card.flush', h('div.card-toolbar', search,
        h('span.muted.legend', 'Power is checked on demand and every minute for hosts with power management.')),
      h('div.table-wrap', table))));
  }

  function treeItem(text, count, active, select, kind) {
    return h('button.tree-item', { type: 'button', class: `${active ? 'active' : ''} kind-${kind}`,
                                   onclick: () => { select(); view.lastJson = ''; render(); } },
      h('span.tree-label', text), h('span.count', String(count)));
  }

  function hostRows() {
    const rows = visibleHosts();
    if (!rows.length) {
      return h('tr', h('td.empty-cell', { colspan: 8 }, emptyState(view.data.hosts.length
        ? 'No host matches the filter.' : 'No hosts yet. Add them with the API or `hostpower inventory load`.', 'server')));
    }
    const dcName = new Map(view.data.clusters.map((c) => [c.id, c.data_center.name]));
    return rows.map((x) => {
      const pm = x.power_management;
      const powerCell = h('td.power-cell', { dataset: { hostId: String(x.id) } });
      renderPowerCell(powerCell, x.id, pm.enabled);
      return h('tr', { dataset: { hostId: String(x.id), host: x.name } },
        h('td', h('a.host-link', { href: `#/hosts/${x.id}` }, icon('server', 'icon-sm'), x.name)),
        h('td.mono', x.address),
        h('td', h('span.muted', `${dcName.get(x.cluster.id) || ''} / `), x.cluster.name),
        h('td', statusBadge(x.status),
          x.non_operational_reason ? h('div.muted.small', label(x.non_operational_reason)) : null),
        powerCell,
        h('td', pm.enabled
          ? (pm.automatic_pm_enabled
            ? h('span.chip.on', { title: 'power management enabled; automatic fencing when non-responsive' }, 'enabled · auto')
            : h('span.chip.on', { title: 'power management enabled; automatic fencing is off' }, 'enabled · manual'))
          : h('span.chip.off', { title: 'power management disabled' }, 'disabled')),
        h('td', h('span.chain-mini', pm.effective_pm_proxies.map((e) =>
          h('span.chip.chain-chip', { class: e.implicit ? 'implicit' : '',
                                      title: `${entryLabel(e)}${e.implicit ? ' (implicit)' : ''}` },
            e.type === 'host' ? e.host : e.type)))),
        api.isAdmin() ? h('td.actions-col', menuButton('Power', Object.entries(ACTIONS).map(([k, a]) =>
          [a.verb, a.icon, () => runPowerAction(x, k, () => { poller.now(); if (k !== 'manual') state.checkPower(x.id).catch(() => {}); }),
           { danger: a.danger, action: k }]), { class: 'btn-sm', dataset: { action: 'power-menu' },
           'aria-label': `Power actions for ${x.name}` })) : null);
    });
  }

  function renderPowerCell(cell, hostId, enabled = true) {
    const p = state.power.get(hostId);
    const title = p ? `${p.message ? `${p.message} · ` : ''}${p.proxy ? `via ${p.proxy} · ` : ''}checked ${ago(p.at)}` : '';
    const check = iconButton('refresh', 'Check power state', {
      class: 'btn-xs', dataset: { action: 'check-power' },
      onclick: async (e) => {
        const b = e.currentTarget;
        b.classList.add('spinning');
        try { await state.checkPower(hostId); } catch { /* shown */ } finally { b.classList.remove('spinning'); }
      },
    });
    replace(cell, h('span.power-wrap', powerBadge(p ? p.state : null, title),
      p && p.proxy ? h('span.via', { title: `answered through proxy ${p.proxy}` }, p.proxy) : null,
      enabled === false && !p ? null : check));
  }

  // -- clusters and data centers ----------------------------------------------------------

  function renderClusters() {
    const { clusters, hosts } = view.data;
    replace(body, h('section.card.flush', h('div.table-wrap', h('table.table',
      h('thead', h('tr', h('th', 'Cluster'), h('th', 'Data center'), h('th', 'Hosts'), h('th', 'Up'),
        h('th', 'Fencing'), h('th', 'Skip when connectivity broken'), h('th', 'Skip if storage active'),
        h('th', 'Description'))),
      h('tbody', clusters.length ? clusters.map((c) => {
        const mine = hosts.filter((x) => x.cluster.id === c.id);
        const fp = c.fencing_policy;
        return h('tr', { dataset: { cluster: c.name } },
          h('td', h('a', { href: '#/hosts', onclick: () => { view.filterCluster = c.id; view.filterDc = null; } }, h('strong', c.name))),
          h('td', c.data_center.name),
          h('td', String(mine.length)),
          h('td', String(mine.filter((x) => x.status === 'up').length)),
          h('td', fp.enabled ? h('span.chip.on', 'enabled') : h('span.chip.off', 'disabled')),
          h('td', fp.skip_if_connectivity_broken.enabled
            ? `yes, above ${fp.skip_if_connectivity_broken.threshold}% unreachable` : h('span.muted', 'no')),
          h('td', fp.skip_if_sd_active.enabled ? 'yes' : h('span.muted', 'no')),
          h('td.muted', c.description || ''));
      }) : h('tr', h('td.empty-cell', { colspan: 8 }, emptyState('No clusters yet.'))))))));
  }

  function renderDcs() {
    const { dcs, clusters, hosts } = view.data;
    replace(body, h('section.card.flush', h('div.table-wrap', h('table.table',
      h('thead', h('tr', h('th', 'Data center'), h('th', 'Clusters'), h('th', 'Hosts'), h('th', 'Up'),
        h('th', 'Not responding'), h('th', 'Description'))),
      h('tbody', dcs.length ? dcs.map((dc) => {
        const cl = clusters.filter((c) => c.data_center.id === dc.id);
        const mine = hosts.filter((x) => cl.some((c) => c.id === x.cluster.id));
        return h('tr', { dataset: { datacenter: dc.name } },
          h('td', h('a', { href: '#/hosts', onclick: () => { view.filterDc = dc.id; view.filterCluster = null; } }, h('strong', dc.name))),
          h('td', cl.map((c) => h('span.chip', c.name))),
          h('td', String(mine.length)),
          h('td', String(mine.filter((x) => x.status === 'up').length)),
          h('td', String(mine.filter((x) => ['non_responsive', 'connecting'].includes(x.status)).length)),
          h('td.muted', dc.description || ''));
      }) : h('tr', h('td.empty-cell', { colspan: 6 }, emptyState('No data centers yet.'))))))));
  }

  return {
    update(p) { setTab(p.tab); return true; },
    unmount() {
      stopped = true;
      poller.stop();
      clearTimeout(firstPower);
      clearTimeout(powerTimer);
      unsubscribe();
      clear(container);
    },
  };
}
