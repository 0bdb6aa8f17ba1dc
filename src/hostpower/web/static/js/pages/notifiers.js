// Notifiers (docs/notifications.md): where events go and how delivery goes, refreshing on its own.
// Read-only but for the test message (admins); notifiers are added with the CLI or the API.
import { h, icon, replace, clear } from '../dom.js';
import * as api from '../api.js';
import { button, emptyState, every, formatTime, toast, showError } from '../ui.js';

const REFRESH_MS = 5000;   // like the engines page

function target(n) {
  if (n.webhook) return n.webhook.url;
  return `${n.smtp.recipients.join(', ')} via ${n.smtp.host}:${n.smtp.port}`;
}

function stateBadge(n) {
  if (!n.enabled) return h('span.badge.tone-muted', { dataset: { notifierState: 'disabled' } }, h('span.dot'), 'disabled');
  if (n.state.failing) {
    return h('span.badge.tone-bad', { dataset: { notifierState: 'failing' }, title: n.state.last_error },
      h('span.dot'), 'failing');
  }
  return h('span.badge.tone-ok', { dataset: { notifierState: 'ok' } }, h('span.dot'), 'ok');
}

export function mount(container) {
  const updated = h('span.updated.muted');
  const count = h('span.muted.small');
  const tableBox = h('div.table-wrap');
  container.append(
    h('div.page-head', h('div.page-title', h('h1', 'Notifiers'),
      h('p.subtitle', 'Where events are delivered (webhooks, mail), and how delivery goes. Add them with `hostpower notifier add` or the API.')),
    h('div.page-actions', updated, button('Refresh', { onclick: () => poller.now(), dataset: { action: 'refresh' } }, 'refresh'))),
    h('section.card.flush', h('div.card-toolbar', h('span.grow'), count), tableBox));

  let lastJson = '';

  async function load() {
    const notifiers = await api.get('/api/notifiers');
    const json = JSON.stringify(notifiers);
    if (json !== lastJson) { lastJson = json; render(notifiers); }
    updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
  }

  async function sendTest(n, btn) {
    btn.disabled = true;
    try {
      const r = await api.post(`/api/notifiers/${n.id}/test`);
      toast(r.delivered ? `Test message delivered by ${n.name}` : `${n.name}: not delivered: ${r.detail}`,
        r.delivered ? 'ok' : 'bad', r.delivered ? 4000 : 8000);
    } catch (err) {
      showError(container, err);
    } finally {
      btn.disabled = false;
    }
  }

  function render(notifiers) {
    const failing = notifiers.filter((n) => n.state.failing).length;
    count.textContent = `${notifiers.length} notifier${notifiers.length === 1 ? '' : 's'}${failing ? ` · ${failing} failing` : ''}`;
    if (!notifiers.length) {
      replace(tableBox, emptyState('No notifier yet: `hostpower notifier add NAME --webhook URL` or POST /api/notifiers.', 'bell'));
      return;
    }
    replace(tableBox, h('table.table.notifiers-table',
      h('thead', h('tr', h('th', 'Name'), h('th', 'State'), h('th', 'Type'), h('th', 'Events'), h('th', 'Target'),
        h('th', { title: 'The engine delivering for this notifier now' }, 'Engine'),
        h('th', 'Delivered'), h('th', { title: 'Events given up after every attempt failed' }, 'Dropped'),
        h('th', 'Last delivered'), h('th', 'Last error'), api.isAdmin() ? h('th', '') : null)),
      h('tbody', notifiers.map((n) => {
        const testBtn = api.isAdmin()
          ? button('Test', { variant: 'ghost', dataset: { action: 'test' }, onclick: (ev) => sendTest(n, ev.currentTarget) }, 'play')
          : null;
        return h('tr', { dataset: { notifier: n.name } },
          h('td', h('span.engine-name', icon('bell', 'icon-sm'), n.name)),
          h('td', stateBadge(n)),
          h('td', n.type),
          h('td', { dataset: { col: 'filter' } }, `${n.min_severity}+ · ${n.kinds.length ? n.kinds.join(', ') : 'every kind'}`),
          h('td.mono', target(n)),
          h('td', n.state.holder || '—'),
          h('td.num', { dataset: { col: 'delivered' } }, String(n.state.delivered)),
          h('td.num', { dataset: { col: 'dropped' } }, String(n.state.dropped)),
          h('td.nowrap', { title: n.state.last_delivered_at || '' }, n.state.last_delivered_at ? formatTime(n.state.last_delivered_at) : '—'),
          h('td', { dataset: { col: 'error' }, class: 'muted' }, n.state.last_error || '—'),
          testBtn ? h('td', testBtn) : null);
      }))));
  }

  const poller = every(REFRESH_MS, load);
  return { unmount() { poller.stop(); clear(container); } };
}
