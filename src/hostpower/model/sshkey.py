"""SSH access to a host, as the inventory keeps it: pure checks, no I/O.

A host's pinned SSH host key is stored as one line of OpenSSH's public key
format, ``<type> <base64 blob>`` (what ``ssh-keyscan`` and the ``.pub``
files hold; a trailing comment is dropped). Its fingerprint is OpenSSH's
``SHA256:<unpadded base64>`` of the blob, what ``ssh-keygen -lf`` prints and
what an operator compares with the host's console.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct

from hostpower.model.errors import ValidationError

# Public key types a host key may have (OpenSSH's; DSA is long gone).
HOST_KEY_TYPES = frozenset({
    "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "ssh-rsa",
})
# POSIX portable user names (what useradd accepts by default), never an option.
USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")
MAX_KEY_TEXT = 16384   # an RSA key of 16384 bits is about 2.8 kB in base64


def user(value: str, field: str = "ssh.user") -> str:
    if not isinstance(value, str) or not USER_RE.fullmatch(value):
        raise ValidationError(field, f"{value!r} is not a valid user name (letters, digits, "
                                     f"'_', '.', '-'; at most 32; not starting with '-')"
                              if isinstance(value, str) and len(value) <= 64 else
                              "is not a valid user name")
    return value


def host_key(value: str, field: str = "ssh.host_key") -> str:
    """A host's public key in OpenSSH's one-line format, normalized to
    ``<type> <base64>`` ('' means no key is pinned)."""
    if not isinstance(value, str):
        raise ValidationError(field, "must be text")
    text = value.strip()
    if not text:
        return ""
    if len(text) > MAX_KEY_TEXT or "\n" in text or "\r" in text or "\x00" in text:
        raise ValidationError(field, "must be one line of an OpenSSH public key")
    parts = text.split()
    if len(parts) < 2:
        raise ValidationError(field, "must read '<type> <base64 key>', e.g. as ssh-keyscan "
                                     "or /etc/ssh/ssh_host_ed25519_key.pub shows it")
    kind, blob_text = parts[0], parts[1]
    if kind not in HOST_KEY_TYPES:
        raise ValidationError(field, f"key type {kind[:40]!r} is not one of "
                                     f"{', '.join(sorted(HOST_KEY_TYPES))}")
    try:
        blob = base64.b64decode(blob_text, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError(field, "the key is not valid base64") from None
    if _first_string(blob) != kind.encode():
        raise ValidationError(field, f"the key data is not a {kind} key")
    return f"{kind} {blob_text}"


def fingerprint(key_text: str) -> str:
    """OpenSSH's SHA256 fingerprint of a (valid) public key line."""
    blob = base64.b64decode(key_text.split()[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def _first_string(blob: bytes) -> bytes | None:
    """The key type every SSH public key blob starts with (RFC 4253 6.6)."""
    if len(blob) < 4:
        return None
    (length,) = struct.unpack(">I", blob[:4])
    if length > len(blob) - 4 or length > 64:
        return None
    return blob[4:4 + length]
