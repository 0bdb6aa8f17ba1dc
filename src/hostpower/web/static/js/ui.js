// Shared widgets: dialogs, toasts, badges, field errors, polling.
import { h, icon, clear, append } from './dom.js';

// -- formatting -------------------------------------------------------------------

export function label(text) {
  return String(text ?? '').replace(/_/g, ' ');
}

export function formatTime(iso, withDate = true) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  if (!withDate) return time;
  const today = new Date();
  if (d.toDateString() === today.toDateString()) return time;
  return `${d.toLocaleDateString([], { year: 'numeric', month: 'short', day: 'numeric' })} ${time}`;
}

export function ago(iso) {
  const s = Math.max(0, Math.round((Date.now() - new Date(iso).getTime()) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

// -- badges -------------------------------------------------------------------------

const STATUS_TONE = {
  up: 'ok', connecting: 'warn', non_responsive: 'bad', maintenance: 'muted', down: 'bad',
  reboot: 'info', non_operational: 'warn', installing: 'info', kdumping: 'warn',
};

export function statusBadge(status) {
  return h('span.badge', { class: `tone-${STATUS_TONE[status] || 'muted'}`, dataset: { status } },
    h('span.dot'), label(status));
}

// Engines speak the hosts' visual language: alive is good, expired (it stopped
// renewing its lease: crashed or cut off) is bad, stopped (cleanly) is neutral.
const ENGINE_TONE = { alive: 'ok', expired: 'bad', stopped: 'muted' };

export function engineStateBadge(state) {
  return h('span.badge', { class: `tone-${ENGINE_TONE[state] || 'muted'}`, dataset: { engineState: state } },
    h('span.dot'), label(state));
}

// Fencing readiness (the PM health check): ready is good, a single path is a
// warning (one failure away from unfenceable), unfenceable is bad.
const READINESS_TONE = { ready: 'ok', single_path: 'warn', unfenceable: 'bad', unknown: 'muted' };

export function readinessBadge(readiness, text = null) {
  return h('span.badge', { class: `tone-${READINESS_TONE[readiness] || 'muted'}`, dataset: { readinessState: readiness } },
    h('span.dot'), text || label(readiness));
}

const POWER_TONE = { on: 'ok', off: 'muted-strong', unknown: 'warn', error: 'bad' };

export function powerBadge(state, title) {
  if (!state) return h('span.badge.tone-none', { title: title || 'not checked yet' }, '—');
  return h('span.badge', { class: `tone-${POWER_TONE[state] || 'muted'}`, title: title || '',
                           dataset: { power: state } },
    icon('power', 'icon-xs'), state);
}

const SEVERITY_TONE = { info: 'info', warning: 'warn', error: 'bad' };

export function severityBadge(sev) {
  return h('span.badge.sev', { class: `tone-${SEVERITY_TONE[sev] || 'muted'}`, dataset: { severity: sev } },
    icon(sev === 'info' ? 'info' : 'alert', 'icon-xs'), sev);
}

export function outcomeBadge(outcome, state) {
  if (state === 'running') return h('span.badge.tone-info', h('span.spinner'), 'running');
  if (!outcome) return h('span.badge.tone-muted', state || '—');
  const tone = { on: 'ok', off: 'muted-strong', succeeded: 'ok', done: 'ok', failed: 'bad',
                 error: 'bad', unknown: 'warn', skipped: 'muted' }[outcome] || 'muted';
  return h('span.badge', { class: `tone-${tone}` }, label(outcome));
}

// -- buttons ------------------------------------------------------------------------

export function button(text, attrs = {}, iconName = null) {
  const { variant = 'secondary', ...rest } = attrs;
  return h('button.btn', { type: 'button', class: `btn-${variant}`, ...rest },
    iconName ? icon(iconName) : null, text ? h('span', text) : null);
}

export function iconButton(iconName, title, attrs = {}) {
  return h('button.btn.btn-icon', { type: 'button', title, 'aria-label': title, ...attrs },
    icon(iconName));
}

// -- toasts -------------------------------------------------------------------------

let toastBox = null;

export function toast(message, tone = 'ok', ms = 4000) {
  if (!toastBox) {
    toastBox = h('div.toasts', { role: 'status', 'aria-live': 'polite' });
    document.body.append(toastBox);
  }
  const t = h('div.toast', { class: `tone-${tone}` },
    icon(tone === 'ok' ? 'check' : tone === 'info' ? 'info' : 'alert'), h('span', message));
  toastBox.append(t);
  setTimeout(() => { t.classList.add('leaving'); setTimeout(() => t.remove(), 300); }, ms);
}

// -- dialogs ------------------------------------------------------------------------

/**
 * A modal dialog. Returns {el, body, footer, close, done} where done is a
 * promise resolved with the value given to close().
 */
export function dialog(title, { wide = false, onClose = null } = {}) {
  let resolve;
  const done = new Promise((r) => { resolve = r; });
  const body = h('div.dialog-body');
  const footer = h('div.dialog-footer');
  const closeBtn = h('button.btn.btn-icon.dialog-x', { type: 'button', 'aria-label': 'Close' }, icon('x'));
  const el = h('dialog.dialog', { class: wide ? 'wide' : '', 'aria-label': title },
    h('div.dialog-head', h('h2', title), closeBtn), body, footer);
  let closed = false;
  const close = (value) => {
    if (closed) return;
    closed = true;
    if (onClose) onClose(value);
    el.close();
    el.remove();
    resolve(value);
  };
  closeBtn.addEventListener('click', () => close(undefined));
  el.addEventListener('cancel', (e) => { e.preventDefault(); close(undefined); });
  document.body.append(el);
  el.showModal();
  return { el, body, footer, close, done };
}

/** Ask before acting. Resolves true when confirmed. */
export function confirmDialog(title, message, { confirm = 'Confirm', danger = false, details = null } = {}) {
  const d = dialog(title);
  append(d.body, h('p.confirm-text', message), details);
  const ok = button(confirm, { variant: danger ? 'danger' : 'primary', onclick: () => d.close(true),
                                dataset: { role: 'confirm' } });
  append(d.footer, button('Cancel', { onclick: () => d.close(false) }), ok);
  ok.focus();
  return d.done.then((v) => v === true);
}

// -- forms and field errors --------------------------------------------------------------

/** A labelled form row whose error slot is found by data-field. */
export function field(name, labelText, control, hint = null) {
  const id = control.id || `f-${name.replace(/[^a-z0-9]/gi, '-')}-${Math.random().toString(36).slice(2, 7)}`;
  control.id = id;
  if (!control.name) control.name = name;
  return h('div.field', { dataset: { field: name } },
    h('label', { for: id }, labelText),
    control,
    hint ? h('div.hint', hint) : null,
    h('div.field-error', { role: 'alert', 'aria-live': 'polite' }));
}

export function checkbox(name, labelText, checked, attrs = {}) {
  const input = h('input', { type: 'checkbox', name, checked, ...attrs });
  return h('label.check', { dataset: { field: name } }, input, h('span', labelText));
}

/** Candidate data-field names for a server field path, best first. */
export function fieldCandidates(path) {
  const parts = String(path || '').split('.').filter(Boolean);
  const out = [];
  for (let start = 0; start < parts.length; start++) {
    for (let end = parts.length; end > start; end--) {
      const name = parts.slice(start, end).join('.');
      if (!out.includes(name)) out.push(name);
    }
  }
  return out;
}

export function clearErrors(root) {
  root.querySelectorAll('.has-error').forEach((el) => el.classList.remove('has-error'));
  root.querySelectorAll('.field-error, .form-error').forEach((el) => { clear(el); el.hidden = true; });
}

/**
 * Show the server's message next to the field it names (a dotted path such
 * as "pm_proxies.0.type" or "power_management.pm_proxies"); else in the
 * form's general error area.
 */
export function showError(root, err, fallbackField = null) {
  const message = err && err.message ? err.message : String(err);
  let target = null;
  const names = fieldCandidates(err && err.field);
  if (fallbackField) names.push(fallbackField);
  for (const name of names) {
    target = root.querySelector(`[data-field="${CSS.escape(name)}"]`);
    if (target) break;
  }
  if (target) {
    target.classList.add('has-error');
    let slot = target.querySelector(':scope > .field-error');
    if (!slot) {
      slot = h('div.field-error', { role: 'alert' });
      target.append(slot);
    }
    slot.hidden = false;
    replace(slot, icon('alert', 'icon-xs'), message);
    const control = target.querySelector('input, select, textarea, button');
    if (control && control.focus) control.focus({ preventScroll: false });
    return target;
  }
  const area = root.querySelector('.form-error');
  if (area) {
    area.hidden = false;
    replace(area, icon('alert', 'icon-xs'), message);
    return area;
  }
  toast(message, 'bad', 6000);
  return null;
}

function replace(el, ...children) {
  clear(el);
  append(el, children);
}

export function formError() {
  return h('div.form-error', { role: 'alert', hidden: true });
}

// -- polling ----------------------------------------------------------------------------

/**
 * Run fn now and then every ms after it finishes (never overlapping); paused
 * while the browser tab is hidden. Returns {stop, now}.
 */
export function every(ms, fn) {
  let timer = null;
  let stopped = false;
  let running = false;
  const run = async () => {
    if (stopped) return;
    clearTimeout(timer);
    if (document.hidden) { timer = setTimeout(run, ms); return; }
    if (running) return;
    running = true;
    try { await fn(); } catch (err) { console.warn(err); }
    running = false;
    if (!stopped) timer = setTimeout(run, ms);
  };
  const onVisible = () => { if (!document.hidden) run(); };
  document.addEventListener('visibilitychange', onVisible);
  run();
  return {
    stop() { stopped = true; clearTimeout(timer); document.removeEventListener('visibilitychange', onVisible); },
    now: run,
  };
}

export function emptyState(text, iconName = 'info') {
  return h('div.empty', icon(iconName), h('p', text));
}

export function spinner() {
  return h('span.spinner', { 'aria-label': 'loading' });
}

// -- drop-down menu -----------------------------------------------------------------------

let openMenu = null;

function closeOpenMenu() {
  if (openMenu) { openMenu.remove(); openMenu = null; }
}

document.addEventListener('click', (e) => {
  if (openMenu && !openMenu.contains(e.target)) closeOpenMenu();
});
document.addEventListener('keydown', (e) => { if (e.key === 'Escape') closeOpenMenu(); });

export function isMenuOpen() {
  return openMenu !== null;
}

/** A button opening a menu of [text, iconName, onSelect, {danger}] items. */
export function menuButton(text, items, attrs = {}) {
  const btn = button(text, { variant: 'secondary', 'aria-haspopup': 'menu', ...attrs }, 'power');
  btn.append(icon('chevron', 'icon-xs chevron-down'));
  btn.addEventListener('click', (e) => {
    e.stopPropagation();
    if (openMenu && openMenu.dataset.owner === btn.dataset.menuId) { closeOpenMenu(); return; }
    closeOpenMenu();
    btn.dataset.menuId = btn.dataset.menuId || Math.random().toString(36).slice(2);
    const m = h('div.menu', { role: 'menu', dataset: { owner: btn.dataset.menuId } },
      items.filter(Boolean).map(([t, ic, fn, opts = {}]) => h('button.menu-item', {
        type: 'button', role: 'menuitem', class: opts.danger ? 'danger' : '', dataset: { action: opts.action || '' },
        onclick: (ev) => { ev.stopPropagation(); closeOpenMenu(); fn(); },
      }, icon(ic), h('span', t))));
    document.body.append(m);
    const r = btn.getBoundingClientRect();
    const width = 210;
    m.style.top = `${window.scrollY + r.bottom + 4}px`;
    m.style.left = `${Math.max(8, window.scrollX + r.right - width)}px`;
    m.style.width = `${width}px`;
    openMenu = m;
    m.querySelector('button')?.focus();
  });
  return btn;
}
