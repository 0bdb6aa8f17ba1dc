"""The `hostpower` command.

Exit codes: 0 success, 1 the operation failed, 2 bad input (unknown key,
invalid value, bad chain): nothing was changed.
"""

from __future__ import annotations

import argparse
import sys

from hostpower import __version__
from hostpower.cli import (
    agent_cmd, config_cmd, db_cmd, deploy_cmd, engines_cmd, events_cmd, fence_cmd, inventory_cmd, lab_cmd,
    proxies_cmd, readiness_cmd, serve_cmd, ssh_cmd, users_cmd,
)
from hostpower.cli import notifier_cmd  # notifications: webhooks and mail
from hostpower.cli.common import CliError
from hostpower.model.errors import ConflictError, NotFoundError, ValidationError

MODULES = (serve_cmd, agent_cmd, db_cmd, config_cmd, proxies_cmd, users_cmd, inventory_cmd, lab_cmd,
           fence_cmd, events_cmd, engines_cmd, readiness_cmd, ssh_cmd, deploy_cmd, notifier_cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hostpower", description="Host power management and fencing engine.")
    parser.add_argument("--version", action="version", version=f"hostpower {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["agent"]:
        # The agent daemon has its own options (--bind, --host-name, ...);
        # argparse cannot pass options through a subcommand, so hand over here.
        return agent_cmd.run_agent_argv(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValidationError, NotFoundError, ConflictError) as exc:
        print(f"hostpower: {exc}", file=sys.stderr)
        return 2
    except CliError as exc:
        print(f"hostpower: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
