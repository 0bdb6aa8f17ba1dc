// The console's shell: login, top bar, hash router.
import { h, icon, clear, replace } from './dom.js';
import * as api from './api.js';
import { button, confirmDialog, every, formError, showError, clearErrors } from './ui.js';
import * as inventory from './pages/inventory.js';
import * as hostPage from './pages/host.js';
import * as events from './pages/events.js';
import * as enginesPage from './pages/engines.js';
import * as readinessPage from './pages/readiness.js';
import * as configPage from './pages/config.js';
import * as notifiersPage from './pages/notifiers.js';

const root = document.getElementById('app');
let main = null;
let nav = null;
let current = null;      // {unmount, guard}
let healthPoller = null; // the not-ready banner's loop, while the shell is shown
const HEALTH_MS = 5000;  // like the pages that refresh on their own
let currentHash = '';
let version = '';

const ROUTES = [
  [/^#\/hosts\/(\d+)(?:\/(general|pm|operations))?$/, (m) => [hostPage, { id: Number(m[1]), tab: m[2] || 'general' }], 'inventory'],
  [/^#\/(hosts|clusters|datacenters)$/, (m) => [inventory, { tab: m[1] }], 'inventory'],
  [/^#\/events$/, () => [events, {}], 'events'],
  [/^#\/engines$/, () => [enginesPage, {}], 'engines'],
  [/^#\/readiness$/, () => [readinessPage, {}], 'readiness'],
  [/^#\/config$/, () => [configPage, {}], 'config'],
  [/^#\/notifiers$/, () => [notifiersPage, {}], 'notifiers'],
];

function resolve(hash) {
  for (const [re, make, section] of ROUTES) {
    const m = hash.match(re);
    if (m) return { make: () => make(m), section };
  }
  return null;
}

function logo() {
  return h('span.logo', { 'aria-hidden': 'true' }, icon('power'));
}

// -- login --------------------------------------------------------------------------

function showLogin(message = null) {
  if (current) { current.unmount?.(); current = null; }
  if (healthPoller) { healthPoller.stop(); healthPoller = null; }
  main = null;
  nav = null;
  currentHash = '';
  const user = h('input', { type: 'text', name: 'username', autocomplete: 'username', required: true, autofocus: true });
  const pass = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', required: true });
  const err = formError();
  const notice = h('div.notice', { role: 'status', hidden: !message }, icon('info', 'icon-xs'), message || '');
  const submit = h('button.btn.btn-primary.btn-block', { type: 'submit' }, 'Log in');
  const form = h('form.login-card', { novalidate: true, 'aria-label': 'Log in' },
    h('div.login-brand', logo(), h('div', h('div.brand-name', 'hostpower'), h('div.muted', 'Power management & fencing'))),
    notice,
    h('div.field', { dataset: { field: 'username' } }, h('label', { for: 'login-user' }, 'User name'), user),
    h('div.field', { dataset: { field: 'password' } }, h('label', { for: 'login-pass' }, 'Password'), pass),
    err, submit);
  user.id = 'login-user';
  pass.id = 'login-pass';
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearErrors(form);
    notice.hidden = true;
    submit.disabled = true;
    try {
      await api.login(user.value.trim(), pass.value);
      pass.value = '';
      showShell();
    } catch (ex) {
      showError(form, ex);
    } finally {
      submit.disabled = false;
    }
  });
  replace(root, h('div.login-page', form, h('p.login-foot.muted', version ? `hostpower ${version}` : '')));
  user.focus();
}

// -- shell --------------------------------------------------------------------------

function navLink(href, text, section, iconName) {
  return h('a.nav-link', { href, dataset: { section } }, icon(iconName), h('span', text));
}

function showShell() {
  nav = h('nav.nav', { 'aria-label': 'Main' },
    navLink('#/hosts', 'Inventory', 'inventory', 'server'),
    navLink('#/readiness', 'Readiness', 'readiness', 'shield'),
    navLink('#/events', 'Events', 'events', 'list'),
    navLink('#/engines', 'Engines', 'engines', 'engines'),
    navLink('#/notifiers', 'Notifiers', 'notifiers', 'bell'),
    api.isAdmin() ? navLink('#/config', 'Configuration', 'config', 'settings') : null);
  const logout = button('Log out', { variant: 'ghost', class: 'logout', onclick: doLogout }, 'logout');
  const bar = h('header.topbar',
    h('a.brand', { href: '#/hosts' }, logo(), h('span.brand-name', 'hostpower')),
    nav,
    h('div.topbar-right',
      h('span.user-chip', { dataset: { role: api.session.role } }, h('span.user-name', api.session.user),
        h('span.role', api.session.role)),
      logout));
  main = h('main.main', { id: 'main' });
  const banner = h('div.health-banner', { role: 'alert', hidden: true }, icon('alert'),
    h('div.health-text',
      h('strong', 'This engine cannot renew its lease in the database: it starts no power action until it can.'),
      h('div.health-detail')));
  replace(root, h('div.shell', { class: api.isAdmin() ? 'is-admin' : 'is-viewer' }, bar, banner, main));
  if (healthPoller) healthPoller.stop();
  healthPoller = every(HEALTH_MS, () => checkHealth(banner));
  route();
}

// -- readiness ----------------------------------------------------------------------

/**
 * Show the banner while /api/health says "not ready" (the engine cannot renew
 * its lease, so it starts no power action), hide it once health is ok again.
 * When the engine cannot be reached at all, its readiness is unknown: the
 * banner stays as it was.
 */
async function checkHealth(banner) {
  const health = await api.health();
  banner.querySelector('.health-detail').textContent = health.ready ? '' : health.detail;
  banner.hidden = health.ready;
}

async function doLogout() {
  try { await api.logout(); } catch { /* the cookie is cleared anyway */ }
  showLogin('You have logged out.');
  history.replaceState(null, '', location.pathname);
}

async function route() {
  if (!main) return;
  let hash = location.hash || '#/hosts';
  if (hash === '#/' || hash === '#') hash = '#/hosts';
  const found = resolve(hash);
  if (!found) { location.replace('#/hosts'); return; }
  if (found.section === 'config' && !api.isAdmin()) { location.replace('#/hosts'); return; }
  if (current && current.guard && hash !== currentHash) {
    const why = current.guard();
    if (why) {
      const target = hash;
      history.replaceState(null, '', currentHash);
      const leave = await confirmDialog('Discard changes?', why, { confirm: 'Discard', danger: true });
      if (!leave) return;
      current.guard = null;
      location.hash = target;
      return;
    }
  }
  const [page, params] = found.make();
  const sameView = current && current.page === page && current.update;
  currentHash = hash;
  for (const a of nav.querySelectorAll('.nav-link')) {
    a.classList.toggle('active', a.dataset.section === found.section);
  }
  if (sameView && current.update(params)) return;
  if (current) current.unmount?.();
  clear(main);
  current = { page, ...(page.mount(main, params) || {}) };
  main.focus?.();
}

window.addEventListener('hashchange', route);
window.addEventListener('beforeunload', (e) => {
  if (current && current.guard && current.guard()) e.preventDefault();
});

api.setExpiredHandler(() => {
  if (!api.session.user) return;
  api.session.user = api.session.role = api.session.csrf = null;
  showLogin('Your session has ended: log in again.');
});

async function boot() {
  root.classList.remove('boot');
  try {
    const health = await fetch('/api/health').then((r) => r.json());
    version = health.version || '';
  } catch { /* shown on the login page only */ }
  try {
    const s = await api.resume();
    if (s) showShell(); else showLogin();
  } catch (err) {
    showLogin(`The engine cannot be reached (${err.message}).`);
  }
}

boot();
