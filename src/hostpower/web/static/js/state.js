// What the console remembers between pages while it is open.
import * as api from './api.js';

/** Last known power state per host id: {state, proxy, at, message}. */
export const power = new Map();

const listeners = new Set();

export function onPower(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

export function setPower(hostId, result) {
  power.set(hostId, {
    state: result.power_state, proxy: result.proxy, message: result.message, at: new Date().toISOString(),
  });
  for (const fn of listeners) fn(hostId);
}

const inflight = new Map();

/** Ask the engine for a host's power state (one request per host at a time). */
export function checkPower(hostId) {
  if (inflight.has(hostId)) return inflight.get(hostId);
  const p = api.post(`/api/hosts/${hostId}/fence`, { fence_type: 'status' })
    .then((res) => { setPower(hostId, res); return res; })
    .catch((err) => {
      setPower(hostId, { power_state: 'error', proxy: null, message: err.message });
      throw err;
    })
    .finally(() => inflight.delete(hostId));
  inflight.set(hostId, p);
  return p;
}

// Configuration values the chain editor needs (default and implicit sources).
let configCache = null;
let configAt = 0;

export async function config(maxAgeMs = 10000) {
  if (!configCache || Date.now() - configAt > maxAgeMs) {
    const items = await api.get('/api/config');
    configCache = Object.fromEntries(items.map((i) => [i.name, i]));
    configAt = Date.now();
  }
  return configCache;
}

export function forgetConfig() {
  configCache = null;
}

let capsCache = null;

export async function capabilities() {
  if (!capsCache) capsCache = await api.get('/api/capabilities');
  return capsCache;
}
