// Engine configuration (admins): each key with its description and default, editable.
import { h, replace, clear } from '../dom.js';
import * as api from '../api.js';
import * as state from '../state.js';
import { button, clearErrors, showError, toast, spinner } from '../ui.js';

const KIND_HINT = {
  int: 'whole number', bool: 'true or false', path: 'absolute path',
  optional_path: 'absolute path; empty: none',
  sources: 'comma-separated: cluster, dc, other_dc, engine',
  command: 'one command line, run by the host\'s shell',
  address: 'IP address; empty: every address',
};

export function mount(container) {
  const table = h('div.config-list', spinner());
  const filter = h('input.search', { type: 'search', placeholder: 'Filter keys', 'aria-label': 'Filter keys' });
  container.append(
    h('div.page-head', h('div.page-title', h('h1', 'Configuration'),
      h('p.subtitle', 'Engine settings, stored in the database and applied without a restart.'))),
    h('section.card.flush', h('div.card-toolbar', filter, h('span.grow'),
      h('span.muted.small', 'Values differing from their default are marked “changed”.')), table));
  let items = [];

  async function load() {
    items = await api.get('/api/config');
    render();
  }

  function render() {
    const q = filter.value.toLowerCase();
    const shown = items.filter((i) => !q || i.name.toLowerCase().includes(q) || i.description.toLowerCase().includes(q));
    replace(table, h('table.table.config-table',
      h('thead', h('tr', h('th', 'Key'), h('th.value-col', 'Value'), h('th', 'Default'), h('th.actions-col', h('span.sr-only', 'Actions')))),
      h('tbody', shown.map(row))));
  }

  function row(item) {
    const control = item.type === 'bool'
      ? h('select', { name: item.name }, ['true', 'false'].map((v) => h('option', { value: v, selected: item.value === v }, v)))
      : h('input', { type: 'text', name: item.name, value: item.value, spellcheck: 'false', autocomplete: 'off',
                     inputmode: item.type === 'int' ? 'numeric' : 'text' });
    control.id = `cfg-${item.name}`;
    const range = item.type === 'int' && (item.minimum !== null || item.maximum !== null)
      ? `${item.minimum ?? '…'}–${item.maximum ?? '…'}${item.unit ? ` ${item.unit}` : ''}` : (item.unit || '');
    const saveBtn = button('Save', { variant: 'primary', class: 'btn-sm', disabled: true, dataset: { action: 'save' } });
    const resetBtn = button('Default', { variant: 'ghost', class: 'btn-sm', disabled: item.value === item.default,
                                          title: `Set back to ${item.default || '(empty)'}`, dataset: { action: 'reset' } });
    const cell = h('div.field', { dataset: { field: item.name } },
      h('div.value-line', control, range ? h('span.unit.muted', range) : null),
      h('div.hint', KIND_HINT[item.type] || item.type), h('div.field-error', { hidden: true }));
    const tr = h('tr', { dataset: { key: item.name } },
      h('td.key-cell', h('label.key-name', { for: control.id }, item.name,
        item.value !== item.default ? h('span.chip.changed', 'changed') : null),
      h('div.key-desc', item.description)),
      h('td.value-col', cell),
      h('td.default-cell', h('code', item.default === '' ? '(empty)' : item.default)),
      h('td.actions-col', h('div.row-actions', saveBtn, resetBtn)));
    const dirty = () => { saveBtn.disabled = control.value === item.value; };
    control.addEventListener('input', dirty);
    control.addEventListener('change', dirty);
    control.addEventListener('keydown', (e) => { if (e.key === 'Enter' && !saveBtn.disabled) saveBtn.click(); });
    const put = async (value) => {
      clearErrors(tr);
      saveBtn.disabled = true;
      try {
        const out = await api.put(`/api/config/${encodeURIComponent(item.name)}`, { value });
        Object.assign(item, out);
        state.forgetConfig();
        toast(`${item.name} = ${out.value === '' ? '(empty)' : out.value}`);
        replaceRow(tr, row(item));
      } catch (err) {
        showError(tr, err, item.name);
        dirty();
      }
    };
    saveBtn.addEventListener('click', () => put(control.value));
    resetBtn.addEventListener('click', () => put(item.default));
    return tr;
  }

  function replaceRow(old, fresh) {
    old.replaceWith(fresh);
  }

  filter.addEventListener('input', render);
  load().catch((err) => toast(err.message, 'bad'));
  return { unmount() { clear(container); } };
}
