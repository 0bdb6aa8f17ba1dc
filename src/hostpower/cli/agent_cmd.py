"""`hostpower agent` (the host agent daemon), `hostpower host enroll` and
`hostpower host ssh-pin` (ssh_cmd.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from hostpower.cli import ssh_cmd
from hostpower.cli.common import open_context


def register(sub: argparse._SubParsersAction) -> None:
    # Listed for `hostpower --help`; `hostpower agent ...` is handed to the
    # daemon's own parser before this one runs (see cli.main).
    sub.add_parser("agent", help="run the host agent daemon: hostpower agent --help "
                                 "(see docs/host-agent.md)")
    h = sub.add_parser("host", help="host enrolment")
    hsub = h.add_subparsers(dest="host_command", required=True, metavar="ACTION")
    e = hsub.add_parser("enroll", help="issue a host agent's certificate bundle")
    e.add_argument("host", help="host name, address or id (must be defined)")
    e.add_argument("--out", required=True, type=Path,
                   help="directory for agent.crt, agent.key and ca.crt")
    e.set_defaults(func=enroll)
    ssh_cmd.register_host_actions(hsub)


def run_agent_argv(argv: list[str]) -> int:
    from hostpower.hostagent.daemon import run_agent as agent_main
    return agent_main(argv)


def enroll(args: argparse.Namespace) -> int:
    from hostpower.hostagent.pki import CertificateAuthority, enroll_host
    from hostpower.store.inventory import Inventory

    ctx = open_context()
    with ctx.db.session() as s:
        host = Inventory(s, ctx.box).find_host(args.host)
    ca = CertificateAuthority.load_or_create(ctx.settings.pki_dir)
    paths = enroll_host(ca, host.name, [host.address], args.out)
    print(f"enrolled {host.name} ({host.address}): {paths.cert}, {paths.key} (0600), {paths.ca}")
    print(f"copy {args.out} to the host and run: hostpower agent --host-name {host.name} "
          f"--cert-dir <that directory> --bind <address>:{host.agent_port}")
    return 0
