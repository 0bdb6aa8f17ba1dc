"""The engine's certificate authority and the certificates it issues.

Why a private CA: the engine and its host agents authenticate each other with
mutual TLS, and the only party either side should trust is the engine. So the
engine keeps its own CA (EC P-256, SHA-256), uses it as the sole trust anchor
on both sides, and encodes in every leaf certificate which *role* it plays:

* ``agent``  - a host agent. Extended key usage serverAuth only: it serves
  TLS, and OpenSSL refuses it as a client certificate, so one agent cannot
  command another.
* ``engine`` - the engine's client certificate. Extended key usage clientAuth
  only: it cannot impersonate an agent.
* ``web``    - the engine's HTTPS server certificate (REST API and web
  console, `hostpower serve`). serverAuth like an agent's, but its own OU, so
  an agent refuses to start with it (`role_of` is not ``agent``).

The role is also written as the subject's organizational unit, so that
`role_of` can state it explicitly instead of inferring it from usages alone.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import ipaddress
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hostpower.model.errors import HostpowerError, ValidationError
from hostpower.model.proxychain import is_host_name_or_ip

Role = Literal["agent", "engine", "web"]
ROLE_AGENT: Role = "agent"
ROLE_ENGINE: Role = "engine"
ROLE_WEB: Role = "web"
_ROLE_USAGE = {
    ROLE_AGENT: ExtendedKeyUsageOID.SERVER_AUTH,
    ROLE_ENGINE: ExtendedKeyUsageOID.CLIENT_AUTH,
    ROLE_WEB: ExtendedKeyUsageOID.SERVER_AUTH,
}
# Roles whose certificate is checked against the name a client dialled.
_NEEDS_SANS = (ROLE_AGENT, ROLE_WEB)

ORGANIZATION = "hostpower"
CA_COMMON_NAME = "hostpower engine CA"
CA_DAYS = 3650
AGENT_DAYS = 825
ENGINE_DAYS = 825
ENGINE_COMMON_NAME = "hostpower-engine"
# Browsers refuse server certificates valid for more than 398 days.
WEB_DAYS = 397
WEB_COMMON_NAME = "hostpower-engine-https"
# Certificates start slightly in the past so that a host whose clock lags
# the engine's a little does not reject a freshly issued certificate.
_BACKDATE = dt.timedelta(minutes=5)

CA_KEY_FILE = "ca.key"
CA_CERT_FILE = "ca.crt"


class PKIError(HostpowerError):
    """The CA directory or a certificate file is unusable."""


@dataclass(frozen=True)
class CertificateBundle:
    """A freshly issued certificate with its private key and the CA certificate (PEM)."""

    common_name: str
    role: Role
    sans: tuple[str, ...]
    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes
    not_after: dt.datetime


@dataclass(frozen=True)
class BundlePaths:
    """Where `write_bundle` put the files."""

    cert: Path
    key: Path
    ca: Path


# --------------------------------------------------------------------------- helpers


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Write atomically (temp file + rename), with `mode` from the very first byte.

    A private key must never exist on disk, even briefly, with a wider mode.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # O_CREAT's mode is filtered by the umask; fchmod is not
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def parse_san(text: str) -> x509.GeneralName:
    """One subject alternative name: an IP address if it parses as one, else a DNS name."""
    value = text.strip() if isinstance(text, str) else text
    if not isinstance(value, str) or not value:
        raise ValidationError("sans", "a subject alternative name must not be empty")
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        pass
    if not is_host_name_or_ip(value):
        raise ValidationError("sans", f"{value!r} is neither an IP address nor a DNS name")
    return x509.DNSName(value.lower())


def role_of(cert: x509.Certificate) -> Role | None:
    """The role a certificate was issued for, or None when it has no consistent one.

    Both marks must agree: the subject's OU names the role and the extended
    key usage carries that role's purpose. A CA-signed certificate that lacks
    either (e.g. no EKU at all) has no role and is trusted for nothing.
    """
    units = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    if len(units) != 1:
        return None
    role = units[0].value
    if role not in _ROLE_USAGE:
        return None
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if _ROLE_USAGE[role] not in usages:  # type: ignore[index]
        return None
    return role  # type: ignore[return-value]


def role_of_der(der: bytes | None) -> Role | None:
    """`role_of` for the DER bytes that `ssl.SSLSocket.getpeercert(True)` returns."""
    if not der:
        return None
    try:
        return role_of(x509.load_der_x509_certificate(der))
    except ValueError:
        return None


def describe_der(der: bytes | None) -> str:
    """A short human description of a peer certificate, for log lines."""
    if not der:
        return "no certificate"
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return "an unparsable certificate"
    return cert.subject.rfc4514_string()


# --------------------------------------------------------------------------- the CA


class CertificateAuthority:
    """The engine's CA: one EC P-256 key (ca.key, mode 0600) and its self-signed ca.crt."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate,
                 directory: Path | None = None) -> None:
        self._key = key
        self.cert = cert
        self.directory = directory

    # ---- loading

    @classmethod
    def load_or_create(cls, directory: str | os.PathLike[str]) -> "CertificateAuthority":
        """Load the CA from `directory`, creating it there on first use.

        A lock file serializes creation, so two engine processes starting at
        once cannot end up with two different CAs.
        """
        path = Path(directory)
        if (path / CA_KEY_FILE).exists() and (path / CA_CERT_FILE).exists():
            return cls.load(path)  # the usual case, which writes nothing (a read-only home)
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        with _locked(path / ".ca.lock"):
            key_path, cert_path = path / CA_KEY_FILE, path / CA_CERT_FILE
            if key_path.exists() or cert_path.exists():
                return cls.load(path)
            ca = cls.create()
            ca.directory = path
            _write_file(cert_path, ca.cert_pem, 0o644)
            _write_file(key_path, _private_key_pem(ca._key), 0o600)
            return ca

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> "CertificateAuthority":
        path = Path(directory)
        key_path, cert_path = path / CA_KEY_FILE, path / CA_CERT_FILE
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except FileNotFoundError as exc:
            raise PKIError(f"CA directory {path}: {exc.filename} is missing") from None
        except ValueError as exc:
            raise PKIError(f"CA directory {path}: unreadable key or certificate ({exc})") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PKIError(f"{key_path}: not an EC private key")
        if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
            raise PKIError(f"{key_path} does not belong to {cert_path}")
        return cls(key, cert, path)

    @classmethod
    def create(cls, common_name: str = CA_COMMON_NAME, days: int = CA_DAYS) -> "CertificateAuthority":
        """A new CA in memory (`load_or_create` is the usual entry point)."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ])
        now = _now()
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(digital_signature=False, content_commitment=False,
                              key_encipherment=False, data_encipherment=False,
                              key_agreement=False, key_cert_sign=True, crl_sign=True,
                              encipher_only=False, decipher_only=False),
                critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    # ---- issuing

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def ca_path(self) -> Path | None:
        return None if self.directory is None else self.directory / CA_CERT_FILE

    def issue(self, common_name: str, sans: Iterable[str], role: Role,
              days: int | None = None) -> CertificateBundle:
        """Issue a leaf certificate with a new EC P-256 key for one role.

        An agent or web certificate needs at least one SAN: clients check the
        address they dialled against it. The engine's client certificate may
        have none.
        """
        if role not in _ROLE_USAGE:
            raise ValidationError("role", f"{role!r} is not a role (agent, engine or web)")
        if not isinstance(common_name, str) or not common_name.strip() or len(common_name) > 64:
            raise ValidationError("common_name", "must be 1 to 64 characters")
        if days is None:
            days = {ROLE_AGENT: AGENT_DAYS, ROLE_ENGINE: ENGINE_DAYS, ROLE_WEB: WEB_DAYS}[role]
        if isinstance(days, bool) or not isinstance(days, int) or days < 1:
            raise ValidationError("days", f"{days!r} is not a positive number of days")
        names = _unique(sans)
        if role in _NEEDS_SANS and not names:
            raise ValidationError("sans",
                                  f"an {role} certificate needs at least one DNS name or IP")
        general_names = [parse_san(s) for s in names]

        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        not_after = min(now + dt.timedelta(days=days), self.cert.not_valid_after_utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name.strip()),
            ]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(digital_signature=True, content_commitment=False,
                              key_encipherment=False, data_encipherment=False,
                              key_agreement=False, key_cert_sign=False, crl_sign=False,
                              encipher_only=False, decipher_only=False),
                critical=True)
            .add_extension(x509.ExtendedKeyUsage([_ROLE_USAGE[role]]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False)
        )
        if general_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(general_names),
                                            critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return CertificateBundle(
            common_name=common_name.strip(), role=role, sans=tuple(names),
            cert_pem=cert.public_bytes(serialization.Encoding.PEM),
            key_pem=_private_key_pem(key), ca_pem=self.cert_pem, not_after=not_after,
        )


def _unique(sans: Iterable[str]) -> list[str]:
    if isinstance(sans, str):  # a lone string would otherwise be split into letters
        sans = [sans]
    seen: set[str] = set()
    result = []
    for s in sans:
        key = s.strip().lower() if isinstance(s, str) else s
        if key not in seen:
            seen.add(key)
            result.append(s.strip() if isinstance(s, str) else s)
    return result


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- files


def write_bundle(bundle: CertificateBundle, directory: str | os.PathLike[str]) -> BundlePaths:
    """Write <role>.crt, <role>.key (0600) and ca.crt into `directory`.

    For an agent bundle that is agent.crt/agent.key/ca.crt, the layout the
    agent's --cert-dir expects; the engine's bundle becomes engine.crt/engine.key.
    """
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths = BundlePaths(cert=path / f"{bundle.role}.crt", key=path / f"{bundle.role}.key",
                        ca=path / CA_CERT_FILE)
    _write_file(paths.key, bundle.key_pem, 0o600)
    _write_file(paths.cert, bundle.cert_pem, 0o644)
    _write_file(paths.ca, bundle.ca_pem, 0o644)
    return paths


def enroll_host(ca: CertificateAuthority, host_name: str, addresses: Iterable[str],
                out_dir: str | os.PathLike[str], days: int = AGENT_DAYS) -> BundlePaths:
    """Issue and write a host agent's certificate in one step (`hostpower host enroll`).

    The certificate names the host (CN) and carries every address the engine
    may use to reach it as a SAN, plus the host name itself when it is a
    valid DNS name. Copy `out_dir` to the host's agent --cert-dir.
    """
    if isinstance(addresses, str):
        addresses = [addresses]
    sans = list(addresses)
    if is_host_name_or_ip(host_name):
        sans.append(host_name)
    bundle = ca.issue(host_name, sans, ROLE_AGENT, days)
    return write_bundle(bundle, out_dir)


def ensure_engine_certificate(ca: CertificateAuthority, out_dir: str | os.PathLike[str],
                              common_name: str = ENGINE_COMMON_NAME,
                              days: int = ENGINE_DAYS,
                              renew_before: dt.timedelta = dt.timedelta(days=30)) -> BundlePaths:
    """The engine's client certificate: reuse the one in `out_dir`, or issue a new one.

    A new one is issued when none exists, when it was signed by another CA,
    or when it expires within `renew_before`.
    """
    path = Path(out_dir)
    paths = BundlePaths(cert=path / "engine.crt", key=path / "engine.key", ca=path / CA_CERT_FILE)
    if paths.cert.exists() and paths.key.exists() and paths.ca.exists():
        try:
            cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
            current = (
                paths.ca.read_bytes() == ca.cert_pem
                and cert.issuer == ca.cert.subject
                and _signed_by(cert, ca.cert)
                and role_of(cert) == ROLE_ENGINE
                and cert.not_valid_after_utc - renew_before > _now()
            )
        except ValueError:
            current = False
        if current:
            return paths
    return write_bundle(ca.issue(common_name, [], ROLE_ENGINE, days), path)


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False


def ensure_web_certificate(ca: CertificateAuthority, out_dir: str | os.PathLike[str],
                           sans: Iterable[str], common_name: str = WEB_COMMON_NAME,
                           days: int = WEB_DAYS,
                           renew_before: dt.timedelta = dt.timedelta(days=30)) -> BundlePaths:
    """The engine's HTTPS certificate (web.crt, web.key 0600, ca.crt in `out_dir`).

    The one there is reused while it is current: signed by this CA, role web,
    its key matching, not expiring within `renew_before`, and naming every
    one of `sans` (the bind address among them). Otherwise a new one is issued
    for `sans`. A lock keeps two engines starting at once from pairing one's
    certificate with the other's key.
    """
    path = Path(out_dir)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    wanted = {parse_san(s) for s in _unique(sans)}
    paths = BundlePaths(cert=path / f"{ROLE_WEB}.crt", key=path / f"{ROLE_WEB}.key",
                        ca=path / CA_CERT_FILE)
    with _locked(path / ".web.lock"):
        if _current_web_certificate(ca, paths, wanted, renew_before):
            return paths
        return write_bundle(ca.issue(common_name, _unique(sans), ROLE_WEB, days), path)


def _current_web_certificate(ca: CertificateAuthority, paths: BundlePaths,
                             wanted: set[x509.GeneralName], renew_before: dt.timedelta) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
        key = serialization.load_pem_private_key(paths.key.read_bytes(), password=None)
        ca_pem = paths.ca.read_bytes()
        names = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except (OSError, ValueError, TypeError, x509.ExtensionNotFound):
        return False
    return (
        ca_pem == ca.cert_pem
        and _signed_by(cert, ca.cert)
        and role_of(cert) == ROLE_WEB
        and _public_bytes(key.public_key()) == _public_bytes(cert.public_key())
        and cert.not_valid_after_utc - renew_before > _now()
        and wanted <= names
    )


def _public_bytes(key: object) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                            serialization.PublicFormat.SubjectPublicKeyInfo)
