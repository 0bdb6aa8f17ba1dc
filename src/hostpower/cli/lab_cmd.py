"""`hostpower lab start|status|fault|power|stop|cleanup|list`."""

from __future__ import annotations

import argparse
import signal
import threading
from typing import TYPE_CHECKING, Any

import httpx

from hostpower.cli.common import CliError, open_context, table
from hostpower.cli.inventory_cmd import read_document
from hostpower.lab.supervisor import FAULTS
from hostpower.model.errors import ValidationError
from hostpower.settings import Settings

if TYPE_CHECKING:
    from hostpower.lab.runner import RunningLab
    from hostpower.lab.topology import LabHost


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lab", help="simulated hosts with virtual BMCs, for demos and tests")
    lsub = p.add_subparsers(dest="lab_command", required=True, metavar="ACTION")
    st = lsub.add_parser("start", help="start a topology and run until Ctrl-C")
    st.add_argument("--topology", help="topology YAML (default: built-in, 9 hosts)")
    st.add_argument("--loopback", action="store_true",
                    help="127.x addresses, no namespaces, even as root")
    st.add_argument("--load-inventory", action="store_true",
                    help="load the topology's hosts into the engine's inventory")
    st.add_argument("--boot-delay", type=float, help="seconds from power on to agent up")
    st.set_defaults(func=start)
    status = lsub.add_parser("status", help="hosts, power, agents, BMC command counts")
    status.set_defaults(func=show_status)
    fault = lsub.add_parser("fault", help="inject (or --clear) a fault")
    fault.add_argument("host")
    fault.add_argument("fault", choices=FAULTS)
    fault.add_argument("--clear", action="store_true")
    fault.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                       help="an option of the fault, e.g. for kernel_crash_kdump port=7410 "
                            "interval=1 duration=30 reboot=true (docs/lab.md)")
    fault.set_defaults(func=inject)
    power = lsub.add_parser("power", help="switch a PDU outlet or a chassis by hand (not counted)")
    power.add_argument("target", help="PDU:OUTLET (e.g. c1-pdu1:3) or a BMC (e.g. c1-h3-bmc)")
    power.add_argument("state", choices=("on", "off"))
    power.set_defaults(func=switch)
    stop = lsub.add_parser("stop", help="stop the running lab")
    stop.set_defaults(func=stop_lab)
    clean = lsub.add_parser("cleanup", help="remove what crashed labs left (running labs are kept)")
    clean.set_defaults(func=cleanup)
    listing = lsub.add_parser("list", help="the labs running on this machine, any home")
    listing.set_defaults(func=list_labs)


def _control_url() -> str:
    from hostpower.lab.runner import STATE_FILE, running_lab_state

    home = Settings.from_env().home
    if not (home / "lab" / STATE_FILE).exists():
        raise CliError("no lab is running (start one with 'hostpower lab start')")
    state = running_lab_state(home)
    if state is None:
        raise CliError(f"no lab is running from {home}: the one started there has died "
                       f"('hostpower lab cleanup' removes what it left)")
    return state["control"]


def _call(method: str, path: str, body: dict | None = None) -> dict:
    try:
        r = httpx.request(method, _control_url() + path, json=body, timeout=10)
    except httpx.TransportError as exc:
        raise CliError(f"the lab does not answer: {exc}") from None
    if r.status_code != 200:
        raise CliError(r.json().get("detail", r.text), 2)
    return r.json()


def start(args: argparse.Namespace) -> int:
    from hostpower.inventory_file import load_document
    from hostpower.lab.runner import load_topology, start_lab
    from hostpower.store.configstore import ConfigStore
    from hostpower.store.inventory import Inventory

    doc = read_document(args.topology) if args.topology else None
    topo = load_topology(doc, args.loopback, args.boot_delay)
    settings = Settings.from_env()
    mode = ("network namespaces (management networks confined)" if topo.namespaced else
            "loopback addresses, WITHOUT confinement (run as root for namespaces)")
    inst = topo.instance
    redfish = sum(b.kind == "redfish" for b in topo.bmcs)
    print(f"lab: starting topology {topo.name!r}: {len(topo.hosts)} hosts, "
          f"{len(topo.bmcs)} BMCs ({redfish} Redfish), {len(topo.pdus)} PDUs, on {mode}",
          flush=True)
    print(f"lab: instance {inst.number}: names {inst.prefix}*, addresses "
          f"{' and '.join(inst.ranges(topo.namespaced))}", flush=True)
    done = threading.Event()
    running = start_lab(settings, topo, log=lambda m: print(m, flush=True), on_stop=done.set)
    try:
        if args.load_inventory:
            ctx = open_context()
            with ctx.db.session() as s:
                inv = Inventory(s, ctx.box, ctx.known_agent_types())
                if any(dc.name in topo.data_centers for dc in inv.data_centers()):
                    print("lab: inventory already holds this topology; not loaded again")
                else:
                    print(f"lab: loaded inventory: "
                          f"{load_document(inv, ConfigStore(s), running.inventory_document())}")
                    # ... and the engine trusts the lab's Redfish BMCs (its device CA).
                    ConfigStore(s).set("RedfishCaBundle", str(running.redfish_ca_bundle))
            ctx.close()
        rows = [(h.name, h.cluster, f"{h.front_address}:{h.agent_port}",
                 " ".join(f"{b.kind} {b.address}:{b.port}" for b in h.bmcs),
                 " ".join(map(str, h.outlets)) or "-") for h in topo.hosts]
        print(table(rows, ("HOST", "CLUSTER", "AGENT", "BMC", "PDU OUTLETS")))
        if topo.pdus:
            print("lab: PDUs (SNMP, community " + repr(topo.pdu_community) + "): " + ", ".join(
                f"{p.name} {p.address}:{p.port}" for p in topo.pdus))
        if any(b.kind == "redfish" for b in topo.bmcs):
            print(f"lab: Redfish BMCs' CA bundle {running.redfish_ca_bundle}")
        for hint in _tries(running):
            print(hint)
        print(f"lab: control API {running.control.url}; 'hostpower lab fault HOST FAULT'; "
              f"Ctrl-C stops", flush=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: done.set())
        done.wait()
    finally:
        print("lab: stopping", flush=True)
        running.stop()
        print("lab: stopped, nothing left behind", flush=True)
    return 0


def switch(args: argparse.Namespace) -> int:
    pdu, sep, outlet = str(args.target).rpartition(":")
    if sep:
        if not outlet.isdigit():
            raise ValidationError("target", f"{args.target!r} is not PDU:OUTLET")
        body: dict[str, Any] = {"pdu": pdu, "outlet": int(outlet), "power": args.state}
    else:
        body = {"bmc": args.target, "power": args.state}
    print(_call("POST", "/power", body)["detail"])
    return 0


def _tries(running: RunningLab) -> list[str]:
    """One real fence agent command per device kind, from the first host that has it."""
    topo = running.topo

    def ns(host: LabHost) -> str:
        return f"ip netns exec {topo.instance.host_ns(host.index)} " if topo.namespaced else ""

    lines = [""]
    creds = f"-l {topo.bmc_username} -p {topo.bmc_password}"
    ipmi = next((h for h in topo.hosts if h.bmcs[0].kind == "ipmi"), None)
    if ipmi is not None:
        b = ipmi.bmcs[0]
        lines.append(f"lab: try  {ns(ipmi)}fence_ipmilan -P -a {b.address} -u {b.port} "
                     f"{creds} -o status")
    redfish = next((h for h in topo.hosts if h.bmcs[0].kind == "redfish"), None)
    if redfish is not None:
        b = redfish.bmcs[0]
        lines.append(f"lab: try  {ns(redfish)}env REQUESTS_CA_BUNDLE={running.redfish_ca_bundle} "
                     f"fence_redfish -a {b.address} -u {b.port} {creds} "
                     f"--systems-uri={b.systems_uri} -o status")
    fed = next((h for h in topo.hosts if h.outlets), None)
    if fed is not None:
        o = fed.outlets[0]
        pdu = topo.pdu(o.pdu)
        lines.append(f"lab: try  {ns(fed)}fence_apc_snmp -a {pdu.address} -u {pdu.port} "
                     f"--community={topo.pdu_community} -n {o.outlet} -o status")
    return lines


def show_status(_: argparse.Namespace) -> int:
    status = _call("GET", "/status")
    rows = []
    for name, h in status["hosts"].items():
        counts = " ".join(_bmc_counts(b, v) for b, v in h["bmcs"].items())
        outlets = " ".join(
            f"{o['pdu']}:{o['outlet']}:{o['power']},on={o['counts']['on']},"
            f"off={o['counts']['off']}" + ("" if o["answering"] else ",MUTE")
            for o in h.get("outlets", []))
        ssh = h.get("ssh") or {}
        rows.append((name, h["power"], h["agent"] + (" isolated" if h["isolated"] else ""),
                     h["boots"], ssh.get("state", "-"), counts, outlets or "-"))
    print(table(rows, ("HOST", "POWER", "AGENT", "BOOTS", "SSH", "BMC COMMANDS",
                       "PDU OUTLETS")))
    return 0


def _bmc_counts(name: str, bmc: dict[str, Any]) -> str:
    c = bmc["counts"]
    text = f"{name}:on={c['on']},off={c['off']}"
    if bmc.get("kind") == "redfish":
        text += f",login={c['login']},refused={c['refused']}"
    if not bmc["answering"]:
        text += ",MUTE" if bmc.get("standby", True) else ",NO-STANDBY-POWER"
    return text


def inject(args: argparse.Namespace) -> int:
    body = {"host": args.host, "fault": args.fault, "clear": args.clear}
    if args.option:
        options = {}
        for item in args.option:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ValidationError("--option", f"{item!r} is not KEY=VALUE")
            options[key] = value
        body["options"] = options
    print(_call("POST", "/fault", body)["detail"])
    return 0


def stop_lab(_: argparse.Namespace) -> int:
    _call("POST", "/stop")
    print("lab: stop requested")
    return 0


def cleanup(_: argparse.Namespace) -> int:
    """Everything of every dead lab (any home); this home's state file only
    if its lab is dead too."""
    from hostpower.lab.instances import InstancePool
    from hostpower.lab.runner import STATE_FILE, running_lab_state

    removed = InstancePool().cleanup()
    home = Settings.from_env().home
    if running_lab_state(home) is None:
        (home / "lab" / STATE_FILE).unlink(missing_ok=True)
    print("\n".join(removed) or "nothing to clean up")
    return 0


def list_labs(_: argparse.Namespace) -> int:
    from hostpower.lab.instances import InstancePool

    running = InstancePool().running()
    rows = [(inst.number, inst.prefix + "*", owner.get("pid"),
             "namespaces" if owner.get("namespaced") else "loopback", owner.get("home"))
            for inst, owner in sorted(running.items(), key=lambda item: item[0].number)]
    print(table(rows, ("INSTANCE", "NAMES", "PID", "MODE", "HOME")) if rows else "no lab is running")
    return 0
