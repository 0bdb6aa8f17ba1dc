// Proxy preference chains, as docs/proxy-chains.md defines them.

export const SOURCE_LABELS = {
  cluster: 'Cluster',
  dc: 'Data center',
  other_dc: 'Other data centers',
  engine: 'Engine',
  host: 'Host',
};

export const SOURCE_HINTS = {
  cluster: 'other hosts of this host\u2019s cluster',
  dc: 'other hosts of this host\u2019s data center',
  other_dc: 'hosts of the other data centers',
  engine: 'the engine machine itself',
  host: 'this one host',
};

export function entryKey(e) {
  return e.type === 'host' ? `host:${String(e.host || '').toLowerCase()}` : e.type;
}

export function entryLabel(e) {
  return e.type === 'host' ? e.host : SOURCE_LABELS[e.type] || e.type;
}

/** "cluster,dc" (a configuration value) to entries. */
export function parseSources(text) {
  return String(text || '').split(',').map((s) => s.trim().toLowerCase()).filter(Boolean)
    .map((w) => (w in SOURCE_LABELS && w !== 'host' ? { type: w, host: null } : { type: 'host', host: w }));
}

export function formatChain(entries) {
  return entries.map((e) => (e.type === 'host' ? e.host : e.type)).join(',');
}

/**
 * The effective chain the engine will walk: the host's own chain (or the
 * default), then each implicit entry it lacks, in order; entries not written
 * by the user are marked implicit. Mirrors model/proxychain.complete_chain.
 */
export function effectiveChain(own, defaultText, implicitText) {
  const base = own.length ? own : parseSources(defaultText);
  const ownKeys = new Set(own.map(entryKey));
  const chain = base.map((e) => ({ ...e, implicit: !ownKeys.has(entryKey(e)) }));
  const present = new Set(chain.map(entryKey));
  for (const e of parseSources(implicitText)) {
    if (!present.has(entryKey(e))) {
      chain.push({ ...e, implicit: true });
      present.add(entryKey(e));
    }
  }
  return chain;
}
