"""`hostpower notifier add|list|set|remove|test`: where events are delivered
(docs/notifications.md). Works on the database directly, like `hostpower
user`; a webhook's signing key and an SMTP password are read from a prompt
or stdin, never from the command line."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime

from hostpower.cli.common import CliError, open_context, open_existing_context, read_secret, table
from hostpower.model.events import Severity
from hostpower.model.notifiers import NotifierType, SmtpSecurity, SmtpSettings, WebhookSettings
from hostpower.model.errors import ValidationError
from hostpower.store.configstore import ConfigStore
from hostpower.store.notifiers import KEEP, Notifiers


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("notifier", help="notifications: webhooks and mail for events")
    nsub = p.add_subparsers(dest="notifier_command", required=True, metavar="ACTION")
    add = nsub.add_parser(
        "add", help="add a webhook (its signing key is read from a prompt or stdin) or a mail "
                    "notifier (with --username, its password likewise)")
    add.add_argument("name")
    target = add.add_mutually_exclusive_group(required=True)
    target.add_argument("--webhook", metavar="URL", help="POST each event as signed JSON here")
    target.add_argument("--smtp", metavar="HOST[:PORT]", help="send mail through this server")
    add.add_argument("--min-severity", default=Severity.WARNING.value,
                     help="deliver events at least this severe: info, warning (default), error")
    add.add_argument("--kind", action="append", default=[], metavar="PATTERN",
                     help="only events whose kind matches (glob, e.g. 'fence.*'); repeatable")
    add.add_argument("--ca-file", help="PEM file of the CAs to trust (https, SMTP TLS)")
    add.add_argument("--security", default=SmtpSecurity.STARTTLS.value,
                     help="smtp: starttls (default), ssl or none")
    add.add_argument("--from", dest="sender", metavar="ADDRESS", help="smtp: the From address")
    add.add_argument("--to", action="append", default=[], metavar="ADDRESS",
                     help="smtp: a recipient; repeatable")
    add.add_argument("--username", default="", help="smtp: log in as this user")
    add.add_argument("--disabled", action="store_true", help="add it without delivering yet")
    add.set_defaults(func=add_notifier)
    ls = nsub.add_parser("list", help="notifiers and how their delivery goes")
    ls.set_defaults(func=list_notifiers)
    st = nsub.add_parser("set", help="change a notifier: enable or disable it, its filters, "
                                     "or its key/password (--new-secret reads it like add)")
    st.add_argument("name")
    onoff = st.add_mutually_exclusive_group()
    onoff.add_argument("--enable", dest="enabled", action="store_true", default=None)
    onoff.add_argument("--disable", dest="enabled", action="store_false")
    st.add_argument("--min-severity")
    st.add_argument("--kind", action="append", metavar="PATTERN",
                    help="replaces the kinds; repeatable")
    st.add_argument("--all-kinds", action="store_true", help="every kind (no pattern)")
    st.add_argument("--new-secret", action="store_true",
                    help="read a new signing key (webhook) or SMTP password from a prompt or stdin")
    st.set_defaults(func=set_notifier)
    rm = nsub.add_parser("remove", help="remove a notifier")
    rm.add_argument("name")
    rm.set_defaults(func=remove_notifier)
    test = nsub.add_parser("test", help="send a test message now (once, whatever the filters)")
    test.add_argument("name")
    test.set_defaults(func=test_notifier)


def _smtp_target(text: str) -> tuple[str, int | None]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or "]" in port:
        return text, None
    return host, int(port)


def add_notifier(args: argparse.Namespace) -> int:
    if args.webhook:
        kind, settings = NotifierType.WEBHOOK, {"url": args.webhook, "ca_file": args.ca_file}
        for option in ("sender", "username"):
            if getattr(args, option):
                raise ValidationError(f"--{option}", "is an option of --smtp notifiers")
        if args.to:
            raise ValidationError("--to", "is an option of --smtp notifiers")
    else:
        host, port = _smtp_target(args.smtp)
        kind, settings = NotifierType.SMTP, {
            "host": host, "port": port, "security": args.security, "sender": args.sender,
            "recipients": args.to, "username": args.username, "ca_file": args.ca_file}
    secret = None
    if kind is NotifierType.WEBHOOK:
        secret = read_secret(f"signing key for {args.name} (at least 16 characters): ")
    elif args.username:
        secret = read_secret(f"SMTP password of {args.username}: ")
    ctx = open_context()
    try:
        with ctx.db.session() as s:
            n = Notifiers(s, ctx.box).add(args.name, kind.value, settings, secret=secret,
                                          min_severity=args.min_severity, kinds=args.kind,
                                          enabled=not args.disabled)
    finally:
        ctx.close()
    print(f"{n.type.value} notifier {n.name} added: {_target(n.settings)}, "
          f"{n.min_severity.value} and above, kinds {', '.join(n.kinds) or 'all'}")
    return 0


def _target(settings: WebhookSettings | SmtpSettings) -> str:
    if isinstance(settings, WebhookSettings):
        return settings.url
    return f"{', '.join(settings.recipients)} via {settings.host}:{settings.port}"


def _ago(value: datetime | None) -> str:
    if value is None:
        return "-"
    return f"{value.astimezone(UTC):%Y-%m-%dT%H:%M:%S}Z"


def list_notifiers(_: argparse.Namespace) -> int:
    ctx = open_existing_context()
    try:
        with ctx.db.session() as s:
            store = Notifiers(s, ctx.box)
            found = [(n, store.state(n.id)) for n in store.list() if n.id is not None]
    finally:
        ctx.close()
    rows = [(n.name, n.type.value, "yes" if n.enabled else "no", n.min_severity.value,
             ",".join(n.kinds) or "*", _target(n.settings), st.holder or "-", st.delivered,
             st.dropped, _ago(st.last_delivered_at),
             f"FAILING since {_ago(st.failing_since)}" if st.failing else "ok",
             st.attempts, st.last_error or "-")
            for n, st in found]
    print(table(rows, ("NAME", "TYPE", "ENABLED", "MIN", "KINDS", "TARGET", "HOLDER",
                       "DELIVERED", "DROPPED", "LAST DELIVERED", "STATE", "FAILED ATTEMPTS",
                       "LAST ERROR")))
    return 0


def set_notifier(args: argparse.Namespace) -> int:
    if args.kind and args.all_kinds:
        raise ValidationError("--all-kinds", "give either --kind or --all-kinds")
    kinds = [] if args.all_kinds else args.kind
    ctx = open_existing_context()
    try:
        with ctx.db.session() as s:
            store = Notifiers(s, ctx.box)
            n = store.find(args.name)
            secret = KEEP
            if args.new_secret:
                what = "signing key" if n.type is NotifierType.WEBHOOK else "SMTP password"
                secret = read_secret(f"new {what} for {n.name}: ")
            n = store.update(n.id, enabled=args.enabled,  # type: ignore[arg-type]
                             min_severity=args.min_severity, kinds=kinds, secret=secret)
    finally:
        ctx.close()
    print(f"notifier {n.name}: {'enabled' if n.enabled else 'disabled'}, "
          f"{n.min_severity.value} and above, kinds {', '.join(n.kinds) or 'all'}"
          f"{', new secret stored' if args.new_secret else ''}")
    return 0


def remove_notifier(args: argparse.Namespace) -> int:
    ctx = open_existing_context()
    try:
        with ctx.db.session() as s:
            store = Notifiers(s, ctx.box)
            store.remove(store.find(args.name).id)  # type: ignore[arg-type]
    finally:
        ctx.close()
    print(f"notifier {args.name} removed")
    return 0


def test_notifier(args: argparse.Namespace) -> int:
    # Here, not at the top: every `hostpower` command would pay for smtplib and email.
    from hostpower.notify.errors import DeliveryError
    from hostpower.notify.send import probe_event, send_once

    ctx = open_existing_context()
    try:
        with ctx.db.session() as s:
            store = Notifiers(s, ctx.box)
            n = store.find(args.name)
            secret = store.secret(n.id)  # type: ignore[arg-type]
            timeout = float(ConfigStore(s).load()["NotificationTimeoutInSec"])
    finally:
        ctx.close()
    try:
        asyncio.run(send_once(n, secret, probe_event(n, None, None), timeout))
    except DeliveryError as exc:
        raise CliError(f"notifier {n.name}: not delivered: {exc}", 1) from None
    print(f"test message delivered by notifier {n.name} ({_target(n.settings)})")
    return 0
