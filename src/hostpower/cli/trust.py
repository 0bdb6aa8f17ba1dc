"""Which certificate authorities a `hostpower` command trusts when it talks to
an engine over https, and what to tell the operator when that fails.

* `--ca-file FILE` (or HOSTPOWER_CA_FILE): exactly the CAs in FILE.
* Otherwise the system trust store, plus the engine's own CA
  (HOSTPOWER_HOME/pki/ca.crt) when that file exists: on the engine's machine
  the engine-issued certificate verifies with no option, and an operator's
  certificate from a public or company CA still does.

Verification is never switched off.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx

from hostpower.hostagent.pki import CA_CERT_FILE
from hostpower.model.errors import ValidationError
from hostpower.settings import Settings

CA_FILE_OPTION = "--ca-file"
CA_FILE_ENV = "HOSTPOWER_CA_FILE"


@dataclass(frozen=True)
class Trust:
    """A TLS client context and, for messages, what it trusts."""

    context: ssl.SSLContext
    description: str


def engine_ca_file(settings: Settings) -> Path:
    return settings.pki_dir / CA_CERT_FILE


def client_trust(ca_file: str | None, settings: Settings) -> Trust:
    """The trust for `ca_file` (from the option or the environment), else the default."""
    if ca_file:
        path = Path(ca_file).absolute()
        if not path.is_file():
            raise ValidationError(f"{CA_FILE_OPTION} (or {CA_FILE_ENV})",
                                  f"{path} does not exist or is not a file")
        try:
            context = ssl.create_default_context(cafile=str(path))
        except (ssl.SSLError, OSError):
            raise ValidationError(f"{CA_FILE_OPTION} (or {CA_FILE_ENV})",
                                  f"{path} holds no PEM CA certificate") from None
        return Trust(context, f"the CA file {path}")
    context = ssl.create_default_context()
    engine_ca = engine_ca_file(settings)
    if engine_ca.is_file():
        try:
            context.load_verify_locations(cafile=str(engine_ca))
            return Trust(context, f"the system trust store and the engine CA {engine_ca}")
        except (ssl.SSLError, OSError):
            pass  # unreadable: the system store alone, and the message says so
    return Trust(context, "the system trust store")


def _causes(exc: BaseException) -> list[BaseException]:
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in found:
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


def tls_failure(exc: httpx.TransportError, url: str, trust: Trust | None) -> str | None:
    """A one-line explanation when `exc` is a TLS failure, else None."""
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            trusted = trust.description if trust else "the default trust"
            return (f"cannot verify the engine at {url}: {cause.verify_message or cause.reason} "
                    f"(trusting {trusted}); give the CA that issued its certificate with "
                    f"{CA_FILE_OPTION} FILE or {CA_FILE_ENV} (an engine's own CA is "
                    f"HOSTPOWER_HOME/pki/{CA_CERT_FILE} on its machine)")
        if isinstance(cause, ssl.SSLError):
            return (f"TLS with the engine at {url} failed: {cause.reason or cause} "
                    f"(does it serve https? an engine run with --plain-http needs an http:// URL)")
    return None
