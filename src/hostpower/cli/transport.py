"""What `hostpower serve` serves: HTTPS by default, plain HTTP only when asked.

PM passwords, bearer tokens and session cookies cross the engine's front door,
so the engine serves TLS on every address unless the operator says otherwise:

* with `--tls-cert FILE --tls-key FILE`, the operator's certificate;
* else a certificate the engine issues itself from its own CA
  (HOSTPOWER_HOME/pki/web/web.crt), naming the bind address, localhost and the
  machine's host name; clients trust HOSTPOWER_HOME/pki/ca.crt;
* `--plain-http` serves plain HTTP: silently on loopback (nothing crosses a
  network), with a WARNING on any other address. Where plain HTTP is only a
  default (`hostpower demo`), an address off loopback is refused instead.

`choose_transport` decides, and checks the operator's files, before anything
is created or bound: bad input exits 2 with nothing done.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import socket
import ssl
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from hostpower.cli.common import CliError
from hostpower.hostagent.pki import (
    CertificateAuthority, PKIError, ensure_web_certificate, parse_san,
)
from hostpower.model.errors import ValidationError
from hostpower.settings import Settings

log = logging.getLogger("hostpower.serve")

HSTS = ("Strict-Transport-Security", "max-age=31536000")
WEB_CERT_DIR = "web"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_WILDCARDS = ("0.0.0.0", "::")


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: traffic that never leaves the machine."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def plain_http_warning(host: str) -> str:
    return (f"WARNING: serving plain HTTP on {host}, which is not a loopback address: "
            f"passwords, API tokens and session cookies will cross the network in clear. "
            f"Drop --plain-http to serve HTTPS.")


@dataclass(frozen=True)
class Transport:
    """How the engine answers: TLS with a certificate and key, or plain HTTP.

    For TLS without `cert_file`, the engine issues its own certificate
    (`with_engine_certificate`) once the decision stands.
    """

    tls: bool
    cert_file: Path | None = None
    key_file: Path | None = None
    warning: str | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def engine_issued(self) -> bool:
        return self.tls and self.cert_file is None


def choose_transport(host: str, *, plain_http: bool, tls_cert: str | None = None,
                     tls_key: str | None = None, plain_by_default: bool = False) -> Transport:
    """The transport for a bind address and the options given; ValidationError
    (exit 2, naming the option) when they do not go together.

    `plain_by_default` is for the demo: plain HTTP on loopback without asking,
    refused elsewhere unless `plain_http` says the operator accepts it.
    """
    if tls_cert is not None or tls_key is not None:
        if plain_http:
            raise ValidationError("--plain-http", "cannot go with --tls-cert/--tls-key: "
                                  "choose HTTPS or plain HTTP")
        if tls_cert is None:
            raise ValidationError("--tls-cert", "--tls-key needs --tls-cert (the certificate)")
        if tls_key is None:
            raise ValidationError("--tls-key", "--tls-cert needs --tls-key (its private key)")
        cert, key = check_operator_certificate(tls_cert, tls_key)
        return Transport(tls=True, cert_file=cert, key_file=key)
    if plain_http:
        return Transport(tls=False, warning=None if is_loopback(host) else plain_http_warning(host))
    if not plain_by_default:
        return Transport(tls=True)
    if is_loopback(host):
        return Transport(tls=False)
    raise ValidationError("--bind", f"refusing plain HTTP on {host}, which is not a loopback "
                          f"address: passwords, tokens and cookies would cross the network "
                          f"in clear. Bind 127.0.0.1, or add --plain-http to accept that")


# -- the operator's certificate -----------------------------------------------------------

def check_operator_certificate(cert_file: str, key_file: str) -> tuple[Path, Path]:
    """Both files readable, PEM, the key unencrypted, not readable by others,
    and matching the certificate; OpenSSL must accept the pair. An expired
    certificate is only warned about: refusing it would stop fencing too."""
    cert_path, key_path = Path(cert_file).absolute(), Path(key_file).absolute()
    cert_bytes = _read("--tls-cert", cert_path)
    key_bytes = _read("--tls-key", key_path)
    try:
        chain = x509.load_pem_x509_certificates(cert_bytes)
    except ValueError:
        raise ValidationError("--tls-cert", f"{cert_path} holds no PEM certificate") from None
    mode = stat.S_IMODE(key_path.stat().st_mode)
    if mode & 0o007:
        raise ValidationError("--tls-key", f"{key_path} is accessible to other users (mode "
                              f"{mode:04o}): chmod 600 it")
    try:
        key = serialization.load_pem_private_key(key_bytes, password=None)
    except TypeError:  # encrypted: the engine would need its passphrase, a secret to keep elsewhere
        raise ValidationError("--tls-key", f"{key_path} is encrypted: give an unencrypted key "
                              f"readable only by the engine (mode 0600)") from None
    except (ValueError, ssl.SSLError):  # never echo what the file holds: it is a private key
        raise ValidationError("--tls-key", f"{key_path} holds no PEM private key") from None
    leaf = chain[0]
    if _spki(key.public_key()) != _spki(leaf.public_key()):
        raise ValidationError("--tls-key", f"{key_path} does not match the certificate in "
                              f"--tls-cert {cert_path}")
    try:
        server_ssl_context(cert_path, key_path)
    except ssl.SSLError as exc:
        raise ValidationError("--tls-cert", f"OpenSSL refuses {cert_path} with its key: "
                              f"{exc.reason or exc}") from None
    now = dt.datetime.now(dt.timezone.utc)
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        log.warning("the certificate in %s is valid only from %s to %s: clients will "
                    "refuse it", cert_path, leaf.not_valid_before_utc, leaf.not_valid_after_utc)
    return cert_path, key_path


def _read(option: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ValidationError(option, f"{path} does not exist") from None
    except IsADirectoryError:
        raise ValidationError(option, f"{path} is a directory, not a PEM file") from None
    except OSError as exc:
        raise ValidationError(option, f"cannot read {path}: {exc.strerror}") from None


def _spki(public_key: object) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


# -- the engine's own certificate ---------------------------------------------------------

def web_sans(host: str) -> list[str]:
    """What the engine's certificate must name: the bind address (unless it is
    a wildcard), loopback, and this machine's names and their addresses."""
    names = [] if host in _WILDCARDS else [host]
    names += LOOPBACK_NAMES
    for name in {socket.gethostname(), socket.getfqdn()}:
        names.append(name)
        if host in _WILDCARDS:  # clients may dial any of the machine's addresses
            names += _addresses_of(name)
    return [n for n in names if _usable_san(n)]


def _addresses_of(name: str) -> list[str]:
    try:
        return sorted({str(info[4][0]) for info in socket.getaddrinfo(name, None)})
    except OSError:
        return []


def _usable_san(name: str) -> bool:
    try:
        parse_san(name)
        return True
    except ValidationError:  # e.g. a host name with an underscore
        return False


def with_engine_certificate(transport: Transport, settings: Settings, host: str) -> Transport:
    """The engine-issued certificate for `host`, reused or (re)issued."""
    if not transport.engine_issued:
        return transport
    try:
        ca = CertificateAuthority.load_or_create(settings.pki_dir)
        paths = ensure_web_certificate(ca, settings.pki_dir / WEB_CERT_DIR, web_sans(host))
    except (PKIError, OSError) as exc:
        raise CliError(f"cannot issue the engine's HTTPS certificate: {exc} (or give "
                       f"--tls-cert/--tls-key)", 1) from None
    return Transport(tls=True, cert_file=paths.cert, key_file=paths.key)


def server_ssl_context(cert_file: os.PathLike[str] | str,
                       key_file: os.PathLike[str] | str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert_file), str(key_file))
    return context


def uvicorn_tls_options(transport: Transport) -> dict[str, object]:
    """The keyword arguments that make uvicorn serve `transport`: our own TLS
    context (TLS 1.2 at least) and HSTS on every response, error pages too."""
    if not transport.tls:
        return {}
    assert transport.cert_file is not None and transport.key_file is not None
    context = server_ssl_context(transport.cert_file, transport.key_file)
    factory: Callable[[object, object], ssl.SSLContext] = lambda _config, _default: context
    return {"ssl_context_factory": factory, "headers": [HSTS]}
