// Power actions (status, start, stop, restart, manual): confirmation, then the
// operation's steps and the proxy of each step, live.
import { h, icon, replace } from './dom.js';
import * as api from './api.js';
import {
  button, confirmDialog, dialog, formatTime, label, outcomeBadge, powerBadge, toast,
} from './ui.js';

export const ACTIONS = {
  status: {
    title: 'Check power status', verb: 'Check status', icon: 'refresh', danger: false,
    text: (n) => `Ask the fence agents of ${n} for its power state, through its proxy chain?`,
  },
  start: {
    title: 'Start host', verb: 'Start', icon: 'play', danger: false,
    text: (n) => `Power on ${n}? The engine switches the host on and waits until it reports on.`,
  },
  stop: {
    title: 'Stop host', verb: 'Stop', icon: 'stop', danger: true,
    text: (n) => `Power off ${n}? Everything running on it stops at once.`,
  },
  restart: {
    title: 'Restart host', verb: 'Restart', icon: 'power', danger: true,
    text: (n) => `Restart ${n}? The engine powers it off, verifies it is off, powers it on and verifies it is on.`,
  },
  manual: {
    title: 'Confirm host has been rebooted', verb: 'Confirm reboot', icon: 'check', danger: true,
    text: (n) => `Confirm that ${n} has been rebooted or powered off by hand? Its state is ` +
      'cleared and its workloads may be restarted elsewhere. Only confirm after checking the host yourself.',
  },
};

const STEP_LABELS = {
  check: 'Check power', stop: 'Stop', start: 'Start', verify_off: 'Verify off',
  verify_on: 'Verify on', status: 'Status',
};

/** Ask, run, and show. Calls onChange() when something may have changed. */
export async function runPowerAction(host, action, onChange = () => {}) {
  const a = ACTIONS[action];
  const ok = await confirmDialog(a.title, a.text(host.name), { confirm: a.verb, danger: a.danger });
  if (!ok) return null;
  try {
    const res = await api.post(`/api/hosts/${host.id}/fence`, { fence_type: action });
    if (action === 'status') {
      showStatusResult(host, res);
    } else if (action === 'manual') {
      toast(`${host.name}: ${res.detail || 'host state cleared'}`);
    } else {
      showOperation(res, onChange);
    }
    onChange(res);
    return res;
  } catch (err) {
    toast(`${a.verb} ${host.name}: ${err.message}`, 'bad', 8000);
    return null;
  }
}

// -- status results ---------------------------------------------------------------

export function commandsTable(commands) {
  if (!commands || !commands.length) return null;
  return h('table.table.compact.commands',
    h('thead', h('tr', h('th', 'Agent'), h('th', 'Action'), h('th', 'Result'), h('th', 'Proxy'),
      h('th', 'Attempts'))),
    h('tbody', commands.map((c) => h('tr',
      h('td', c.agent), h('td', c.action), h('td', outcomeBadge(c.outcome)),
      h('td', c.proxy ? h('span.proxy-chip', { dataset: { proxy: c.proxy } }, icon('link', 'icon-xs'), c.proxy)
                      : h('span.muted', 'none')),
      h('td', attemptsList(c.attempts, c.message))))));
}

function attemptsList(attempts, fallback) {
  if (!attempts || !attempts.length) return h('span.muted', fallback || '');
  return h('ol.attempts', attempts.map((t) => h('li', { class: t.outcome === 'error' || t.outcome === 'failed' ? 'failed' : '' },
    h('strong', t.proxy || '?'), t.source ? h('span.muted', ` (${label(t.source)})`) : null,
    ': ', t.outcome || '', t.message ? h('span.muted', ` — ${t.message}`) : null,
    t.duration !== undefined ? h('span.muted', ` · ${Number(t.duration).toFixed(2)} s`) : null)));
}

export function statusSummary(res) {
  return h('div.status-result', { dataset: { power: res.power_state, proxy: res.proxy || '' } },
    h('div.status-line',
      h('span.muted', 'Power'), powerBadge(res.power_state),
      res.proxy ? [h('span.muted', 'answered by proxy'),
                   h('span.proxy-chip.strong', { dataset: { answeredBy: res.proxy } }, icon('link', 'icon-xs'), res.proxy)]
                : h('span.muted', 'no proxy answered')),
    res.message ? h('p.muted', res.message) : null,
    commandsTable(res.commands));
}

function showStatusResult(host, res) {
  const d = dialog(`Power status of ${host.name}`, { wide: true });
  d.body.append(statusSummary(res));
  d.footer.append(button('Close', { variant: 'primary', onclick: () => d.close() }));
}

// -- operations -----------------------------------------------------------------------

function stepProxies(step) {
  const names = [...new Set((step.proxies || []).map((p) => p.proxy).filter(Boolean))];
  return names;
}

export function operationView(op) {
  const stateTone = { running: 'info', succeeded: 'ok', failed: 'bad' }[op.state] || 'muted';
  return h('div.operation', { dataset: { state: op.state, operation: op.id } },
    h('div.op-head',
      h('div.op-title',
        h('span.op-action', label(op.action)), ' of ', h('strong', op.host.name),
        h('span.muted', ` · operation #${op.id} · by ${op.requested_by || op.origin}`)),
      h('span.badge.op-state', { class: `tone-${stateTone}` },
        op.state === 'running' ? h('span.spinner') : null, op.state === 'running' ? label(op.phase) : op.state)),
    op.message ? h('p.op-message', op.message) : null,
    h('ol.steps', op.steps.length ? op.steps.map((s) => {
      const proxies = stepProxies(s);
      return h('li.step', { class: `step-${s.state}`, dataset: { step: s.name } },
        h('div.step-row',
          h('span.step-name', STEP_LABELS[s.name] || label(s.name)),
          outcomeBadge(s.outcome, s.state),
          h('span.step-proxy', proxies.length
            ? [h('span.muted', 'via '), proxies.map((p) => h('span.proxy-chip', { dataset: { proxy: p } }, icon('link', 'icon-xs'), p))]
            : h('span.muted', s.state === 'running' ? 'choosing a proxy…' : 'no proxy')),
          h('span.step-time.muted', formatTime(s.started_at, false))),
        s.message ? h('div.step-message.muted', s.message) : null,
        (s.proxies || []).some((p) => (p.attempts || []).length > 1 || p.outcome === 'error')
          ? commandsTable(s.proxies) : null);
    }) : h('li.step.muted', 'starting…')));
}

/** A dialog following an operation until it finishes. */
export function showOperation(op, onChange = () => {}) {
  const d = dialog(`${label(op.action)} ${op.host.name}`.replace(/^./, (c) => c.toUpperCase()), { wide: true });
  const holder = h('div.op-holder');
  d.body.append(holder);
  d.footer.append(button('Close', { variant: 'primary', onclick: () => d.close() }));
  replace(holder, operationView(op));
  let stopped = false;
  const wasRunning = op.state === 'running';
  d.done.then(() => { stopped = true; });
  const poll = async () => {
    if (stopped) return;
    try {
      const cur = await api.get(`/api/operations/${op.id}`);
      replace(holder, operationView(cur));
      if (cur.state !== 'running') {
        onChange(cur);
        if (!wasRunning) return;
        if (cur.state === 'succeeded') toast(cur.message || `${label(cur.action)} of ${cur.host.name} succeeded`);
        else toast(cur.message || `${label(cur.action)} of ${cur.host.name} failed`, 'bad', 8000);
        return;
      }
    } catch (err) {
      if (err.status === 401) return;
    }
    setTimeout(poll, 600);
  };
  setTimeout(poll, 250);
  return d;
}

