"""`hostpower ssh-key` and `hostpower host ssh-pin HOST`: the engine's SSH
access to hosts, for soft fencing (fencing/softfencing.py).

* `ssh-key` prints the engine's public key (created under HOSTPOWER_HOME at
  first need): the line to put in the SSH user's authorized_keys on every
  host.
* `host ssh-pin HOST` reads the SSH host key HOST offers now, shows it with
  its fingerprint and pins it once confirmed (a prompt, `--yes`, or
  `--fingerprint` with the fingerprint read on the host's console). From
  then on the engine connects to HOST only if it shows that key.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from dataclasses import replace

from hostpower.cli.common import CliError, open_context
from hostpower.fencing.sshaccess import SshFailure, engine_key, fetch_host_key
from hostpower.model.events import Event, Severity
from hostpower.model.sshkey import fingerprint
from hostpower.settings import Settings
from hostpower.store.configstore import ConfigStore
from hostpower.store.events import Events
from hostpower.store.inventory import Inventory


def register(sub: argparse._SubParsersAction) -> None:
    k = sub.add_parser("ssh-key", help="print the engine's SSH public key (for the hosts' "
                                       "authorized_keys)")
    k.add_argument("--fingerprint", action="store_true", help="print its fingerprint instead")
    k.set_defaults(func=show_key)


def register_host_actions(hsub: argparse._SubParsersAction) -> None:
    """`hostpower host ssh-pin`, beside `host enroll` (agent_cmd.py)."""
    pin = hsub.add_parser("ssh-pin", help="read the SSH host key HOST offers and pin it")
    pin.add_argument("host", help="host name, address or id")
    pin.add_argument("--fingerprint", metavar="SHA256:...",
                     help="pin only a key with this fingerprint (read on the host: "
                          "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub)")
    pin.add_argument("--yes", action="store_true", help="pin without asking")
    pin.set_defaults(func=pin_host_key)


def show_key(args: argparse.Namespace) -> int:
    key = engine_key(Settings.from_env().ssh_dir)
    print(key.fingerprint if args.fingerprint else key.public)
    return 0


def pin_host_key(args: argparse.Namespace) -> int:
    ctx = open_context()
    try:
        with ctx.db.session() as s:
            host = Inventory(s, ctx.box).find_host(args.host)
            timeout = float(ConfigStore(s).load()["SshSoftFencingTimeoutInSec"])
        if host.ssh.port is None:
            raise CliError(f"{host.name} has no SSH access configured (ssh.port): set it first", 2)
        try:
            key = asyncio.run(fetch_host_key(host.address, host.ssh.port, timeout))
        except SshFailure as exc:
            raise CliError(f"cannot read the SSH host key of {host.name}: {exc}") from None
        seen = fingerprint(key)
        print(f"{host.name} ({host.address} port {host.ssh.port}) offers {key.split()[0]} key "
              f"{seen}")
        if host.ssh.host_key == key:
            print(f"already pinned for {host.name}")
            return 0
        if host.ssh.host_key:
            print(f"it REPLACES the pinned key {fingerprint(host.ssh.host_key)}: re-pin only "
                  f"if the host was reinstalled")
        if args.fingerprint is not None:
            if args.fingerprint.strip() != seen:
                raise CliError(f"{seen} is not the fingerprint given ({args.fingerprint}): "
                               f"nothing pinned", 2)
        elif not args.yes:
            if not sys.stdin.isatty():
                raise CliError("confirm with --yes or --fingerprint (stdin is not a terminal): "
                               "nothing pinned", 2)
            if input("pin it? [y/N] ").strip().lower() not in ("y", "yes"):
                print("nothing pinned")
                return 1
        with ctx.db.session() as s:
            inv = Inventory(s, ctx.box)
            stored = inv.host(host.id)
            inv.update_host(host.id, ssh=replace(stored.ssh, host_key=key))
            Events(s).add(Event(Severity.INFO, "ssh.pinned",
                                f"SSH host key {seen} pinned for {host.name} (hostpower host "
                                f"ssh-pin, OS user {getpass.getuser()})",
                                host_id=host.id, host_name=host.name,
                                details={"fingerprint": seen}))
        print(f"pinned for {host.name}")
        return 0
    finally:
        ctx.close()
