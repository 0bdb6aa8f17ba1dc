"""The host agent: a small daemon on every managed host, and the engine's client for it.

The engine heartbeats each agent and asks agents to run fence agents as
proxies. Both directions are authenticated with mutual TLS under one small
PKI that the engine owns (`pki`): agents hold "agent" certificates (server
role), the engine holds an "engine" certificate (client role), and an agent
obeys only the engine role, never a fellow agent.

Modules:
* `pki`       - the engine's CA; issues agent and engine certificates.
* `wire`      - the wire format both sides speak: paths, request and answer bodies.
* `agent`     - what the agent does (heartbeat, fence with its drivers), without HTTP.
* `server`    - the agent's mutual-TLS HTTP server.
* `daemon`    - its command line (`python -m hostpower.hostagent.daemon`, `hostpower agent`).
* `client`    - the engine's async, pooled client with typed errors (`errors`);
  heartbeats go over their own lean channel (`heartbeat`).

The agent side (pki, wire, agent, server, daemon) imports nothing of the engine
(fencing, store, API): tests/test_layering.py enforces it.
"""
