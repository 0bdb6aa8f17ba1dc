"""The engine's front door: `hostpower serve` over HTTPS by default, plain HTTP
only when asked, and the `hostpower` client verifying the engine.

Real `hostpower serve` processes on loopback, real TLS; every engine a test
starts is stopped by it (servekit.running_engine). No traffic is sent to a
non-loopback address: the one engine bound to 0.0.0.0 is reached via 127.0.0.1.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from helpers import free_port
from hostpower.cli.fence_cmd import warn_if_in_clear
from hostpower.cli.transport import choose_transport, is_loopback, web_sans
from hostpower.hostagent import pki
from hostpower.model.errors import ValidationError
from servekit import HOSTPOWER, engine_ca, running_engine

PASSWORD = "https-admin-password"
HSTS = "max-age=31536000"


def clean_env(home: Path) -> dict[str, str]:
    """The command's environment: HOSTPOWER_HOME only (SQLite under it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOSTPOWER_")}
    env["HOSTPOWER_HOME"] = str(home)
    return env


def hostpower(env: dict[str, str], *args: str,
              stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(HOSTPOWER + list(args), env=env, input=stdin, capture_output=True,
                          text=True, timeout=60)


@dataclass
class TlsEngine:
    url: str
    port: int
    home: Path
    env: dict[str, str]
    log: Path

    @property
    def ca(self) -> ssl.SSLContext:
        return engine_ca(self.home)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsEngine]:
    """One engine for the module, with its engine-issued certificate (the default)."""
    tmp = tmp_path_factory.mktemp("https")
    env = clean_env(tmp / "home")
    added = hostpower(env, "user", "add", "admin", "--role", "admin", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    with running_engine(env, url, tmp / "engine.log"):
        yield TlsEngine(url, port, tmp / "home", env, tmp / "engine.log")


def peer_certificate(port: int, context: ssl.SSLContext, name: str = "127.0.0.1",
                     address: str = "127.0.0.1") -> x509.Certificate:
    """The certificate the engine at address:port serves, verified for `name`."""
    with socket.create_connection((address, port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=name) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


# -- the engine-issued certificate --------------------------------------------------------

def test_serve_announces_https_and_where_clients_find_the_ca(engine: TlsEngine) -> None:
    text = engine.log.read_text()
    assert f"listening on https://127.0.0.1:{engine.port}/" in text
    assert f"clients trust {engine.home / 'pki' / 'ca.crt'}" in text
    assert "WARNING" not in text


def test_the_engine_certificate_verifies_with_the_engine_ca(engine: TlsEngine) -> None:
    cert = peer_certificate(engine.port, engine.ca, "127.0.0.1")
    assert pki.role_of(cert) == "web"
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"127.0.0.1", "::1", "localhost"} <= {str(n.value) for n in names}
    # The name an operator on the machine types verifies too.
    assert peer_certificate(engine.port, engine.ca, "localhost") == cert
    web = engine.home / "pki" / "web"
    assert oct(os.stat(web / "web.key").st_mode & 0o777) == "0o600"
    assert x509.load_pem_x509_certificate((web / "web.crt").read_bytes()) == cert


def test_a_client_without_the_engine_ca_fails_verification(engine: TlsEngine) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        peer_certificate(engine.port, ssl.create_default_context())  # system store only
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{engine.url}/api/health")


def _ip_sans(cert: x509.Certificate) -> list[str]:
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]


def test_the_certificate_is_reused_until_the_address_changes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = clean_env(home)
    issued = home / "pki" / "web" / "web.crt"
    seen = []
    for address in ("127.0.0.3", "127.0.0.3", "127.0.0.4"):  # restart, then move
        port = free_port(address)
        with running_engine(env, f"https://{address}:{port}", tmp_path / "engine.log"):
            cert = peer_certificate(port, engine_ca(home), address, address)
        assert address in _ip_sans(cert)
        assert x509.load_pem_x509_certificate(issued.read_bytes()) == cert
        seen.append(cert)
    assert seen[0] == seen[1] and seen[2] != seen[1]


# -- HSTS and the session cookie ----------------------------------------------------------

@pytest.mark.parametrize("method, path, status", [
    ("GET", "/api/health", 200),
    ("GET", "/api/hosts", 401),       # refused: still HSTS
    ("GET", "/api/no-such-thing", 404),
    ("GET", "/", 200),                # the web console
])
def test_every_response_carries_hsts(engine: TlsEngine, method: str, path: str,
                                     status: int) -> None:
    r = httpx.request(method, f"{engine.url}{path}", verify=engine.ca)
    assert r.status_code == status
    assert r.headers["strict-transport-security"] == HSTS


def test_the_session_cookie_is_secure_over_https(engine: TlsEngine) -> None:
    """Under uvicorn with TLS the request's scheme really is https: the cookie
    gets Secure, and the browser's Origin https://127.0.0.1:PORT is the engine's own."""
    r = httpx.post(f"{engine.url}/api/session", verify=engine.ca,
                   headers={"Origin": engine.url},
                   json={"username": "admin", "password": PASSWORD})
    assert r.status_code == 200, r.text
    attributes = [a.strip().lower() for a in r.headers["set-cookie"].split(";")]
    assert "secure" in attributes and "httponly" in attributes
    assert "samesite=strict" in attributes


# -- the hostpower command as a client ----------------------------------------------------

def test_the_command_trusts_the_engine_ca_of_hostpower_home(engine: TlsEngine) -> None:
    """No option on the engine's machine; HOSTPOWER_CA_FILE or --ca-file elsewhere.
    (`ghost` is not a host: getting that answer means the login over TLS worked.)"""
    ca_file = engine.home / "pki" / "ca.crt"
    elsewhere = clean_env(engine.home.parent / "elsewhere")
    for env, options in ((engine.env, ()),
                         ({**elsewhere, "HOSTPOWER_CA_FILE": str(ca_file)}, ()),
                         (elsewhere, ("--ca-file", str(ca_file)))):
        r = hostpower({**env, "HOSTPOWER_PASSWORD": PASSWORD}, "fence", "ghost", "status",
                      "--url", engine.url, *options)
        assert r.returncode == 2, r.stderr
        assert f"host 'ghost' not found at {engine.url}" in r.stderr


def test_a_wrong_ca_fails_with_one_clear_line(engine: TlsEngine, tmp_path: Path) -> None:
    other = pki.CertificateAuthority.load_or_create(tmp_path / "other-ca")
    assert other.ca_path is not None
    cases = [
        ((engine.env, "--ca-file", str(other.ca_path)), f"the CA file {other.ca_path}"),
        ((clean_env(tmp_path / "no-home"),), "the system trust store"),
    ]
    for (env, *options), trusted in cases:
        r = hostpower({**env, "HOSTPOWER_PASSWORD": PASSWORD}, "fence", "h1", "status",
                      "--url", engine.url, *options)
        assert r.returncode == 1
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
        assert lines[0].startswith(f"hostpower: cannot verify the engine at {engine.url}: ")
        assert f"trusting {trusted}" in lines[0] and "--ca-file" in lines[0]
        assert PASSWORD not in r.stderr + r.stdout


def test_a_missing_ca_file_is_bad_input(engine: TlsEngine, tmp_path: Path) -> None:
    r = hostpower({**engine.env, "HOSTPOWER_PASSWORD": PASSWORD}, "fence", "h1", "status",
                  "--url", engine.url, "--ca-file", str(tmp_path / "nope.crt"))
    assert r.returncode == 2
    assert f"--ca-file (or HOSTPOWER_CA_FILE): {tmp_path / 'nope.crt'} does not exist" in r.stderr


def test_plain_http_to_the_https_engine_says_to_use_https(engine: TlsEngine) -> None:
    url = f"http://127.0.0.1:{engine.port}"
    r = hostpower({**engine.env, "HOSTPOWER_PASSWORD": PASSWORD}, "fence", "h1", "status",
                  "--url", url)
    assert r.returncode == 1
    assert f"cannot reach the engine at {url}" in r.stderr
    assert "use an https:// URL" in r.stderr


def test_the_command_warns_before_sending_a_password_in_clear_off_loopback(
        capsys: pytest.CaptureFixture[str]) -> None:
    for url in ("https://192.0.2.7:8080", "http://127.0.0.1:8080", "http://[::1]:8080",
                "http://localhost:8080"):
        warn_if_in_clear(url)
    assert capsys.readouterr().err == ""
    warn_if_in_clear("http://192.0.2.7:8080")  # only the decision: nothing is sent
    assert "WARNING: http://192.0.2.7:8080 is plain HTTP" in capsys.readouterr().err


# -- plain HTTP ---------------------------------------------------------------------------

@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.4.5.6", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("192.0.2.1", False),
])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_the_transport_decision() -> None:
    assert choose_transport("127.0.0.1", plain_http=False).tls  # HTTPS by default, loopback too
    assert choose_transport("0.0.0.0", plain_http=False).engine_issued
    silent = choose_transport("127.0.0.1", plain_http=True)
    assert (silent.tls, silent.warning) == (False, None)
    loud = choose_transport("0.0.0.0", plain_http=True)
    assert not loud.tls and loud.warning is not None
    assert "WARNING" in loud.warning and "in clear" in loud.warning
    # Where plain HTTP is only a default (the demo): loopback yes, elsewhere refused.
    assert not choose_transport("::1", plain_http=False, plain_by_default=True).tls
    with pytest.raises(ValidationError, match="refusing plain HTTP on 0.0.0.0") as refused:
        choose_transport("0.0.0.0", plain_http=False, plain_by_default=True)
    assert refused.value.field == "--bind"
    assert choose_transport("0.0.0.0", plain_http=True, plain_by_default=True).warning


def test_the_engine_certificate_names_the_machine() -> None:
    assert web_sans("10.0.0.5")[:4] == ["10.0.0.5", "localhost", "127.0.0.1", "::1"]
    assert "0.0.0.0" not in web_sans("0.0.0.0")
    hostname = socket.gethostname()
    if pki.is_host_name_or_ip(hostname):
        assert hostname in web_sans("127.0.0.1")


def test_plain_http_on_loopback_is_silent(tmp_path: Path) -> None:
    env = clean_env(tmp_path / "home")
    url = f"http://127.0.0.1:{free_port()}"
    log = tmp_path / "engine.log"
    with running_engine(env, url, log, "--plain-http"):
        r = httpx.get(f"{url}/api/health")
        assert r.status_code == 200 and "strict-transport-security" not in r.headers
    text = log.read_text()
    assert f"listening on {url}/" in text and "WARNING" not in text
    assert not (tmp_path / "home" / "pki" / "web").exists()  # no certificate issued


def test_plain_http_off_loopback_warns(tmp_path: Path) -> None:
    """Bound to 0.0.0.0 for a moment; the test talks to it only through 127.0.0.1."""
    env = clean_env(tmp_path / "home")
    port = free_port("0.0.0.0")
    log = tmp_path / "engine.log"
    with running_engine(env, f"http://127.0.0.1:{port}", log, "--plain-http",
                        bind=f"0.0.0.0:{port}"):
        pass
    text = log.read_text()
    assert "WARNING: serving plain HTTP on 0.0.0.0" in text
    assert "cross the network in clear" in text
    assert f"listening on http://0.0.0.0:{port}/" in text


def test_the_demo_refuses_plain_http_off_loopback_before_starting_anything(
        tmp_path: Path) -> None:
    """The demo is plain HTTP: off loopback without --plain-http it is refused,
    before the lab starts or anything binds."""
    home = tmp_path / "home"
    r = hostpower(clean_env(home), "demo", "--bind", f"0.0.0.0:{free_port()}")
    assert r.returncode == 2
    assert "--bind: refusing plain HTTP on 0.0.0.0" in r.stderr and "--plain-http" in r.stderr
    assert "starting the lab" not in r.stdout
    assert not home.exists()


# -- the operator's certificate -----------------------------------------------------------

@pytest.fixture
def company(tmp_path: Path) -> pki.CertificateAuthority:
    """A CA that is not the engine's: the operator's own."""
    return pki.CertificateAuthority.load_or_create(tmp_path / "company-ca")


def operator_bundle(ca: pki.CertificateAuthority, directory: Path) -> pki.BundlePaths:
    return pki.write_bundle(ca.issue("engine.example.org", ["127.0.0.1", "engine.example.org"],
                                     "web"), directory)


def test_serve_uses_the_operators_certificate(company: pki.CertificateAuthority,
                                              tmp_path: Path) -> None:
    files = operator_bundle(company, tmp_path / "mine")
    env = clean_env(tmp_path / "home")
    url = f"https://127.0.0.1:{free_port()}"
    log = tmp_path / "engine.log"
    verify = ssl.create_default_context(cafile=str(files.ca))
    with running_engine(env, url, log, "--tls-cert", str(files.cert), "--tls-key",
                        str(files.key), verify=verify):
        served = peer_certificate(httpx.URL(url).port or 0, verify)
        r = httpx.get(f"{url}/api/health", verify=verify)
        assert r.headers["strict-transport-security"] == HSTS
        # The command trusts it with --ca-file (the engine CA would not do).
        check = hostpower({**env, "HOSTPOWER_PASSWORD": "x"}, "fence", "h1", "status",
                          "--url", url, "--ca-file", str(files.ca))
        assert "wrong user name or password" in check.stderr, check.stderr
    assert served == x509.load_pem_x509_certificate(files.cert.read_bytes())
    assert f"TLS certificate {files.cert}" in log.read_text()
    assert not (tmp_path / "home" / "pki" / "web").exists()  # nothing issued


def _encrypted(key_pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(key_pem, password=None)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.BestAvailableEncryption(b"passphrase"))


BAD_OPTIONS = {
    "mismatched key": (lambda f, o: ["--tls-cert", f.cert, "--tls-key", o.key],
                       "--tls-key: {o.key} does not match the certificate in --tls-cert {f.cert}"),
    "missing key": (lambda f, o: ["--tls-cert", f.cert, "--tls-key", f"{f.key}.nope"],
                    "--tls-key: {f.key}.nope does not exist"),
    "no key": (lambda f, o: ["--tls-cert", f.cert], "--tls-key: --tls-cert needs --tls-key"),
    "no cert": (lambda f, o: ["--tls-key", f.key], "--tls-cert: --tls-key needs --tls-cert"),
    "a key for a cert": (lambda f, o: ["--tls-cert", f.key, "--tls-key", f.key],
                         "--tls-cert: {f.key} holds no PEM certificate"),
    "both ways": (lambda f, o: ["--plain-http", "--tls-cert", f.cert, "--tls-key", f.key],
                  "--plain-http: cannot go with --tls-cert/--tls-key"),
    "readable key": (lambda f, o: ["--tls-cert", f.cert, "--tls-key", o.key.with_name("open.key")],
                     "--tls-key: {o.key.parent}/open.key is accessible to other users (mode 0644)"),
    "encrypted key": (lambda f, o: ["--tls-cert", f.cert, "--tls-key",
                                    o.key.with_name("locked.key")],
                      "--tls-key: {o.key.parent}/locked.key is encrypted"),
}


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_bad_tls_options_exit_2_and_start_nothing(case: str, company: pki.CertificateAuthority,
                                                  tmp_path: Path) -> None:
    mine = operator_bundle(company, tmp_path / "mine")
    other = operator_bundle(company, tmp_path / "other")
    (tmp_path / "other" / "open.key").write_bytes(other.key.read_bytes())
    os.chmod(tmp_path / "other" / "open.key", 0o644)
    locked = tmp_path / "other" / "locked.key"
    locked.write_bytes(_encrypted(mine.key.read_bytes()))
    os.chmod(locked, 0o600)
    options, message = BAD_OPTIONS[case]
    home = tmp_path / "home"
    r = hostpower(clean_env(home), "serve", "--bind", f"127.0.0.1:{free_port()}",
                  *map(str, options(mine, other)))
    assert r.returncode == 2, r.stderr
    assert message.format(f=mine, o=other) in r.stderr
    assert "PRIVATE KEY" not in r.stderr + r.stdout  # never the key's content
    assert not home.exists() and "listening" not in r.stdout


def test_serve_connections_send_without_waiting_for_acks() -> None:
    """Nagle's algorithm is off on the API's connections: asyncio turns it off
    only on sockets created as TCP, and without it every API answer written in
    two parts (headers, then body) waited for the client's delayed ACK, 40 ms
    a request (the engine's connections to agents are made the same way,
    hostagent/heartbeat.py `connect`)."""
    import asyncio

    from hostpower.cli.serve_cmd import listening_socket

    listener = listening_socket("127.0.0.1", 0)
    port = listener.getsockname()[1]
    seen: list[int] = []

    async def scenario() -> None:
        accepted = asyncio.Event()

        def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()
            accepted.set()
        server = await asyncio.start_server(on_connection, sock=listener)
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await asyncio.wait_for(accepted.wait(), 10)
            writer.close()
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())
    assert seen == [1]
