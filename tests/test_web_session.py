"""The web console's server side, without a browser: session login with an
HttpOnly cookie, CSRF protection of every cookie-authenticated write, and the
static files (no CDN, a strict Content-Security-Policy). The bearer-token API
is unchanged (tests/test_api.py)."""

from __future__ import annotations

from importlib import resources

import pytest
from fastapi.testclient import TestClient

from hostpower.api.app import create_app
from hostpower.api.auth import csrf_token_for
from hostpower.store.users import Users


@pytest.fixture
def app(sqlite_ctx):  # type: ignore[no-untyped-def]
    with sqlite_ctx.db.session() as s:
        Users(s).add("root", "admin", "admin-password")
        Users(s).add("watcher", "viewer", "viewer-password")
    return create_app(sqlite_ctx)


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    with TestClient(app) as c:
        yield c


def log_in(client: TestClient, user: str = "root", password: str = "admin-password") -> dict:
    r = client.post("/api/session", json={"username": user, "password": password})
    assert r.status_code == 200, r.text
    return r.json()


def test_login_sets_an_httponly_strict_cookie_and_returns_the_csrf_token(client: TestClient) -> None:
    r = client.post("/api/session", json={"username": "root", "password": "admin-password"})
    assert r.status_code == 200
    body = r.json()
    assert body["user"] == "root" and body["role"] == "admin"
    assert body["csrf_header"] == "X-CSRF-Token" and len(body["csrf_token"]) == 64
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("hostpower_session=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain http here
    assert r.headers["cache-control"] == "no-store"
    token = client.cookies["hostpower_session"]
    assert body["csrf_token"] == csrf_token_for(token) and token not in r.text
    # GET /api/session hands the token back (after a page reload).
    me = client.get("/api/session").json()
    assert me == body


def test_the_cookie_is_secure_over_https(app) -> None:  # type: ignore[no-untyped-def]
    with TestClient(app, base_url="https://console.example") as c:
        r = c.post("/api/session", json={"username": "root", "password": "admin-password"})
        assert "Secure" in r.headers["set-cookie"]


def test_wrong_password_gets_no_session(client: TestClient) -> None:
    r = client.post("/api/session", json={"username": "root", "password": "nope"})
    assert r.status_code == 401 and "set-cookie" not in r.headers
    assert client.get("/api/session").status_code == 401
    assert client.get("/api/hosts").status_code == 401


def test_cookie_reads_need_no_csrf_token_but_writes_do(client: TestClient) -> None:
    s = log_in(client)
    assert client.get("/api/hosts").status_code == 200
    assert client.get("/api/config").status_code == 200
    # No header, a wrong one, another session's: 403, nothing stored.
    r = client.post("/api/datacenters", json={"name": "dc1"})
    assert r.status_code == 403 and "CSRF" in r.json()["detail"]
    r = client.post("/api/datacenters", json={"name": "dc1"}, headers={"X-CSRF-Token": "x" * 64})
    assert r.status_code == 403
    r = client.put("/api/config/FenceStopStatusRetries", json={"value": "3"},
                   headers={"X-CSRF-Token": csrf_token_for("another-session")})
    assert r.status_code == 403
    assert client.get("/api/datacenters").json() == []
    # With the session's token: accepted.
    ok = {"X-CSRF-Token": s["csrf_token"]}
    dc = client.post("/api/datacenters", json={"name": "dc1"}, headers=ok)
    assert dc.status_code == 201
    assert client.delete(f"/api/datacenters/{dc.json()['id']}", headers=ok).status_code == 204
    assert client.delete(f"/api/datacenters/{dc.json()['id']}").status_code == 403


def test_cross_site_requests_are_refused_even_with_the_token(client: TestClient) -> None:
    s = log_in(client)
    token = {"X-CSRF-Token": s["csrf_token"]}
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Sec-Fetch-Site": "same-site"}, {"Origin": "null"}):
        r = client.put("/api/config/FenceStopStatusRetries", json={"value": "3"},
                       headers={**token, **headers})
        assert r.status_code == 403, headers
        assert r.json()["detail"] == "cross-site request refused"
    same = {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}
    r = client.put("/api/config/FenceStopStatusRetries", json={"value": "3"}, headers={**token, **same})
    assert r.status_code == 200
    # Behind a reverse proxy, the forwarded host is the engine's origin too.
    r = client.put("/api/config/FenceStopStatusRetries", json={"value": "4"},
                   headers={**token, "Origin": "https://hp.example", "X-Forwarded-Host": "hp.example",
                            "X-Forwarded-Proto": "https"})
    assert r.status_code == 200
    # No login from another site either (login CSRF).
    r = client.post("/api/session", json={"username": "root", "password": "admin-password"},
                    headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403


def test_viewer_cookie_cannot_write(client: TestClient) -> None:
    s = log_in(client, "watcher", "viewer-password")
    assert s["role"] == "viewer"
    r = client.post("/api/datacenters", json={"name": "dc9"}, headers={"X-CSRF-Token": s["csrf_token"]})
    assert r.status_code == 403 and "admin role required" in r.json()["detail"]


def test_logout_revokes_the_session_and_needs_the_token(client: TestClient) -> None:
    s = log_in(client)
    assert client.delete("/api/session").status_code == 403  # no CSRF header: not logged out
    assert client.get("/api/session").status_code == 200
    r = client.delete("/api/session", headers={"X-CSRF-Token": s["csrf_token"]})
    assert r.status_code == 204
    assert 'hostpower_session=""' in r.headers["set-cookie"] or "Max-Age=0" in r.headers["set-cookie"]
    assert client.get("/api/session").status_code == 401
    assert client.get("/api/hosts").status_code == 401


def test_bearer_tokens_work_as_before_and_need_no_csrf(client: TestClient) -> None:
    r = client.post("/api/auth/token", json={"username": "root", "password": "admin-password"})
    bearer = {"Authorization": f"Bearer {r.json()['access_token']}"}
    assert client.post("/api/datacenters", json={"name": "dc1"}, headers=bearer).status_code == 201
    # A bearer client has no console session.
    assert client.get("/api/session", headers=bearer).status_code == 401
    r = client.get("/api/hosts")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


def test_the_console_is_served_with_a_strict_policy(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert '<script type="module" src="/static/js/app.js">' in r.text
    for path in ("/static/js/app.js", "/static/js/pages/pm.js", "/static/css/console.css",
                 "/static/img/favicon.svg", "/favicon.ico"):
        f = client.get(path)
        assert f.status_code == 200, path
        assert f.headers["x-content-type-options"] == "nosniff"
    assert client.get("/static/js/app.js").headers["content-type"].startswith(("text/javascript",
                                                                               "application/javascript"))
    assert client.get("/static/../api/auth.py").status_code == 404
    assert client.get("/static/nope.js").status_code == 404
    # The API is untouched by the console's routes.
    assert client.get("/api/health").json()["status"] == "ok"


def test_no_external_resources_in_the_console() -> None:
    """No CDN, no web font, no third-party script: everything is in the package."""
    static = resources.files("hostpower.web").joinpath("static")
    texts = []

    def walk(d):  # type: ignore[no-untyped-def]
        for entry in d.iterdir():
            if entry.is_dir():
                walk(entry)
            elif entry.name.endswith((".js", ".css", ".html", ".svg")):
                texts.append((entry.name, entry.read_text()))

    walk(static)
    assert {"app.js", "pm.js", "console.css", "index.html"} <= {n for n, _ in texts}
    for name, text in texts:
        for marker in ("http://", "https://", "//cdn", "@import"):
            if marker in text:
                # Only the SVG namespace may name a URL.
                assert all(line.count("www.w3.org/2000/svg") for line in text.splitlines()
                           if marker in line), (name, marker)
        assert "innerHTML" not in text, name
