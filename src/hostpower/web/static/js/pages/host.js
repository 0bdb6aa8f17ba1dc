// One host: header with status, power state and power actions; tabs General,
// Power Management, Operations.
import { h, icon, replace, clear } from '../dom.js';
import * as api from '../api.js';
import * as state from '../state.js';
import {
  button, emptyState, every, formatTime, iconButton, label, powerBadge, severityBadge, statusBadge, ago,
  outcomeBadge,
} from '../ui.js';
import { ACTIONS, runPowerAction, showOperation } from '../power.js';
import { mountPm } from './pm.js';

export function mount(container, params) {
  const view = { id: params.id, tab: params.tab, host: null, cluster: null, tabApi: null };
  const head = h('div.host-head');
  const tabs = h('div.tabs', { role: 'tablist' });
  const body = h('div.tab-body');
  container.append(head, tabs, body);

  const unsubscribe = state.onPower((hostId) => { if (hostId === view.id) renderHead(); });

  async function load() {
    try {
      view.host = await api.get(`/api/hosts/${view.id}`);
    } catch (err) {
      if (err.status === 404) {
        replace(container, emptyState(`Host ${view.id} does not exist (any more).`, 'alert'),
          h('p.center', h('a', { href: '#/hosts' }, 'Back to the inventory')));
        poller.stop();
        return;
      }
      throw err;
    }
    if (!view.cluster || view.cluster.id !== view.host.cluster.id) {
      view.cluster = await api.get(`/api/clusters/${view.host.cluster.id}`);
    }
    renderHead();
    if (!view.tabApi) renderTab();
    else view.tabApi.refresh?.(view.host);
  }

  const poller = every(5000, load);
  // The power state once on opening (then on demand).
  if (!state.power.has(view.id)) {
    setTimeout(() => {
      if (view.host && view.host.power_management.enabled) state.checkPower(view.id).catch(() => {});
    }, 600);
  }

  function renderHead() {
    const x = view.host;
    if (!x) return;
    const p = state.power.get(x.id);
    const actions = api.isAdmin()
      ? h('div.btn-group.power-actions', { role: 'group', 'aria-label': 'Power actions' },
        Object.entries(ACTIONS).map(([k, a]) => button(a.verb, {
          variant: a.danger ? 'secondary-danger' : 'secondary', dataset: { action: k },
          onclick: () => runPowerAction(x, k, () => { poller.now(); if (k !== 'manual') refreshPower(); }),
        }, a.icon)))
      : null;
    replace(head,
      h('nav.crumbs', { 'aria-label': 'Breadcrumb' },
        h('a', { href: '#/hosts' }, 'Inventory'), icon('chevron', 'icon-xs'),
        h('span', view.cluster ? view.cluster.data_center.name : ''), icon('chevron', 'icon-xs'),
        h('span', x.cluster.name), icon('chevron', 'icon-xs'), h('span.current', x.name)),
      h('div.host-title-row',
        h('div.host-title',
          h('div.host-icon', icon('server')),
          h('div', h('h1', x.name), h('div.muted.mono', `${x.address}:${x.port}`))),
        h('div.host-badges',
          h('div.kv', h('span.k', 'Status'), statusBadge(x.status)),
          h('div.kv', h('span.k', 'Power'), h('span.power-wrap', powerBadge(p ? p.state : null,
            p ? `checked ${ago(p.at)}` : ''), p && p.proxy ? h('span.muted.small', `via ${p.proxy}`) : null,
          iconButton('refresh', 'Check power state', { class: 'btn-xs', dataset: { action: 'check-power' },
                                                       onclick: refreshPower }))))),
      actions);
  }

  async function refreshPower() {
    try { await state.checkPower(view.id); } catch { /* shown in the badge */ }
  }

  function renderTabs() {
    const t = (key, text) => h('a.tab', { href: `#/hosts/${view.id}/${key}`, role: 'tab',
      class: view.tab === key ? 'active' : '', 'aria-selected': String(view.tab === key),
      dataset: { tab: key } }, text);
    replace(tabs, t('general', 'General'), t('pm', 'Power Management'), t('operations', 'Operations'));
  }

  function renderTab() {
    renderTabs();
    if (view.tabApi) view.tabApi.unmount?.();
    clear(body);
    if (view.tab === 'pm') view.tabApi = mountPm(body, view.host, { onSaved: () => poller.now() });
    else if (view.tab === 'operations') view.tabApi = mountOperations(body, view.host);
    else view.tabApi = mountGeneral(body, view.host, view);
  }

  return {
    update(p) {
      if (p.id !== view.id) return false;
      view.tab = p.tab;
      if (view.host) renderTab();
      return true;
    },
    guard() { return view.tabApi?.guard?.() || null; },
    unmount() { poller.stop(); unsubscribe(); view.tabApi?.unmount?.(); clear(container); },
  };
}

// -- General -------------------------------------------------------------------------------

function mountGeneral(body, host, view) {
  const details = h('section.card');
  const eventsCard = h('section.card.flush');
  body.append(h('div.grid-2', details, eventsCard));

  function renderDetails(x) {
    const pm = x.power_management;
    replace(details, h('h2.card-title', 'Details'), h('dl.details',
      dt('Name', x.name), dt('Address', h('span.mono', x.address)), dt('Host agent port', String(x.port)),
      dt('Data center', view.cluster ? view.cluster.data_center.name : ''), dt('Cluster', x.cluster.name),
      dt('Status', statusBadge(x.status)),
      x.non_operational_reason ? dt('Non-operational reason', label(x.non_operational_reason)) : null,
      dt('Power management', pm.enabled ? 'enabled' : 'disabled'),
      dt('Automatic fencing', pm.automatic_pm_enabled ? 'on' : 'off'),
      dt('Kdump detection', pm.kdump_detection ? 'on' : 'off'),
      dt('Proxy chain', h('span.chain-mini', pm.effective_pm_proxies.map((e) =>
        h('span.chip.chain-chip', { class: e.implicit ? 'implicit' : '' }, e.type === 'host' ? e.host : e.type))))));
  }

  async function loadEvents() {
    const list = await api.get(`/api/events${api.qs({ host: host.id, limit: 12 })}`);
    replace(eventsCard, h('div.card-head', h('h2.card-title', 'Recent events'),
      h('a.small', { href: '#/events' }, 'All events')),
    list.length ? h('ul.event-list', list.reverse().map((e) => h('li',
      severityBadge(e.severity), h('span.ev-msg', e.message), h('span.muted.small', formatTime(e.time)))))
      : emptyState('No events for this host yet.'));
  }

  renderDetails(host);
  const poller = every(5000, loadEvents);
  return {
    refresh(x) { renderDetails(x); },
    unmount() { poller.stop(); },
  };
}

function dt(k, v) {
  return [h('dt', k), h('dd', v)];
}

// -- Operations -------------------------------------------------------------------------------

function mountOperations(body, host) {
  const card = h('section.card.flush');
  body.append(card);
  let last = '';
  async function load() {
    const ops = await api.get(`/api/operations${api.qs({ host: host.id, limit: 50 })}`);
    const json = JSON.stringify(ops);
    if (json === last) return;
    last = json;
    replace(card, h('div.card-head', h('h2.card-title', 'Power operations'),
      h('span.muted.small', 'Most recent first; click one for its steps and proxies.')),
    ops.length ? h('table.table',
      h('thead', h('tr', h('th', '#'), h('th', 'Action'), h('th', 'Result'), h('th', 'Requested by'),
        h('th', 'Started'), h('th', 'Finished'), h('th', 'Proxies used'), h('th', 'Message'))),
      h('tbody', ops.map((op) => {
        const proxies = [...new Set(op.steps.flatMap((s) => (s.proxies || []).map((p) => p.proxy)).filter(Boolean))];
        return h('tr.clickable', { dataset: { operation: String(op.id) }, tabindex: '0',
                                   onclick: () => showOperation(op), onkeydown: (e) => { if (e.key === 'Enter') showOperation(op); } },
          h('td', String(op.id)), h('td', label(op.action)), h('td', outcomeBadge(op.state === 'running' ? null : op.state, op.state)),
          h('td', op.requested_by || op.origin), h('td', formatTime(op.created_at)), h('td', formatTime(op.finished_at)),
          h('td', proxies.map((p) => h('span.proxy-chip', icon('link', 'icon-xs'), p))),
          h('td.muted', op.message));
      })))
      : emptyState('No power operation has run on this host yet.'));
  }
  const poller = every(4000, load);
  return { unmount() { poller.stop(); } };
}

