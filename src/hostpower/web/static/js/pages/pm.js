// A host's Power Management tab: PM switches, fence agents (add, edit, remove,
// reorder, concurrent groups), the proxy preference list with Up/Down, Add and
// Remove as the original design describes it, the effective chain beside it,
// and the Test button.
import { h, icon, replace, clear } from '../dom.js';
import * as api from '../api.js';
import * as state from '../state.js';
import {
  button, checkbox, clearErrors, confirmDialog, dialog, emptyState, field, formError,
  iconButton, showError, spinner, toast,
} from '../ui.js';
import { SOURCE_HINTS, SOURCE_LABELS, effectiveChain, entryKey, entryLabel } from '../chain.js';
import { statusSummary } from '../power.js';

const KEYWORDS = ['cluster', 'dc', 'other_dc', 'engine'];

function pmOf(host) {
  const pm = host.power_management;
  return {
    enabled: pm.enabled, automatic_pm_enabled: pm.automatic_pm_enabled, kdump_detection: pm.kdump_detection,
    pm_proxies: pm.pm_proxies.map((p) => ({ type: p.type, host: p.type === 'host' ? p.host : null })),
  };
}

export function mountPm(body, host, { onSaved = () => {} } = {}) {
  const admin = api.isAdmin();
  const view = {
    host, saved: pmOf(host), effective: host.power_management.effective_pm_proxies,
    draft: pmOf(host), agents: null, hosts: [], clusters: [], config: null, selected: null,
    addSource: null, addHost: null,   // the Add controls keep their choice across re-renders
  };
  const isDirty = () => JSON.stringify(view.draft) !== JSON.stringify(view.saved);

  // -- layout -------------------------------------------------------------------------------
  const settingsCard = h('section.card.pm-settings');
  const agentsCard = h('section.card.flush.agents-card');
  const chainCard = h('section.card.chain-card');
  const saveBar = h('div.savebar');
  const root = h('form.pm-tab', { novalidate: true, onsubmit: (e) => { e.preventDefault(); save(); } },
    settingsCard, agentsCard, chainCard, admin ? saveBar : null);
  body.append(root);

  // -- data --------------------------------------------------------------------------------
  async function loadAll() {
    const [agents, hosts, clusters, config] = await Promise.all([
      api.get(`/api/hosts/${host.id}/fenceagents`), api.get('/api/hosts'), api.get('/api/clusters'),
      state.config(0)]);
    view.agents = agents;
    view.hosts = hosts;
    view.clusters = clusters;
    view.config = config;
    renderAll();
    root.dataset.loaded = 'true';
  }

  async function loadAgents() {
    view.agents = await api.get(`/api/hosts/${host.id}/fenceagents`);
    renderAgents();
    renderChain();
  }

  function renderAll() {
    renderSettings();
    renderChain();
    renderAgents();
    renderSaveBar();
  }

  function changed() {
    renderSaveBar();
    renderChain();
  }

  // -- PM switches ------------------------------------------------------------------------------
  function renderSettings() {
    const box = (name, text, hint) => {
      const c = checkbox(name, text, view.draft[name], { disabled: !admin });
      c.querySelector('input').addEventListener('change', (e) => {
        view.draft[name] = e.target.checked;
        changed();
      });
      return h('div.switch-row', c, h('div.hint', hint));
    };
    replace(settingsCard, h('h2.card-title', 'Power management'),
      h('div.switches',
        box('enabled', 'Enable power management', 'The engine may run power operations on this host.'),
        box('automatic_pm_enabled', 'Automatic power management',
          'Fence this host automatically when it stops responding.'),
        box('kdump_detection', 'Kdump integration', 'Wait for a kernel crash dump to finish before fencing.')),
      h('div.form-error', { hidden: true }));
  }

  // -- proxy preferences ----------------------------------------------------------------------
  function hostChoices() {
    const taken = new Set(view.draft.pm_proxies.filter((p) => p.type === 'host').map((p) => p.host.toLowerCase()));
    const byCluster = new Map();
    for (const x of view.hosts) {
      if (x.id === host.id) continue;                       // never the host itself
      if (taken.has(x.name.toLowerCase()) || taken.has(x.address.toLowerCase())) continue;
      const c = view.clusters.find((cl) => cl.id === x.cluster.id);
      const group = c ? `${c.data_center.name} / ${c.name}` : x.cluster.name;
      if (!byCluster.has(group)) byCluster.set(group, []);
      byCluster.get(group).push(x);
    }
    return byCluster;
  }

  function renderChain() {
    const list = view.draft.pm_proxies;
    const rows = list.map((p, i) => h('li.proxy-row', {
      dataset: { field: `pm_proxies.${i}`, index: String(i), entry: entryKey(p) },
      class: view.selected === i ? 'selected' : '',
    },
    h('span.pos', String(i + 1)),
    h('span.proxy-icon', { class: `src-${p.type}` }, icon(p.type === 'engine' ? 'settings' : p.type === 'host' ? 'server' : 'link')),
    h('span.proxy-text', h('span.proxy-label', entryLabel(p)), h('span.proxy-hint', p.type === 'host' ? 'specific host' : SOURCE_HINTS[p.type])),
    admin ? h('span.row-actions',
      iconButton('up', `Move ${entryLabel(p)} up`, { class: 'btn-xs', disabled: i === 0, dataset: { action: 'up' },
                                                     onclick: () => move(i, -1) }),
      iconButton('down', `Move ${entryLabel(p)} down`, { class: 'btn-xs', disabled: i === list.length - 1,
                                                         dataset: { action: 'down' }, onclick: () => move(i, 1) }),
      iconButton('trash', `Remove ${entryLabel(p)}`, { class: 'btn-xs danger', dataset: { action: 'remove' },
                                                       onclick: () => removeEntry(i) })) : null,
    h('div.field-error', { hidden: true })));

    const cfg = view.config || {};
    const defaultText = cfg.FenceProxyDefaultPreferences?.value ?? 'cluster,dc';
    const implicitText = cfg.FenceProxyImplicitPreferences?.value ?? 'engine,cluster,dc';
    const dirty = isDirty();
    const effective = dirty ? effectiveChain(list, defaultText, implicitText) : view.effective;

    replace(chainCard,
      h('div.card-head', h('h2.card-title', 'Proxy preferences'),
        h('span.muted.small', 'The engine runs this host\u2019s fence agents through the first proxy of this list that can; the order is the priority.')),
      h('div.chain-grid',
        h('div.chain-own', { dataset: { field: 'pm_proxies' } },
          h('h3', 'Preference list'),
          list.length
            ? h('ol.proxy-list', { 'aria-label': 'Proxy preference list' }, rows)
            : h('div.proxy-empty', icon('info'), h('div',
              h('strong', 'No list of its own.'),
              ` The default (FenceProxyDefaultPreferences = ${defaultText || 'none'}) applies.`)),
          admin ? addControls() : null,
          h('div.field-error', { hidden: true })),
        h('div.chain-arrow', icon('chevron')),
        h('div.chain-effective',
          h('h3', 'Effective chain', dirty ? h('span.chip.preview', 'preview, not saved') : null),
          h('ol.effective-list', { 'aria-label': 'Effective proxy chain' },
            effective.map((e, i) => h('li', { class: e.implicit ? 'implicit' : '', dataset: { entry: entryKey(e), implicit: String(e.implicit) } },
              h('span.pos', String(i + 1)), h('span.proxy-label', entryLabel(e)),
              e.implicit ? h('span.chip.implicit-tag', { title: list.length
                ? `appended by FenceProxyImplicitPreferences (${implicitText || 'empty'})`
                : `from FenceProxyDefaultPreferences (${defaultText}) and FenceProxyImplicitPreferences (${implicitText || 'empty'})` }, 'implicit') : null))),
          h('p.hint', `Implicit entries come from the configuration: FenceProxyImplicitPreferences = ${implicitText || '(empty: exactly the list)'}.`),
          admin ? testControls(dirty) : null)));
  }

  function addControls() {
    const present = new Set(view.draft.pm_proxies.map((p) => p.type));
    const src = h('select.add-source', { 'aria-label': 'Proxy source to add', name: 'add_source' },
      KEYWORDS.filter((k) => !present.has(k)).map((k) => h('option', { value: k }, `${SOURCE_LABELS[k]} (${k})`)),
      h('option', { value: 'host' }, 'A specific host…'));
    const choices = hostChoices();
    const hostSel = h('select.add-host', { 'aria-label': 'Host to add', name: 'add_host' },
      choices.size ? [...choices].map(([group, xs]) => h('optgroup', { label: group },
        xs.map((x) => h('option', { value: x.name }, `${x.name} (${x.address})`))))
        : h('option', { value: '', disabled: true }, 'no other host available'));
    if (view.addSource && [...src.options].some((o) => o.value === view.addSource)) src.value = view.addSource;
    if (view.addHost && [...hostSel.options].some((o) => o.value === view.addHost)) hostSel.value = view.addHost;
    const sync = () => { hostSel.hidden = src.value !== 'host'; };
    src.addEventListener('change', () => { view.addSource = src.value; sync(); });
    hostSel.addEventListener('change', () => { view.addHost = hostSel.value; });
    sync();
    const add = button('Add', { variant: 'secondary', dataset: { action: 'add-proxy' }, onclick: () => {
      const type = src.value;
      if (type === 'host') {
        if (!hostSel.value) return;
        view.draft.pm_proxies.push({ type: 'host', host: hostSel.value });
      } else if (type) {
        view.draft.pm_proxies.push({ type, host: null });
        view.addSource = null;
      }
      view.addHost = null;
      view.selected = view.draft.pm_proxies.length - 1;
      changed();
      chainCard.querySelector('.add-source')?.focus();
    } }, 'plus');
    return h('div.add-proxy', src, hostSel, add);
  }

  function move(i, delta) {
    const list = view.draft.pm_proxies;
    const j = i + delta;
    if (j < 0 || j >= list.length) return;
    [list[i], list[j]] = [list[j], list[i]];
    view.selected = j;
    changed();
    const btn = chainCard.querySelector(`li[data-index="${j}"] [data-action="${delta < 0 ? 'up' : 'down'}"]`);
    (btn && !btn.disabled ? btn : chainCard.querySelector(`li[data-index="${j}"] button`))?.focus();
  }

  function removeEntry(i) {
    view.draft.pm_proxies.splice(i, 1);
    view.selected = null;
    changed();
  }

  // -- Test ---------------------------------------------------------------------------------
  function testControls(dirty) {
    const agents = (view.agents || []).filter((a) => !a.encrypt_options);
    const first = agents[0];
    const result = h('div.test-result', { 'aria-live': 'polite' });
    const btn = button('Test', {
      variant: 'secondary', dataset: { action: 'test' }, disabled: !first,
      title: first ? `Runs a status through the saved chain with agent ${first.type}@${first.address}` : 'Add a fence agent first',
      onclick: async () => {
        btn.disabled = true;
        replace(result, h('div.muted', spinner(), ' asking through the chain…'));
        try {
          const res = await api.post(`/api/hosts/${host.id}/fenceagents/test`, agentBody(first, { id: first.id }));
          replace(result, statusSummary(res));
          state.setPower(host.id, res);
        } catch (err) {
          replace(result, h('div.inline-error', icon('alert', 'icon-xs'), err.message));
        } finally {
          btn.disabled = false;
        }
      },
    }, 'beaker');
    return h('div.test-box',
      h('div.test-head', btn, h('span.muted.small', first
        ? `Status with ${first.type}@${first.address}${dirty ? ' through the saved chain: save first to test your changes.' : ' through this chain.'}`
        : 'No fence agent to test with.')),
      result);
  }

  // -- save -----------------------------------------------------------------------------------
  function renderSaveBar() {
    if (!admin) return;
    const dirty = isDirty();
    replace(saveBar,
      h('span.dirty', { class: dirty ? 'on' : '' }, dirty ? [icon('alert', 'icon-xs'), 'Unsaved changes'] : [icon('check', 'icon-xs'), 'Saved']),
      h('div.form-error', { hidden: true }),
      h('div.savebar-actions',
        button('Reset', { variant: 'ghost', disabled: !dirty, dataset: { action: 'reset' }, onclick: () => {
          view.draft = JSON.parse(JSON.stringify(view.saved));
          view.selected = null;
          clearErrors(root);
          renderAll();
        } }),
        h('button.btn.btn-primary', { type: 'submit', disabled: !dirty, dataset: { action: 'save' } }, icon('check'), h('span', 'Save'))));
  }

  async function save() {
    clearErrors(root);
    const bar = saveBar.querySelector('button[type=submit]');
    if (bar) bar.disabled = true;
    try {
      const out = await api.put(`/api/hosts/${host.id}/power_management`, view.draft);
      view.saved = pmOf({ power_management: out });
      view.draft = pmOf({ power_management: out });
      view.effective = out.effective_pm_proxies;
      view.selected = null;
      renderAll();
      toast('Power management saved');
      onSaved(out);
    } catch (err) {
      renderSaveBar();
      const target = showError(root, err, null);
      // "entry 3 ..." names a row of the list: mark it too.
      const m = /entry (\d+)/.exec(err.message || '');
      if (m && String(err.field || '').includes('pm_proxies')) {
        const row = chainCard.querySelector(`li[data-index="${Number(m[1]) - 1}"]`);
        if (row && row !== target) row.classList.add('has-error');
      }
    }
  }

  // -- agents -----------------------------------------------------------------------------------
  function groups() {
    const out = [];
    for (const a of view.agents || []) {
      const g = out[out.length - 1];
      if (g && g.order === a.order) g.agents.push(a); else out.push({ order: a.order, agents: [a] });
    }
    return out;
  }

  function renderAgents() {
    if (view.agents === null) { replace(agentsCard, h('div.pad', spinner())); return; }
    const gs = groups();
    const head = h('div.card-head',
      h('div', h('h2.card-title', 'Fence agents'),
        h('div.muted.small', 'Groups are tried in order; the agents of one group (same order) run '
          + 'concurrently, e.g. the two power supplies of one server.')),
      admin ? button('Add agent', { variant: 'primary', dataset: { action: 'add-agent' },
                                    onclick: () => editAgent(null) }, 'plus') : null);
    if (!gs.length) {
      replace(agentsCard, head, h('div.pad', emptyState(admin
        ? 'No fence agent yet: add one so the engine can switch this host\u2019s power.'
        : 'No fence agent is defined for this host.', 'power')));
      return;
    }
    const thead = h('thead', h('tr', h('th', 'Order'), h('th', 'Type'), h('th', 'Address'), h('th', 'Port'),
      h('th', 'User'), h('th', 'Options'), h('th', 'Password'),
      admin ? h('th.actions-col', h('span.sr-only', 'Actions')) : null));
    const bodies = gs.map((g, gi) => h('tbody.agent-group', {
      class: g.agents.length > 1 ? 'concurrent' : '', dataset: { order: String(g.order) },
    }, g.agents.map((a, ai) => agentRow(a, ai === 0 ? orderCell(g, gi, gs) : null))));
    replace(agentsCard, head, h('table.table.agents-table', thead, bodies));
  }

  function orderCell(g, gi, gs) {
    const moves = admin ? h('span.group-move',
      iconButton('up', `Move group ${gi + 1} up`, {
        class: 'btn-xs', disabled: gi === 0 || !movable(g, gs[gi - 1]), dataset: { action: 'group-up' },
        onclick: () => swapGroups(gi, gi - 1) }),
      iconButton('down', `Move group ${gi + 1} down`, {
        class: 'btn-xs', disabled: gi === gs.length - 1 || !movable(g, gs[gi + 1]), dataset: { action: 'group-down' },
        onclick: () => swapGroups(gi, gi + 1) })) : null;
    return h('td.order-cell', { rowspan: String(g.agents.length) },
      h('div.order-box', h('span.order-num', String(gi + 1)),
        g.agents.length > 1 ? h('span.chip.concurrent-tag', 'concurrent') : null, moves));
  }

  function agentRow(a, firstCell) {
    const name = `${a.type}@${a.address}`;
    return h('tr', { dataset: { agentId: String(a.id) } },
      firstCell,
      h('td', h('strong', a.type)),
      h('td.mono', a.address),
      h('td', a.port === null ? h('span.muted', 'default') : String(a.port)),
      h('td', a.username || h('span.muted', '\u2014')),
      h('td', a.options.length
        ? a.options.map((o) => h('span.chip.opt', o.value === null ? `${o.name}=\u2022\u2022\u2022\u2022` : `${o.name}=${o.value}`))
        : h('span.muted', 'none')),
      h('td', a.password_set ? h('span.chip', 'set') : h('span.muted', 'none')),
      admin ? h('td.actions-col', h('span.row-actions',
        iconButton('beaker', `Test ${name}`, { class: 'btn-xs', dataset: { action: 'test-agent' },
                                               disabled: a.encrypt_options, onclick: () => testSaved(a) }),
        iconButton('edit', `Edit ${name}`, { class: 'btn-xs', dataset: { action: 'edit-agent' },
                                             onclick: () => editAgent(a) }),
        iconButton('trash', `Remove ${name}`, { class: 'btn-xs danger', dataset: { action: 'remove-agent' },
                                                onclick: () => removeAgent(a) }))) : null);
  }

  // Options of an agent with encrypt_options are never returned, so such an
  // agent cannot be rewritten without them: edit it to change its order.
  function movable(a, b) {
    return [...a.agents, ...b.agents].every((x) => !x.encrypt_options);
  }

  async function swapGroups(i, j) {
    const gs = groups();
    const a = gs[i];
    const b = gs[j];
    try {
      for (const x of a.agents) await api.put(`/api/hosts/${host.id}/fenceagents/${x.id}`, agentBody(x, { order: b.order }));
      for (const x of b.agents) await api.put(`/api/hosts/${host.id}/fenceagents/${x.id}`, agentBody(x, { order: a.order }));
    } catch (err) {
      toast(`Reorder: ${err.message}`, 'bad', 8000);
    }
    await loadAgents();
  }

  async function removeAgent(a) {
    const ok = await confirmDialog('Remove fence agent', `Remove agent ${a.type}@${a.address} from ${host.name}?`,
      { confirm: 'Remove', danger: true });
    if (!ok) return;
    try {
      await api.del(`/api/hosts/${host.id}/fenceagents/${a.id}`);
      toast(`Agent ${a.type}@${a.address} removed`);
    } catch (err) {
      toast(err.message, 'bad', 8000);
    }
    await loadAgents();
  }

  async function testSaved(a) {
    const d = dialog(`Test ${a.type}@${a.address}`, { wide: true });
    d.body.append(h('div.muted', spinner(), ' asking through the chain…'));
    d.footer.append(button('Close', { variant: 'primary', onclick: () => d.close() }));
    try {
      const res = await api.post(`/api/hosts/${host.id}/fenceagents/test`, agentBody(a, { id: a.id }));
      replace(d.body, statusSummary(res));
    } catch (err) {
      replace(d.body, h('div.inline-error', icon('alert', 'icon-xs'), err.message));
    }
  }

  function editAgent(agent) {
    const isNew = agent === null;
    const gs = groups();
    const caps = state.capabilities();
    const d = dialog(isNew ? `Add fence agent to ${host.name}` : `Edit fence agent ${agent.type}@${agent.address}`, { wide: true });
    const typeSel = h('select', { name: 'type' });
    caps.then((c) => {
      const installed = new Set(c.fence_agent_types.engine);
      const types = [...new Set([...c.fence_agent_types.standard, ...c.fence_agent_types.engine])].sort();
      replace(typeSel, types.map((t) => h('option', { value: t, selected: (agent ? agent.type : 'ipmilan') === t },
        installed.has(t) ? `${t}` : `${t} (not on the engine)`)));
    });
    const address = h('input', { type: 'text', name: 'address', value: agent ? agent.address : '', autocomplete: 'off',
                                 placeholder: 'BMC or PDU address' });
    const port = h('input', { type: 'text', name: 'port', inputmode: 'numeric', value: agent && agent.port !== null ? String(agent.port) : '',
                              placeholder: 'agent default', autocomplete: 'off' });
    const user = h('input', { type: 'text', name: 'username', value: agent ? agent.username : '', autocomplete: 'off' });
    // Write-only: never prefilled; empty on edit keeps the stored one.
    const pass = h('input', { type: 'password', name: 'password', value: '', autocomplete: 'new-password',
      placeholder: isNew ? '' : agent.password_set ? 'stored — leave empty to keep it' : 'none set' });
    const order = h('select', { name: 'order' },
      gs.map((g, i) => h('option', { value: String(g.order), selected: agent ? agent.order === g.order : false },
        `Group ${i + 1} — ${g.agents.filter((x) => !agent || x.id !== agent.id).map((x) => `${x.type}@${x.address}`).join(', ') || 'this agent'}${agent && agent.order === g.order ? '' : ' (run concurrently)'}`)),
      h('option', { value: 'new', selected: isNew }, `New group at the end (order ${Math.max(0, ...gs.map((g) => g.order)) + 1})`));
    const encrypt = checkbox('encrypt_options', 'Encrypt option values (they are never shown again)', agent ? agent.encrypt_options : false);
    const optRows = h('div.option-rows');
    const addOpt = (name = '', value = '', encrypted = false) => {
      const n = h('input', { type: 'text', value: name, placeholder: 'name', 'aria-label': 'Option name', class: 'opt-name' });
      const v = h('input', { type: 'text', value, placeholder: encrypted ? 'encrypted — enter the value again' : 'value',
                             'aria-label': 'Option value', class: 'opt-value' });
      const row = h('div.option-row', n, h('span.eq', '='), v,
        iconButton('x', 'Remove option', { class: 'btn-xs', onclick: () => row.remove() }));
      optRows.append(row);
      return row;
    };
    for (const o of agent ? agent.options : []) addOpt(o.name, o.value ?? '', o.value === null);
    const optionsField = h('div.field', { dataset: { field: 'options' } },
      h('label', 'Options'), optRows,
      button('Add option', { variant: 'ghost', class: 'btn-sm', onclick: () => addOpt().querySelector('input').focus() }, 'plus'),
      agent && agent.encrypt_options ? h('div.hint', 'The option values are encrypted and not shown: enter them again.') : null,
      h('div.field-error', { hidden: true }));
    const err = formError();
    const testOut = h('div.test-result');
    const form = h('form.agent-form', { novalidate: true },
      h('div.form-grid',
        field('type', 'Type', typeSel),
        field('address', 'Address', address),
        field('port', 'Port', port, 'Empty: the agent\u2019s default port.'),
        field('username', 'User name', user),
        field('password', 'Password', pass, isNew ? 'Write-only: never shown again.' : 'Write-only: leave empty to keep the stored password.'),
        field('order', 'Order', order, 'Agents of the same group run concurrently.')),
      optionsField, encrypt, err, testOut);
    d.body.append(form);

    const collect = () => {
      const opts = [...optRows.querySelectorAll('.option-row')]
        .map((r) => ({ name: r.querySelector('.opt-name').value.trim(), value: r.querySelector('.opt-value').value }))
        .filter((o) => o.name || o.value);
      const p = port.value.trim();
      const body = {
        type: typeSel.value, address: address.value.trim(),
        port: p === '' ? null : (/^-?\d+$/.test(p) ? Number(p) : p),
        username: user.value, options: opts,
        order: order.value === 'new' ? Math.max(0, ...gs.map((g) => g.order)) + 1 : Number(order.value),
        encrypt_options: encrypt.querySelector('input').checked,
      };
      if (pass.value !== '') body.password = pass.value;
      return body;
    };

    const testBtn = button('Test', { variant: 'secondary', dataset: { action: 'test-form' }, onclick: async () => {
      clearErrors(form);
      const b = collect();
      delete b.order;
      if (!isNew && b.password === undefined) b.id = agent.id;
      replace(testOut, h('div.muted', spinner(), ' asking through the chain…'));
      try {
        replace(testOut, statusSummary(await api.post(`/api/hosts/${host.id}/fenceagents/test`, b)));
      } catch (ex) {
        clear(testOut);
        showError(form, ex);
      }
    } }, 'beaker');
    const saveBtn = h('button.btn.btn-primary', { type: 'submit', dataset: { action: 'save-agent' } }, icon('check'), h('span', isNew ? 'Add' : 'Save'));
    d.footer.append(testBtn, h('span.grow'), button('Cancel', { onclick: () => d.close() }), saveBtn);
    form.addEventListener('submit', (e) => { e.preventDefault(); saveBtn.click(); });
    saveBtn.addEventListener('click', async () => {
      clearErrors(form);
      saveBtn.disabled = true;
      try {
        const b = collect();
        if (agent && agent.encrypt_options && b.options.some((o) => o.value === '')) {
          showError(form, { message: 'enter every encrypted option value again', field: 'options' });
          return;
        }
        if (isNew) await api.post(`/api/hosts/${host.id}/fenceagents`, b);
        else await api.put(`/api/hosts/${host.id}/fenceagents/${agent.id}`, b);
        d.close(true);
        toast(isNew ? `Agent ${b.type}@${b.address} added` : `Agent ${b.type}@${b.address} saved`);
        await loadAgents();
      } catch (ex) {
        showError(form, ex);
      } finally {
        saveBtn.disabled = false;
      }
    });
    (isNew ? typeSel : address).focus();
  }

  function agentBody(a, extra = {}) {
    return {
      type: a.type, address: a.address, port: a.port, username: a.username,
      options: a.options.map((o) => ({ name: o.name, value: o.value ?? '' })),
      encrypt_options: a.encrypt_options, order: a.order, ...extra,
    };
  }

  renderSettings();
  renderChain();
  renderAgents();
  renderSaveBar();
  loadAll().catch((err) => toast(err.message, 'bad'));

  return {
    guard() { return isDirty() ? 'The power management of this host has unsaved changes.' : null; },
    refresh(x) {
      // Another console may have changed it: follow when nothing is being edited.
      if (!isDirty()) {
        const fresh = pmOf(x);
        if (JSON.stringify(fresh) !== JSON.stringify(view.saved)
            || JSON.stringify(view.effective) !== JSON.stringify(x.power_management.effective_pm_proxies)) {
          view.saved = fresh;
          view.draft = pmOf(x);
          view.effective = x.power_management.effective_pm_proxies;
          renderAll();
        }
      }
    },
    unmount() {},
  };
}
