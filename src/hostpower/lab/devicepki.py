"""The lab's device CA: who signs the HTTPS certificates of the lab's
Redfish BMCs.

A CA of the lab's own, not the engine's agent CA (hostagent/pki.py): a data
center's BMC certificates come from its vendor or its own PKI, never from
the engine that fences the servers, and trusting the agent CA for BMCs would
let any BMC pose as a host agent. Its certificate is the CA bundle a Redfish
client is given (`RunningLab.redfish_ca_bundle`). Kept across lab restarts
in the lab's run directory, so a bundle path configured once stays valid.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from hostpower.hostagent.pki import CertificateAuthority

CA_DIR = "device-ca"
CA_COMMON_NAME = "hostpower lab device CA"


def load_or_create(run_dir: Path) -> CertificateAuthority:
    directory = run_dir / CA_DIR
    if (directory / "ca.key").exists() and (directory / "ca.crt").exists():
        return CertificateAuthority.load(directory)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca = CertificateAuthority.create(common_name=CA_COMMON_NAME)
    key_pem = ca._key.private_bytes(  # the CA key, written once
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    _write(directory / "ca.key", key_pem, 0o600)
    _write(directory / "ca.crt", ca.cert_pem, 0o644)
    ca.directory = directory
    return ca


def bundle_path(run_dir: Path) -> Path:
    """The CA certificate a Redfish client trusts (PEM)."""
    return run_dir / CA_DIR / "ca.crt"


def issue_server_certificate(ca: CertificateAuthority, name: str, address: str,
                             out_dir: Path) -> tuple[Path, Path]:
    """A serverAuth certificate for one device at `address`; returns (cert, key)."""
    bundle = ca.issue(name, [address], "web")
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert, key = out_dir / f"{name}.crt", out_dir / f"{name}.key"
    _write(cert, bundle.cert_pem, 0o644)
    _write(key, bundle.key_pem, 0o600)
    return cert, key


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
