"""`hostpower user add|list|passwd|remove`."""

from __future__ import annotations

import argparse

from hostpower.cli.common import open_context, read_secret, table
from hostpower.store.users import Role, Users


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("user", help="engine users (admin or viewer)")
    usub = p.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    add = usub.add_parser("add", help="add a user; the password is read from a prompt or stdin")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=[r.value for r in Role])
    add.set_defaults(func=add_user)
    ls = usub.add_parser("list", help="list users")
    ls.set_defaults(func=list_users)
    pw = usub.add_parser("passwd", help="set a user's password (revokes its tokens)")
    pw.add_argument("name")
    pw.set_defaults(func=passwd)
    rm = usub.add_parser("remove", help="remove a user")
    rm.add_argument("name")
    rm.set_defaults(func=remove_user)


def add_user(args: argparse.Namespace) -> int:
    password = read_secret(f"password for {args.name}: ")
    ctx = open_context()
    with ctx.db.session() as s:
        Users(s).add(args.name, args.role, password)
    print(f"user {args.name} added with role {args.role}")
    return 0


def list_users(_: argparse.Namespace) -> int:
    ctx = open_context()
    with ctx.db.session() as s:
        rows = [(u.name, u.role, u.created_at.isoformat(timespec="seconds")) for u in Users(s).list()]
    print(table(rows, ("NAME", "ROLE", "CREATED")))
    return 0


def passwd(args: argparse.Namespace) -> int:
    password = read_secret(f"new password for {args.name}: ")
    ctx = open_context()
    with ctx.db.session() as s:
        Users(s).set_password(args.name, password)
    print(f"password of {args.name} changed")
    return 0


def remove_user(args: argparse.Namespace) -> int:
    ctx = open_context()
    with ctx.db.session() as s:
        Users(s).remove(args.name)
    print(f"user {args.name} removed")
    return 0
