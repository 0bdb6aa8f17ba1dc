"""One Redfish session with one BMC: login, authenticated requests, logout.

A session is opened with `POST <Sessions>` (user name and password in the
body, once) and then every request carries its `X-Auth-Token`; it ends with
`DELETE <session>`. The HTTPS connection is kept open between requests.

Rules the native driver relies on (redfish.py):
* At most one login per command (`begin_command` starts one). A request
  refused with 401 on a pooled token (the BMC restarted or expired the
  session) logs in again once and is sent once more; a second refusal is
  an error, never a loop.
* A login refused (401/403) raises AuthFailed naming the user and the BMC;
  the password never appears in a message.
* TLS: `verify` is an ssl.SSLContext (the CA bundle, or the system trust
  store) or False (`ssl_insecure`); a certificate that does not verify
  raises TlsRefused saying which trust was used.
"""

from __future__ import annotations

import logging
import ssl
import time
from typing import Any

import httpx

from hostpower.model.errors import HostpowerError
from hostpower.model.secret import Secret

log = logging.getLogger(__name__)

SESSIONS_PATH = "/SessionService/Sessions"
_HEADERS = {"Accept": "application/json", "OData-Version": "4.0"}
# Every request gets at least this long, even when the command's deadline is nearer.
_MIN_REQUEST_TIMEOUT = 0.05
_LOGOUT_TIMEOUT = 2.0


class RedfishFailure(HostpowerError):
    """The BMC refused or failed a request, or could not be reached; the message is for the operator."""


class AuthFailed(RedfishFailure):
    """The BMC refused the user name and password."""


class TlsRefused(RedfishFailure):
    """The BMC's certificate did not verify against the trusted CAs."""


def tls_verify(ca_bundle: str | None, insecure: bool) -> ssl.SSLContext | bool:
    """What httpx verifies the BMC's certificate with: the CA bundle (a PEM
    file), the system trust store when none is given, nothing when insecure.
    RedfishFailure if the bundle cannot be read."""
    if insecure:
        return False
    try:
        return ssl.create_default_context(cafile=ca_bundle or None)
    except (OSError, ssl.SSLError) as exc:
        raise RedfishFailure(f"the Redfish CA bundle {ca_bundle} cannot be used: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None


class RedfishSession:
    """A session with one BMC over one kept-open HTTPS client.

    `target` names the BMC in messages ("address:port"); `trust` says what
    the certificate is verified against, for messages too."""

    def __init__(self, base_url: str, target: str, username: str, password: Secret,
                 verify: ssl.SSLContext | bool, trust: str, redfish_uri: str) -> None:
        self.target = target
        self.username = username
        self.trust = trust
        self.redfish_uri = redfish_uri
        self._password = password
        self._client = httpx.Client(base_url=base_url, verify=verify, headers=_HEADERS,
                                    follow_redirects=False)
        self._token: str | None = None
        self._session_uri: str | None = None
        self._sessions_uri: str | None = None
        self._logged_in_this_command = False
        self.logins = 0      # sessions opened (diagnostics and tests)

    @property
    def open(self) -> bool:
        return self._token is not None

    def begin_command(self) -> None:
        """A new command: it may log in (once)."""
        self._logged_in_this_command = False

    # -- requests --------------------------------------------------------------------------

    def get(self, path: str, deadline: float) -> dict[str, Any]:
        response = self._authenticated("GET", path, deadline)
        try:
            data = response.json()
        except ValueError:
            raise RedfishFailure(f"BMC {self.target}: GET {path} did not answer JSON") from None
        if not isinstance(data, dict):
            raise RedfishFailure(f"BMC {self.target}: GET {path} did not answer a JSON object")
        return data

    def post(self, path: str, body: dict[str, Any], deadline: float) -> None:
        self._authenticated("POST", path, deadline, body)

    def _authenticated(self, method: str, path: str, deadline: float,
                       body: dict[str, Any] | None = None) -> httpx.Response:
        if self._token is None:
            self.login(deadline)
        response = self._send(method, path, deadline, body)
        if response.status_code == 401 and not self._logged_in_this_command:
            # A pooled token the BMC no longer knows (restarted, expired):
            # log in again, once, and send the request once more.
            log.info("BMC %s: session no longer valid, logging in again", self.target)
            self._forget()
            self.login(deadline)
            response = self._send(method, path, deadline, body)
        if response.status_code == 401:
            self._forget()
            raise RedfishFailure(f"BMC {self.target}: {method} {path} refused (401) right "
                                 f"after user {self.username} logged in")
        if response.status_code >= 400:
            raise RedfishFailure(f"BMC {self.target}: {method} {path} answered "
                                 f"{response.status_code}{_error_text(response)}")
        return response

    def _send(self, method: str, path: str, deadline: float,
              body: dict[str, Any] | None = None, token: bool = True) -> httpx.Response:
        headers = {"X-Auth-Token": self._token} if token and self._token else {}
        timeout = max(_MIN_REQUEST_TIMEOUT, deadline - time.monotonic())
        try:
            return self._client.request(method, path, json=body, headers=headers,
                                        timeout=timeout)
        except httpx.TimeoutException:
            raise RedfishFailure(f"BMC {self.target} did not answer {method} {path} "
                                 f"in time") from None
        except httpx.HTTPError as exc:
            raise self._transport_failure(exc) from None

    def _transport_failure(self, exc: httpx.HTTPError) -> RedfishFailure:
        cause = _ssl_cause(exc)
        if isinstance(cause, ssl.SSLCertVerificationError):
            reason = cause.verify_message or cause.reason or str(cause)
            return TlsRefused(f"BMC {self.target}: TLS certificate not trusted ({reason}; "
                              f"verified against {self.trust})")
        if cause is not None:
            return RedfishFailure(f"BMC {self.target}: TLS failed: {cause}")
        return RedfishFailure(f"BMC {self.target}: cannot connect: {exc or type(exc).__name__}")

    # -- the session -----------------------------------------------------------------------

    def login(self, deadline: float) -> None:
        """Open a session (POST to the Sessions collection); AuthFailed when refused."""
        if self._logged_in_this_command:
            raise RedfishFailure(f"BMC {self.target}: already logged in once for this command")
        self._logged_in_this_command = True
        uri = self._sessions(deadline)
        response = self._send("POST", uri, deadline, {
            "UserName": self.username, "Password": self._password.reveal()}, token=False)
        if response.status_code in (401, 403):
            raise AuthFailed(f"authentication failed for user {self.username} at BMC "
                             f"{self.target}")
        if response.status_code not in (200, 201):
            raise RedfishFailure(f"login to BMC {self.target} failed: {response.status_code}"
                                 f"{_error_text(response)}")
        token = response.headers.get("X-Auth-Token")
        if not token:
            raise RedfishFailure(f"login to BMC {self.target}: no X-Auth-Token in its answer")
        self._token = token
        self._session_uri = _session_location(response)
        self.logins += 1

    def _sessions(self, deadline: float) -> str:
        """The Sessions collection: from the service root's Links when it names
        one, else the path the Redfish specification fixes. The root is read
        without credentials (Redfish serves it to anyone)."""
        if self._sessions_uri is None:
            uri = self.redfish_uri + SESSIONS_PATH
            response = self._send("GET", self.redfish_uri, deadline, token=False)
            if response.status_code == 200:
                try:
                    uri = response.json()["Links"]["Sessions"]["@odata.id"] or uri
                except (ValueError, KeyError, TypeError):
                    pass
            self._sessions_uri = uri
        return self._sessions_uri

    def logout(self) -> None:
        """End the session (DELETE it); the BMC may be gone, so never fail on its answer."""
        token, uri = self._token, self._session_uri
        self._forget()
        if token is None or uri is None:
            return
        try:
            self._client.request("DELETE", uri, headers={"X-Auth-Token": token},
                                 timeout=_LOGOUT_TIMEOUT)
        except httpx.HTTPError as exc:
            log.debug("BMC %s: logout failed: %s", self.target, exc)

    def close(self) -> None:
        """Log out and close the connection."""
        try:
            self.logout()
        finally:
            self._client.close()

    def _forget(self) -> None:
        self._token = None
        self._session_uri = None


def _session_location(response: httpx.Response) -> str | None:
    """The new session's URI: the Location header, else the body's @odata.id."""
    location = response.headers.get("Location")
    if location:
        return httpx.URL(location).path if "://" in location else location
    try:
        return str(response.json()["@odata.id"])
    except (ValueError, KeyError, TypeError):
        return None


def _error_text(response: httpx.Response) -> str:
    """The Redfish error message of an answer, if it has one."""
    try:
        error = response.json().get("error", {})
        text = error.get("message") or ""
        extended = error.get("@Message.ExtendedInfo") or []
        if extended and isinstance(extended[0], dict):
            text = extended[0].get("Message") or text
    except (ValueError, AttributeError, TypeError):
        text = ""
    return f": {str(text)[:200]}" if text else ""


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The ssl error underneath an httpx error (httpx wraps httpcore's, which wraps ssl's)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
