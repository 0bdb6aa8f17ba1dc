"""`hostpower deploy systemd --out DIR`: the systemd units of the engine and
the host agent (src/hostpower/deploy/), written for this installation.

The units name the `hostpower` program by its absolute path, which depends on
where the wheel was installed (a virtual environment under /opt, say); this
command fills it in, so the units match what is installed.
docs/deployment.md says what to do with them.
"""

from __future__ import annotations

import argparse
import sysconfig
from importlib import resources
from pathlib import Path

from hostpower.cli.common import CliError
from hostpower.model.errors import ValidationError

UNITS = ("hostpower-engine.service", "hostpower-agent.service")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("deploy", help="files for deploying hostpower (systemd units)")
    dsub = p.add_subparsers(dest="deploy_command", metavar="WHAT", required=True)
    s = dsub.add_parser("systemd", help="write the engine's and the host agent's systemd units",
                        description="Write hostpower-engine.service and hostpower-agent.service "
                                    "into DIR (e.g. /etc/systemd/system), naming this "
                                    "installation's hostpower program.")
    s.add_argument("--out", required=True, type=Path, help="directory to write the units into")
    s.add_argument("--bindir", type=Path, default=None,
                   help="directory holding the hostpower program (default: this installation's, "
                        f"{sysconfig.get_path('scripts')})")
    s.add_argument("--force", action="store_true", help="replace units that already exist")
    s.set_defaults(func=write_units)


def render(unit: str, bindir: Path) -> str:
    template = resources.files("hostpower.deploy").joinpath(unit).read_text()
    return template.replace("@BINDIR@", str(bindir))


def write_units(args: argparse.Namespace) -> int:
    bindir = (args.bindir or Path(sysconfig.get_path("scripts"))).absolute()
    if not (bindir / "hostpower").is_file():
        raise ValidationError("--bindir", f"{bindir} holds no hostpower program")
    if not args.out.is_dir():
        raise ValidationError("--out", f"{args.out} is not a directory")
    existing = [u for u in UNITS if (args.out / u).exists()]
    if existing and not args.force:
        raise CliError(f"{', '.join(existing)} already in {args.out}: --force replaces")
    for unit in UNITS:
        (args.out / unit).write_text(render(unit, bindir))
        print(f"wrote {args.out / unit}")
    print("next: systemctl daemon-reload; see docs/deployment.md")
    return 0
