"""A mail delivery: one message to the notifier's recipients through its
SMTP server (STARTTLS, TLS from the start, or none), with a login when a
user name is set. Blocking (smtplib), run in a worker thread, every socket
operation bounded by the timeout."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from hostpower.model.events import Event
from hostpower.model.notification import mail_text, subject
from hostpower.model.notifiers import Notifier, SmtpSecurity, SmtpSettings
from hostpower.model.secret import Secret
from hostpower.notify.errors import DeliveryError
from hostpower.notify.webhook import tls_context


def message(notifier: Notifier, event: Event) -> EmailMessage:
    settings = notifier.settings
    assert isinstance(settings, SmtpSettings)
    msg = EmailMessage()
    msg["From"] = settings.sender
    msg["To"] = ", ".join(settings.recipients)
    msg["Subject"] = subject(event).replace("\r", " ").replace("\n", " ")
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = make_msgid("hostpower", settings.sender.rsplit("@", 1)[1])
    if event.id is not None:
        msg["X-Hostpower-Event"] = str(event.id)
    msg.set_content(mail_text(event, notifier.name))
    return msg


def send(notifier: Notifier, password: Secret | None, event: Event, timeout: float) -> None:
    settings = notifier.settings
    assert isinstance(settings, SmtpSettings)
    msg = message(notifier, event)
    where = f"{settings.host}:{settings.port}"
    try:
        context = tls_context(settings.ca_file)
        if settings.security is SmtpSecurity.SSL:
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(settings.host, settings.port, timeout=timeout,
                                                  context=context)
        else:
            smtp = smtplib.SMTP(settings.host, settings.port, timeout=timeout)
        with smtp:
            if settings.security is SmtpSecurity.STARTTLS:
                smtp.starttls(context=context)
            if settings.username:
                if not password:
                    raise DeliveryError("no SMTP password is stored for the login", retry=False)
                smtp.login(settings.username, password.reveal())
            smtp.send_message(msg, from_addr=settings.sender,
                              to_addrs=list(settings.recipients))
    except DeliveryError:
        raise
    except smtplib.SMTPResponseException as exc:
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) \
            else str(exc.smtp_error)
        raise DeliveryError(f"SMTP {where} answered {exc.smtp_code} {text}",
                            retry=exc.smtp_code < 500) from None
    except smtplib.SMTPRecipientsRefused as exc:
        refused = ", ".join(f"{r} ({c})" for r, (c, _) in exc.recipients.items())
        raise DeliveryError(f"SMTP {where} refused every recipient: {refused}",
                            retry=False) from None
    except TimeoutError:
        raise DeliveryError(f"SMTP {where}: no answer within {timeout:g} s") from None
    except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
        raise DeliveryError(f"SMTP {where}: {type(exc).__name__}: {exc}") from None
