"""The engine's CA: files and modes, roles, SANs, and what OpenSSL accepts for each role."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import stat
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hostpower.hostagent import pki
from hostpower.model.errors import ValidationError


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def _eku(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


@pytest.fixture
def ca(tmp_path: Path) -> pki.CertificateAuthority:
    return pki.CertificateAuthority.load_or_create(tmp_path / "ca")


def test_load_or_create_makes_a_private_key_and_reuses_it(tmp_path: Path) -> None:
    directory = tmp_path / "pki"
    first = pki.CertificateAuthority.load_or_create(directory)
    assert _mode(directory / "ca.key") == 0o600
    assert (directory / "ca.crt").read_bytes() == first.cert_pem
    again = pki.CertificateAuthority.load_or_create(directory)
    assert again.cert_pem == first.cert_pem

    cert = first.cert
    assert cert.issuer == cert.subject
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    cert.verify_directly_issued_by(cert)


def test_concurrent_first_use_yields_one_ca(tmp_path: Path) -> None:
    directory = tmp_path / "pki"
    results: list[bytes] = []
    lock = threading.Lock()

    def create() -> None:
        pem = pki.CertificateAuthority.load_or_create(directory).cert_pem
        with lock:
            results.append(pem)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 6 and len(set(results)) == 1


def test_load_refuses_a_key_of_another_ca(tmp_path: Path) -> None:
    a = pki.CertificateAuthority.load_or_create(tmp_path / "a")
    pki.CertificateAuthority.load_or_create(tmp_path / "b")
    (tmp_path / "b" / "ca.crt").write_bytes(a.cert_pem)
    with pytest.raises(pki.PKIError, match="does not belong"):
        pki.CertificateAuthority.load(tmp_path / "b")
    with pytest.raises(pki.PKIError, match="missing"):
        pki.CertificateAuthority.load(tmp_path / "nowhere")


def test_agent_certificate_serves_tls_only(ca: pki.CertificateAuthority) -> None:
    bundle = ca.issue("host1", ["host1.example.org", "127.0.0.9", "::1"], "agent", days=30)
    cert = _cert(bundle.cert_pem)
    cert.verify_directly_issued_by(ca.cert)
    assert bundle.ca_pem == ca.cert_pem
    assert _eku(cert) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert pki.role_of(cert) == "agent"
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "host1"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["host1.example.org"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.9"),
                                                       ipaddress.ip_address("::1")]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=30) <= lifetime <= dt.timedelta(days=30, minutes=10)
    key = serialization.load_pem_private_key(bundle.key_pem, password=None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()


def test_engine_certificate_is_a_client_certificate(ca: pki.CertificateAuthority) -> None:
    bundle = ca.issue("hostpower-engine", [], "engine")
    cert = _cert(bundle.cert_pem)
    assert _eku(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert pki.role_of(cert) == "engine"
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)



def test_web_certificate_serves_tls_and_is_no_agent_certificate(
        ca: pki.CertificateAuthority, tmp_path: Path) -> None:
    """The engine's HTTPS certificate: serverAuth, its own role, refused by an agent."""
    from hostpower.hostagent.agent import AgentStartError
    from hostpower.hostagent.server import server_ssl_context

    bundle = ca.issue("hostpower-engine-https", ["127.0.0.1", "localhost"], "web")
    cert = _cert(bundle.cert_pem)
    assert _eku(cert) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert pki.role_of(cert) == "web"
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime <= dt.timedelta(days=398)  # what browsers accept
    paths = pki.write_bundle(bundle, tmp_path / "web")
    with pytest.raises(AgentStartError, match="is not an agent certificate"):
        server_ssl_context(paths.cert, paths.key, paths.ca)

@pytest.mark.parametrize(("args", "field"), [
    (("h", [], "agent"), "sans"),
    (("h", [], "web"), "sans"),
    (("h", ["not a name!"], "agent"), "sans"),
    (("h", ["1.2.3"], "agent"), "sans"),
    (("h", ["h"], "admin"), "role"),
    (("", ["h"], "agent"), "common_name"),
])
def test_issue_refuses_bad_input(ca: pki.CertificateAuthority, args: tuple, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ca.issue(*args)
    assert caught.value.field == field


def test_role_requires_both_marks(ca: pki.CertificateAuthority, tmp_path: Path) -> None:
    """OU and EKU must agree: a CA-signed certificate without an EKU has no role."""
    ca_key = serialization.load_pem_private_key((tmp_path / "ca" / "ca.key").read_bytes(), None)

    def make(ou: str, usages: list[x509.ObjectIdentifier] | None) -> x509.Certificate:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([
                       x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou),
                       x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
                   .issuer_name(ca.cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1)))
        if usages is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        return builder.sign(ca_key, hashes.SHA256())

    assert pki.role_of(make("engine", [ExtendedKeyUsageOID.CLIENT_AUTH])) == "engine"
    assert pki.role_of(make("engine", None)) is None
    assert pki.role_of(make("engine", [ExtendedKeyUsageOID.SERVER_AUTH])) is None
    assert pki.role_of(make("agent", [ExtendedKeyUsageOID.CLIENT_AUTH])) is None
    assert pki.role_of(make("admin", [ExtendedKeyUsageOID.CLIENT_AUTH])) is None
    assert pki.role_of_der(None) is None
    assert pki.role_of_der(b"garbage") is None


def test_write_bundle_and_enroll_host(ca: pki.CertificateAuthority, tmp_path: Path) -> None:
    paths = pki.enroll_host(ca, "node7.lab", ["127.0.7.1", "127.0.7.2"], tmp_path / "node7")
    assert paths.cert == tmp_path / "node7" / "agent.crt"
    assert paths.key == tmp_path / "node7" / "agent.key"
    assert paths.ca.read_bytes() == ca.cert_pem
    assert _mode(paths.key) == 0o600
    cert = _cert(paths.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["node7.lab"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.7.1", "127.0.7.2"]
    assert pki.role_of(cert) == "agent"
    # The files form a usable server identity.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(paths.cert, paths.key)


def test_ensure_engine_certificate_reuses_then_renews(ca: pki.CertificateAuthority,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "engine"
    first = pki.ensure_engine_certificate(ca, out)
    assert first.cert.name == "engine.crt" and _mode(first.key) == 0o600
    pem = first.cert.read_bytes()
    assert pki.ensure_engine_certificate(ca, out).cert.read_bytes() == pem
    # Expiring soon: renewed.
    assert pki.ensure_engine_certificate(ca, out, renew_before=dt.timedelta(days=10_000)) \
        .cert.read_bytes() != pem
    # Another CA: reissued under it.
    other = pki.CertificateAuthority.load_or_create(tmp_path / "other")
    renewed = pki.ensure_engine_certificate(other, out)
    _cert(renewed.cert.read_bytes()).verify_directly_issued_by(other.cert)
    assert renewed.ca.read_bytes() == other.cert_pem



def _sans(path: Path) -> set[str]:
    names = _cert(path.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    return {str(n.value) for n in names}


def test_ensure_web_certificate_reuses_then_reissues(ca: pki.CertificateAuthority,
                                                     tmp_path: Path) -> None:
    out = tmp_path / "web"
    first = pki.ensure_web_certificate(ca, out, ["127.0.0.1", "localhost"])
    assert (first.cert.name, first.key.name) == ("web.crt", "web.key")
    assert _mode(first.key) == 0o600 and _mode(out) == 0o700
    assert pki.role_of(_cert(first.cert.read_bytes())) == "web"
    pem = first.cert.read_bytes()
    # Same names (in any case, or fewer): reused.
    assert pki.ensure_web_certificate(ca, out, ["LOCALHOST"]).cert.read_bytes() == pem
    # A bind address it does not name: reissued, naming it.
    moved = pki.ensure_web_certificate(ca, out, ["10.0.0.5", "localhost"])
    assert _sans(moved.cert) == {"10.0.0.5", "localhost"}
    pem = moved.cert.read_bytes()
    # Expiring soon: renewed.
    assert pki.ensure_web_certificate(ca, out, ["10.0.0.5"],
                                      renew_before=dt.timedelta(days=10_000)) \
        .cert.read_bytes() != pem
    # A key that is not the certificate's (a torn write): reissued.
    pem = moved.cert.read_bytes()
    moved.key.write_bytes(ca.issue("x", ["x"], "web").key_pem)
    again = pki.ensure_web_certificate(ca, out, ["10.0.0.5"])
    assert again.cert.read_bytes() != pem
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(again.cert, again.key)
    # Another CA: reissued under it.
    other = pki.CertificateAuthority.load_or_create(tmp_path / "other")
    renewed = pki.ensure_web_certificate(other, out, ["10.0.0.5"])
    _cert(renewed.cert.read_bytes()).verify_directly_issued_by(other.cert)

def test_openssl_enforces_the_roles(ca: pki.CertificateAuthority, tmp_path: Path) -> None:
    """The EKUs do real work: OpenSSL verifies them per TLS side, before our own checks."""
    agent = pki.write_bundle(ca.issue("a", ["127.0.0.1"], "agent"), tmp_path / "a")
    engine = pki.write_bundle(ca.issue("e", [], "engine"), tmp_path / "e")

    def verify(purpose: str, cert: Path) -> bool:
        done = subprocess.run(["openssl", "verify", "-CAfile", str(agent.ca), "-purpose",
                               purpose, str(cert)], capture_output=True, text=True, timeout=30)
        return done.returncode == 0

    assert verify("sslserver", agent.cert) and not verify("sslclient", agent.cert)
    assert verify("sslclient", engine.cert) and not verify("sslserver", engine.cert)
