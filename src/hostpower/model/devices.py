"""One command at a time per PM device: which device a command goes to, and
how long a command waits before it may be sent. Pure: the engine's device
gate (fencing/devicegate.py) holds the turns, the store (store/deviceturns.py)
the claims shared by several engines.

A device is named by its address and its effective port: the agent's port,
or the default port of its type when none is set. Two agents (of one host or
of several: the hosts behind one PDU) with the same key are one device, and
never receive two commands at once.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

# The port a fence agent type uses when the agent sets none (fence-agents'
# `ipport` default). Only types whose default does not depend on other
# options (ssl, ssh, ...) are listed; another type without a port keys on
# its address alone, so two such agents on one address still share a key.
DEFAULT_PORTS: dict[str, int] = {
    # IPMI over LAN (UDP 623); fence_idrac, _imm, _ilo3/4/5 are fence_ipmilan.
    **dict.fromkeys(("ipmilan", "ipmilanplus", "idrac", "imm", "ilo3", "ilo4", "ilo5"), 623),
    # Redfish and the other HTTPS APIs of BMCs.
    **dict.fromkeys(("redfish", "ilo", "ilo2", "vmware_rest"), 443),
    # SNMP: switched PDUs, blade chassis, fabric switches.
    **dict.fromkeys(("apc_snmp", "eaton_snmp", "tripplite_snmp", "ifmib", "ipdu",
                     "intelmodular", "cisco_mds", "emerson"), 161),
    # SSH.
    **dict.fromkeys(("ilo_ssh", "ilo3_ssh", "ilo4_ssh", "ilo5_ssh", "cyberpower_ssh"), 22),
}

# A claim in the database outlives its command's own timeout by this much:
# the engine waits for a proxy's answer up to 7 s past the timeout
# (hostagent/client.py, fence_margin), and the release takes a statement.
CLAIM_MARGIN = 10.0
# A waiter for a device held by another engine asks again after this, doubled
# at each try up to RETRY_MAX (or when the device will be free, if sooner).
RETRY_FIRST = 0.02
RETRY_MAX = 0.5
# A wait for a turn this long or longer is said in the command's event.
LONG_WAIT = 1.0


@dataclass(frozen=True, order=True)
class DeviceKey:
    """A device: normalized address, effective port (None: the type's
    default, unknown to hostpower)."""

    address: str
    port: int | None

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}" if self.port is not None else host

    @property
    def text(self) -> str:
        """As stored in the database (device_turns.device)."""
        return str(self)


def normalize_address(address: str) -> str:
    """One spelling per address: IP literals canonical (an IPv4-mapped IPv6
    address is the IPv4 one), names lower-case without a trailing dot.
    Names are not resolved (no I/O here): a device known by a name and by an
    IP address is two keys."""
    text = address.strip().strip("[]")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return text.lower().rstrip(".")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def device_key(agent_type: str, address: str, port: int | None) -> DeviceKey:
    """The device an agent's commands go to."""
    effective = port if port is not None else DEFAULT_PORTS.get(agent_type)
    return DeviceKey(normalize_address(address), effective)


def spacing_wait(last_end: float | None, now: float, interval: float) -> float:
    """Seconds to wait before the next command to a device whose previous
    command ended at `last_end` (None: no command yet), `interval` apart."""
    if last_end is None or interval <= 0:
        return 0.0
    return max(0.0, last_end + interval - now)


def claim_ttl(command_timeout: float, margin: float = CLAIM_MARGIN) -> float:
    """How long a claim in the database lasts: never less than the longest
    the engine waits for the command, never much more (a crashed holder's
    claim frees the device after it)."""
    return command_timeout + margin


def wait_limit(command_timeout: float, margin: float = CLAIM_MARGIN) -> float:
    """How long a command waits for its device's turn before it gives up
    (DeviceBusy): as long as one other command may hold the device (its
    timeout and margin, the same configuration), so a command queued behind
    a single slow one — a status through a proxy that cannot reach the
    device, which holds the turn until its timeout — is still sent."""
    return command_timeout + margin


def retry_delay(tries: int, free_in: float | None, remaining: float) -> float:
    """How long a waiter sleeps before its `tries`-th claim (1 = after the
    first refusal): a doubling back-off from RETRY_FIRST to RETRY_MAX, or
    less when the holder has released and the device is free in `free_in`
    seconds (its spacing); never past the waiter's own deadline."""
    backoff = min(RETRY_FIRST * 2 ** min(max(tries - 1, 0), 10), RETRY_MAX)
    if free_in is not None:
        backoff = min(backoff, max(free_in, 0.0) + 0.001)
    return max(0.0, min(backoff, remaining))
