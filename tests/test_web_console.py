"""The web console in a real browser: Debian's chromium driven by Playwright.

One engine for the module (uvicorn in a thread, SQLite under tmp), whose hosts
are powered by the real fence_dummy agent of fence-agents, run by the engine
itself (chain "engine"). The monitor does not run, so host statuses are what
the tests set, and nothing is ever fenced automatically. The engine joins the
database as `hostpower serve` does (engine "console", a lease it renews), so
it is listed on the Engines page and the events it writes name it.

Never `playwright install`: the browser is /usr/bin/chromium.
"""

from __future__ import annotations

import os

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from conftest import IN_CI, require
from apikit import ServedApp
from helpers import bearer, free_port, wait_until
from hostpower.context import EngineContext
from hostpower.inventory_file import load_document
from hostpower.membership import Identity, Membership
from hostpower.model.events import Event, Severity
from hostpower.model.inventory import HostStatus
from hostpower.model.proxychain import complete_chain, format_chain, parse_chain
from hostpower.model.readiness import PathCheck, PathState, assess
from hostpower.runtime import EngineRuntime
from hostpower.settings import Settings
from hostpower.store.configstore import ConfigStore
from hostpower.store.engines import Engines
from hostpower.store.events import Events
from hostpower.store.inventory import Inventory
from hostpower.store.readiness import ReadinessStore
from hostpower.store.users import Users

CHROMIUM = Path("/usr/bin/chromium")
FENCE_DUMMY = Path("/usr/sbin/fence_dummy")
# Screenshots go to test-artifacts/ on every run; HOSTPOWER_UPDATE_SCREENSHOTS=1
# writes them to docs/screenshots/ (shown in the README) instead, so that a
# plain `make test` leaves the work tree clean.
SCREENSHOTS = Path(__file__).resolve().parent.parent / (
    "docs/screenshots" if os.environ.get("HOSTPOWER_UPDATE_SCREENSHOTS") == "1"
    else "test-artifacts/screenshots")
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--disable-extensions", "--disable-default-apps", "--mute-audio",
    "--disable-features=Translate,MediaRouter,OptimizationHints",
]
ENGINE_NAME = "console"
ADMIN = ("admin", "admin-password")
VIEWER = ("viewer", "viewer-password")

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # the `test` extra installs it; in CI nothing may be skipped
    if IN_CI:
        raise
    pytest.skip("playwright is not installed (pip install -e '.[test]')", allow_module_level=True)


def _dummy(status_file: Path, **extra: object) -> dict:
    return {"type": "dummy", "address": "127.0.0.1",
            "options": {"type": "file", "status_file": str(status_file)}, **extra}


def inventory(power: Path) -> dict:
    """Two data centers; every host's power is a fence_dummy status file."""
    def host(name: str, addr: str, chain: str, status: str = "up", agents: int = 1,
             **extra: object) -> dict:
        return {"name": name, "address": addr, "status": status, **extra,
                "power_management": {
                    "enabled": True, "automatic_pm_enabled": False, "pm_proxies": chain,
                    "agents": [_dummy(power / f"{name}.power", order=1) for _ in range(agents)]}}

    return {
        "config": {
            "FenceStopStatusDelayBetweenRetriesInSec": "0",
            "FenceStartStatusDelayBetweenRetriesInSec": "0",
            "DisableFenceAtStartupInSec": "86400",
            "FindFenceProxyRetries": "0",
            "FenceCommandTimeoutInSec": "10",
            # Long enough that the test's retry at once is surely within it.
            "LoginFailureBackoffInMs": "2000",
        },
        "data_centers": [
            {"name": "dc-east", "description": "Primary site", "clusters": [
                {"name": "east-a", "description": "Compute, rack A", "hosts": [
                    host("east-a-1", "127.0.2.11", "engine,cluster"),
                    host("east-a-2", "127.0.2.12", "engine"),
                    host("east-a-3", "127.0.2.13", "engine", agents=2),
                ]},
                {"name": "east-b", "description": "Compute, rack B", "hosts": [
                    host("east-b-1", "127.0.2.21", "engine,dc"),
                    host("east-b-2", "127.0.2.22", "engine", status="maintenance"),
                ]},
            ]},
            {"name": "dc-west", "description": "Disaster-recovery site", "clusters": [
                {"name": "west-a", "hosts": [
                    host("west-a-1", "127.0.2.31", "engine,other_dc"),
                    host("west-a-2", "127.0.2.32", "engine", status="non_operational",
                         non_operational_reason="storage_unreachable"),
                ]},
            ]},
        ],
    }


@dataclass
class Engine:
    url: str
    ctx: EngineContext
    power: Path

    def host_id(self, name: str) -> int:
        with self.ctx.db.session() as s:
            return Inventory(s, self.ctx.box).find_host(name).id

    def set_status(self, name: str, status: HostStatus) -> None:
        with self.ctx.db.session() as s:
            Inventory(s, self.ctx.box).set_status(self.host_id(name), status)

    def api(self, user: tuple[str, str] = ADMIN) -> httpx.Client:
        """A bearer-token client, to check what the console did."""
        client = httpx.Client(base_url=self.url, timeout=10)
        client.headers.update(bearer(client, *user))
        return client


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    require(FENCE_DUMMY.exists(), "fence-agents (fence_dummy) is not installed")
    tmp = tmp_path_factory.mktemp("web")
    power = tmp / "power"
    power.mkdir()
    ctx = EngineContext.open(Settings(home=tmp / "home", db_url=f"sqlite:///{tmp / 'engine.db'}"))
    with ctx.db.session() as s:
        load_document(Inventory(s, ctx.box, ctx.known_agent_types()), ConfigStore(s),
                      inventory(power))
        Users(s).add(ADMIN[0], "admin", ADMIN[1])
        Users(s).add(VIEWER[0], "viewer", VIEWER[1])
    for name in ("east-a-1", "east-a-2", "east-a-3", "east-b-2", "west-a-1", "west-a-2"):
        (power / f"{name}.power").write_text("on")
    (power / "east-b-1.power").write_text("off")

    port = free_port()
    membership = Membership.join(ctx.db, Identity(ENGINE_NAME, f"http://127.0.0.1:{port}"))
    try:
        with ServedApp(ctx, EngineRuntime(ctx, monitor=False, membership=membership),
                       port=port) as served:
            yield Engine(served.url, ctx, power)
    finally:
        membership.leave()  # done by the runtime's stop already, unless serving failed
        ctx.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    require(CHROMIUM.exists(), "chromium is not installed (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, engine):  # type: ignore[no-untyped-def]
    context = browser.new_context(base_url=engine.url, viewport={"width": 1440, "height": 900},
                                  locale="en-GB", timezone_id="UTC")
    context.set_default_timeout(30_000)  # generous: test files run two at a time on two cores
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    pg.on("console", lambda msg: errors.append(f"console: {msg.text}")
          if msg.type == "error" and not msg.text.startswith("Failed to load resource") else None)
    # 4xx answers are what some tests provoke (bad input, CSRF, viewer); 5xx never,
    # but for /api/health's 503 "not ready": a state the console shows (its banner).
    pg.on("response", lambda r: errors.append(f"{r.status} {r.request.method} {r.url}")
          if r.status >= 500 and not (r.status == 503 and r.url.endswith("/api/health"))
          else print("browser got", r.status, r.request.method, r.url)
          if r.status >= 400 else None)
    yield pg
    context.close()
    assert not errors, errors


def login(page, user: tuple[str, str]) -> None:  # type: ignore[no-untyped-def]
    page.goto("/")
    page.get_by_label("User name").fill(user[0])
    page.get_by_label("Password").fill(user[1])
    page.get_by_role("button", name="Log in").click()
    expect(page.locator(".user-chip .user-name")).to_have_text(user[0])


def host_row(page, name: str):  # type: ignore[no-untyped-def]
    return page.locator(f"tr[data-host='{name}']")


# -- tests ------------------------------------------------------------------------------

def test_login_inventory_and_live_refresh(page, engine: Engine) -> None:  # type: ignore[no-untyped-def]
    page.goto("/")
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill("wrong-password")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator(".form-error")).to_contain_text("wrong user name or password")
    # Trying again at once is throttled (a back-off follows each failure), and says so.
    page.get_by_label("Password").fill(ADMIN[1])
    page.get_by_role("button", name="Log in").click()
    expect(page.locator(".form-error")).to_contain_text("too many failed logins: try again in")
    page.wait_for_timeout(2000)  # the back-off counts from the failed attempt
    login(page, ADMIN)

    cookie = next(c for c in page.context.cookies() if c["name"] == "hostpower_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and not cookie["secure"]
    assert "hostpower_session" not in page.evaluate("document.cookie")

    expect(host_row(page, "east-a-1")).to_be_visible()
    assert page.locator("tbody tr[data-host]").count() == 7
    expect(host_row(page, "west-a-2").locator("[data-status]")).to_have_text("non operational")
    # Data centers and clusters filter the hosts.
    page.locator(".tree-item", has_text="west-a").click()
    expect(page.locator("tbody tr[data-host]")).to_have_count(2)
    page.locator(".tree-item", has_text="All data centers").click()
    expect(page.locator("tbody tr[data-host]")).to_have_count(7)
    # Power state: asked through the chain (automatically at first, and on demand).
    expect(host_row(page, "east-b-1").locator("[data-power]")).to_have_text("off")
    host_row(page, "east-a-1").locator("[data-action=check-power]").click()
    expect(host_row(page, "east-a-1").locator("[data-power]")).to_have_text("on")
    expect(host_row(page, "east-a-1").locator(".via")).to_have_text("engine")
    # The inventory refreshes on its own.
    engine.set_status("east-b-1", HostStatus.MAINTENANCE)
    expect(host_row(page, "east-b-1").locator("[data-status]")).to_have_text("maintenance",
                                                                           timeout=8000)
    engine.set_status("east-b-1", HostStatus.UP)
    page.get_by_role("tab", name="Clusters").click()
    expect(page.locator("tr[data-cluster='east-a']")).to_contain_text("dc-east")
    page.get_by_role("tab", name="Data centers").click()
    expect(page.locator("tr[data-datacenter='dc-west']")).to_contain_text("Disaster-recovery site")
    # Log out: the session is gone on the server too.
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    assert page.evaluate("fetch('/api/session').then(r => r.status)") == 401


def test_proxy_preferences_reorder_and_add_host(page, engine: Engine) -> None:  # type: ignore[no-untyped-def]
    hid = engine.host_id("east-a-1")
    login(page, ADMIN)
    page.goto(f"/#/hosts/{hid}/pm")
    expect(page.locator(".pm-tab[data-loaded]")).to_have_count(1)
    rows = page.locator(".proxy-list li")
    expect(rows).to_have_count(2)
    expect(rows.locator(".proxy-label")).to_have_text(["Engine", "Cluster"])
    effective = page.locator(".effective-list li")
    expect(effective).to_have_count(3)
    expect(effective.nth(2)).to_have_attribute("data-implicit", "true")
    expect(effective.nth(2)).to_have_attribute("data-entry", "dc")

    # Down on "engine", then Up on "dc" after adding it: the list is the priority.
    rows.nth(0).get_by_role("button", name="Move Engine down").click()
    expect(rows.locator(".proxy-label")).to_have_text(["Cluster", "Engine"])
    page.locator(".add-source").select_option("dc")
    page.get_by_role("button", name="Add", exact=True).click()
    expect(rows.locator(".proxy-label")).to_have_text(["Cluster", "Engine", "Data center"])
    rows.nth(2).get_by_role("button", name="Move Data center up").click()
    expect(rows.locator(".proxy-label")).to_have_text(["Cluster", "Data center", "Engine"])
    expect(page.locator(".chain-effective .chip.preview")).to_be_visible()
    expect(effective.locator("[data-implicit=true]")).to_have_count(0)
    page.locator("[data-action=save]").click()
    expect(page.locator(".dirty")).to_have_text("Saved")

    api = engine.api()
    pm = api.get(f"/api/hosts/{hid}").json()["power_management"]
    assert [p["type"] for p in pm["pm_proxies"]] == ["cluster", "dc", "engine"]

    # A specific host: picked from the defined hosts, the host itself excluded.
    page.locator(".add-source").select_option("host")
    options = page.locator(".add-host option").all_text_contents()
    assert not any(o.startswith("east-a-1 ") for o in options), options
    assert any(o.startswith("west-a-1 ") for o in options), options
    page.locator(".add-host").select_option("east-b-1")
    page.get_by_role("button", name="Add", exact=True).click()
    rows.nth(3).get_by_role("button", name="Move east-b-1 up").click()
    rows.nth(2).get_by_role("button", name="Move east-b-1 up").click()
    expect(rows.locator(".proxy-label")).to_have_text(["Cluster", "east-b-1", "Data center", "Engine"])
    page.locator("[data-action=save]").click()
    expect(page.locator(".dirty")).to_have_text("Saved")
    pm = api.get(f"/api/hosts/{hid}").json()["power_management"]
    assert pm["pm_proxies"] == [{"type": "cluster", "host": None}, {"type": "host", "host": "east-b-1"},
                                {"type": "dc", "host": None}, {"type": "engine", "host": None}]
    # Remove it again.
    rows.nth(1).get_by_role("button", name="Remove east-b-1").click()
    page.locator("[data-action=save]").click()
    expect(page.locator(".dirty")).to_have_text("Saved")
    assert len(api.get(f"/api/hosts/{hid}").json()["power_management"]["pm_proxies"]) == 3

    # The live preview completes a chain exactly as the engine does.
    cases = ["", "engine,IP1,IP2", "IP1,dc,IP2", "other_dc", "cluster,dc,engine"]
    for implicit in ("engine,cluster,dc", "", "dc"):
        got = page.evaluate("""async ([cases, implicit]) => {
            const c = await import('/static/js/chain.js');
            return cases.map((s) => c.formatChain(c.effectiveChain(c.parseSources(s), 'cluster,dc', implicit))
                + '|' + c.effectiveChain(c.parseSources(s), 'cluster,dc', implicit).map((e) => e.implicit ? 1 : 0).join(''));
        }""", [cases, implicit])
        want = []
        for spec in cases:
            own = parse_chain(spec)
            full = complete_chain(own, parse_chain("cluster,dc"), parse_chain(implicit))
            keys = {e.key for e in own}
            want.append(format_chain(full).lower() + "|" + "".join("0" if e.key in keys else "1" for e in full))
        assert got == want, (implicit, got, want)


def test_restart_shows_steps_and_proxy(page, engine: Engine) -> None:  # type: ignore[no-untyped-def]
    hid = engine.host_id("east-a-2")
    login(page, ADMIN)
    page.goto(f"/#/hosts/{hid}/pm")
    # Test: a status through the chain, and who answered.
    page.locator(".chain-card [data-action=test]").click()
    expect(page.locator(".chain-card .status-result")).to_have_attribute("data-proxy", "engine")
    expect(page.locator(".chain-card [data-answered-by]")).to_have_text("engine")

    page.locator(".power-actions [data-action=restart]").click()
    confirm = page.get_by_role("dialog", name="Restart host")
    expect(confirm).to_contain_text("Restart east-a-2?")
    confirm.locator("[data-role=confirm]").click()
    op = page.locator(".operation")
    expect(op).to_have_attribute("data-state", "succeeded", timeout=20_000)
    steps = op.locator(".step")
    expect(steps.locator(".step-name")).to_have_text(
        ["Check power", "Stop", "Verify off", "Start", "Verify on"])
    for i in range(5):
        expect(steps.nth(i).locator(".proxy-chip")).to_have_text("engine")
    assert (engine.power / "east-a-2.power").read_text() == "on"
    page.get_by_role("button", name="Close", exact=True).last.click()
    # The operation is listed with its proxies, and the event log tells the same.
    page.get_by_role("tab", name="Operations").click()
    expect(page.locator("tr[data-operation]").first).to_contain_text("restart")
    expect(page.locator("tr[data-operation]").first.locator(".proxy-chip")).to_have_text("engine")
    # A stop is confirmed too, and a cancelled dialog does nothing.
    page.locator(".power-actions [data-action=stop]").click()
    page.get_by_role("dialog", name="Stop host").get_by_role("button", name="Cancel").click()
    assert (engine.power / "east-a-2.power").read_text() == "on"


def test_viewer_sees_no_write_controls(page, engine: Engine) -> None:  # type: ignore[no-untyped-def]
    hid = engine.host_id("east-a-3")
    login(page, VIEWER)
    expect(host_row(page, "east-a-3")).to_be_visible()
    expect(page.locator("[data-action=power-menu]")).to_have_count(0)
    expect(page.locator(".nav-link[data-section=config]")).to_have_count(0)
    page.goto(f"/#/hosts/{hid}/pm")
    expect(page.locator(".agents-table tbody tr")).to_have_count(2)
    expect(page.locator(".concurrent-tag")).to_have_text("concurrent")
    expect(page.locator(".proxy-list li")).to_have_count(1)
    for selector in ("[data-action=save]", "[data-action=add-agent]", "[data-action=edit-agent]",
                     "[data-action=remove-agent]", "[data-action=up]", "[data-action=down]",
                     "[data-action=add-proxy]", "[data-action=test]", ".power-actions",
                     ".savebar", ".add-proxy"):
        expect(page.locator(selector)).to_have_count(0)
    for box in page.locator(".pm-settings input[type=checkbox]").all():
        expect(box).to_be_disabled()
    page.goto("/#/config")
    expect(page).to_have_url(re.compile(r"#/hosts$"))
    # The API refuses the viewer's writes anyway, even with a valid CSRF token.
    status = page.evaluate("""async (hid) => {
        const s = await (await fetch('/api/session')).json();
        const r = await fetch(`/api/hosts/${hid}/power_management`, {method: 'PUT',
            headers: {'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf_token},
            body: JSON.stringify({enabled: false})});
        return [r.status, (await r.json()).detail];
    }""", hid)
    assert status[0] == 403 and "admin role required" in status[1]
    assert engine.api().get(f"/api/hosts/{hid}").json()["power_management"]["enabled"] is True


def test_bad_values_are_shown_next_to_their_field(page, engine: Engine) -> None:  # type: ignore[no-untyped-def]
    hid = engine.host_id("west-a-1")
    login(page, ADMIN)
    page.goto(f"/#/hosts/{hid}/pm")
    expect(page.locator(".agents-table tbody tr")).to_have_count(1)
    page.locator("[data-action=add-agent]").click()
    dlg = page.get_by_role("dialog")
    dlg.locator("select[name=type]").select_option("ipmilan")
    dlg.get_by_label("Address").fill("10.9.0.1")
    dlg.get_by_label("Port").fill("70000")
    dlg.get_by_label("Password").fill("Secret-BMC-pw")
    dlg.locator("[data-action=save-agent]").click()
    port_error = dlg.locator(".field[data-field=port] .field-error")
    expect(port_error).to_contain_text("70000 is out of range (at most 65535)")
    expect(dlg.locator(".field[data-field=address] .field-error")).to_be_hidden()
    # Fixed, it saves; the password is never shown again, not even on edit.
    dlg.get_by_label("Port").fill("623")
    dlg.locator("[data-action=save-agent]").click()
    expect(page.locator(".agents-table tbody tr")).to_have_count(2)
    page.locator("tr", has_text="10.9.0.1").locator("[data-action=edit-agent]").click()
    dlg = page.get_by_role("dialog")
    expect(dlg.get_by_label("Password")).to_have_value("")
    expect(dlg.get_by_label("Password")).to_have_attribute("placeholder", re.compile("leave empty"))
    assert "Secret-BMC-pw" not in page.content()
    dlg.get_by_role("button", name="Cancel").click()
    api = engine.api()
    agents = api.get(f"/api/hosts/{hid}/fenceagents").json()
    assert [(a["port"], a["password_set"]) for a in agents if a["address"] == "10.9.0.1"] == [(623, True)]
    # Reorder: the new agent's group first; then join it to the other group (concurrent).
    page.get_by_role("button", name="Move group 2 up").click()
    expect(page.locator("tbody.agent-group").first).to_contain_text("10.9.0.1")
    assert [a["address"] for a in api.get(f"/api/hosts/{hid}/fenceagents").json()] == ["10.9.0.1", "127.0.0.1"]
    page.locator("tr", has_text="127.0.0.1").locator("[data-action=edit-agent]").click()
    dlg = page.get_by_role("dialog")
    dlg.locator("select[name=order]").select_option(index=0)
    dlg.locator("[data-action=save-agent]").click()
    expect(page.locator(".concurrent-tag")).to_have_count(1)
    assert all(a["concurrent"] for a in api.get(f"/api/hosts/{hid}/fenceagents").json())
    page.locator("tr", has_text="10.9.0.1").locator("[data-action=remove-agent]").click()
    page.get_by_role("dialog", name="Remove fence agent").locator("[data-role=confirm]").click()
    expect(page.locator(".agents-table tbody tr")).to_have_count(1)

    # A chain the server refuses (its host was deleted meanwhile): the message shows at the list.
    c = api.get("/api/clusters").json()[0]
    temp = api.post("/api/hosts", json={"name": "temp-1", "address": "127.0.2.99",
                                        "cluster": {"id": c["id"]}, "status": "up"}).json()
    page.reload()
    expect(page.locator(".pm-tab[data-loaded]")).to_have_count(1)
    page.locator(".add-source").select_option("host")
    page.locator(".add-host").select_option("temp-1")
    page.get_by_role("button", name="Add", exact=True).click()
    assert api.delete(f"/api/hosts/{temp['id']}").status_code == 204
    page.locator("[data-action=save]").click()
    error = page.locator(".chain-card .field-error:visible")
    expect(error).to_contain_text("'temp-1' is not a defined host")
    expect(page.locator(".proxy-list li.has-error")).to_have_attribute("data-entry", "host:temp-1")
    expect(page.locator(".dirty")).to_have_text("Unsaved changes")
    page.locator("[data-action=reset]").click()

    # A configuration value of the wrong kind.
    page.goto("/#/config")
    row = page.locator("tr[data-key=FenceStopStatusRetries]")
    expect(row).to_contain_text("Status polls after a stop")
    expect(row.locator(".default-cell")).to_have_text("18")
    row.locator("input").fill("abc")
    row.locator("[data-action=save]").click()
    expect(row.locator(".field-error")).to_contain_text("'abc' is not a whole number")
    row.locator("input").fill("12")
    row.locator("[data-action=save]").click()
    row = page.locator("tr[data-key=FenceStopStatusRetries]")
    expect(row.locator(".chip.changed")).to_be_visible()
    assert engine.api().get("/api/config/FenceStopStatusRetries").json()["value"] == "12"
    row.locator("[data-action=reset]").click()
    expect(page.locator("tr[data-key=FenceStopStatusRetries] .chip.changed")).to_have_count(0)


def test_cookie_writes_need_the_csrf_header(page, engine: Engine) -> None:  # type: ignore[no-untyped-def]
    login(page, ADMIN)
    hid = engine.host_id("east-a-3")  # chain "engine": a status answers at once
    result = page.evaluate("""async (hid) => {
        const body = JSON.stringify({fence_type: 'status'});
        const json = {'Content-Type': 'application/json'};
        const s = await (await fetch('/api/session')).json();
        const without = await fetch(`/api/hosts/${hid}/fence`, {method: 'POST', headers: json, body});
        const wrong = await fetch(`/api/hosts/${hid}/fence`, {method: 'POST',
            headers: {...json, 'X-CSRF-Token': 'forged'}, body});
        const right = await fetch(`/api/hosts/${hid}/fence`, {method: 'POST',
            headers: {...json, 'X-CSRF-Token': s.csrf_token}, body});
        return [without.status, (await without.json()).detail, wrong.status, right.status];
    }""", hid)
    assert result[0] == 403 and "CSRF" in result[1], result
    assert result[2] == 403 and result[3] == 200, result
    # The same cookie from another client, without the header: refused too.
    cookie = next(c for c in page.context.cookies() if c["name"] == "hostpower_session")
    with httpx.Client(base_url=engine.url, cookies={"hostpower_session": cookie["value"]}) as c:
        assert c.get("/api/hosts").status_code == 200
        r = c.put("/api/config/FenceStopStatusRetries", json={"value": "3"})
        assert r.status_code == 403
        r = c.put("/api/config/FenceStopStatusRetries", json={"value": "3"},
                  headers={"X-CSRF-Token": page.evaluate(
                      "fetch('/api/session').then(r => r.json()).then(s => s.csrf_token)"),
                      "Origin": "https://evil.example"})
        assert r.status_code == 403 and "cross-site" in r.json()["detail"]
    assert engine.api().get("/api/config/FenceStopStatusRetries").json()["value"] == "18"


def test_event_log_filters_by_host_and_severity(page, engine: Engine) -> None:  # type: ignore[no-untyped-def]
    login(page, ADMIN)
    page.goto("/#/events")
    expect(page.locator("tr[data-event-id]").first).to_be_visible()
    page.get_by_label("Host").select_option(label="east-a-2")
    hid = engine.host_id("east-a-2")
    expect(page.locator(f".events-box[data-query='?host={hid}&limit=200']")).to_have_count(1)
    expect(page.locator("tr[data-event-id]").first).to_be_visible()
    hosts = set(page.locator("tr[data-event-id] td:nth-child(3)").all_text_contents())
    assert hosts == {"east-a-2"}, hosts
    page.get_by_label("Severity").select_option("error")
    expect(page.locator(f".events-box[data-query='?host={hid}&severity=error&limit=200']")).to_have_count(1)
    expect(page.locator("tr[data-event-id]")).to_have_count(0)
    expect(page.locator(".empty")).to_contain_text("No event matches")


def test_event_log_names_the_engine_that_wrote_each_event(page, engine: Engine) -> None:  # type: ignore[no-untyped-def]
    hid = engine.host_id("west-a-2")
    # Written by the engine: a status through the chain (its attempt events name the engine).
    api = engine.api()
    assert api.post(f"/api/hosts/{hid}/fence", json={"fence_type": "status"}).status_code == 200
    by_engine = [e for e in api.get("/api/events", params={"host": hid}).json()
                 if e["engine"] == ENGINE_NAME]
    assert by_engine, "the engine's status check wrote no event naming it"
    # Written by another engine sharing the database, and by the CLI (no engine).
    with engine.ctx.db.session() as s:
        peer = Events(s).add(Event(Severity.WARNING, "fence.note", "west-a-2: seen from elsewhere",
                                   host_id=hid, host_name="west-a-2", engine="e-test"))
        cli = Events(s).add(Event(Severity.INFO, "fence.note", "cli-marker: written by the CLI",
                                  host_id=hid, host_name="west-a-2"))
    login(page, ADMIN)
    page.goto("/#/events")
    page.get_by_label("Host").select_option(label="west-a-2")
    expect(page.locator(f".events-box[data-query='?host={hid}&limit=200']")).to_have_count(1)
    expect(page.locator(".events-table th").last).to_have_text("Engine")

    def engine_cell(event_id: int):  # type: ignore[no-untyped-def]
        return page.locator(f"tr[data-event-id='{event_id}'] td[data-col=engine]")

    expect(engine_cell(by_engine[-1]["id"])).to_have_text(ENGINE_NAME)
    expect(engine_cell(peer.id)).to_have_text("e-test")
    expect(engine_cell(cli.id)).to_have_text("—")
    # The search finds an engine's events; a list naming no engine has no engine column.
    page.get_by_label("Search messages").fill("e-test")
    expect(page.locator("tr[data-event-id]")).to_have_count(1)
    page.get_by_label("Search messages").fill("cli-marker")
    expect(page.locator("tr[data-event-id]")).to_have_count(1)
    expect(page.locator(f"tr[data-event-id='{cli.id}']")).to_be_visible()
    expect(page.locator(".events-table th")).to_have_text(
        ["Time", "Severity", "Host", "Event", "Message", "Operation"])
    expect(page.locator("td[data-col=engine]")).to_have_count(0)


def test_engines_page_shows_each_engine_its_state_and_hosts(page, engine: Engine) -> None:  # type: ignore[no-untyped-def]
    api = engine.api()
    total = len(api.get("/api/hosts").json())
    login(page, VIEWER)  # every logged-in user sees the engines
    page.get_by_role("link", name="Engines").click()
    expect(page).to_have_url(re.compile(r"#/engines$"))
    expect(page.locator(".nav-link.active")).to_have_text("Engines")
    me = page.locator(f"tr[data-engine='{ENGINE_NAME}']")
    expect(me.locator("[data-engine-state]")).to_have_text("alive")
    expect(me.locator("[data-engine-state]")).to_have_class(re.compile(r"\btone-ok\b"))
    expect(me.locator(".self-tag")).to_have_text("this engine")
    expect(me.locator("[data-col=hosts]")).to_have_text(str(total))
    expect(me).to_contain_text(engine.url)
    mine = next(e for e in api.get("/api/engines").json() if e["name"] == ENGINE_NAME)
    expect(me.locator("[data-col=generation]")).to_have_text(str(mine["generation"]))
    # Started, last renewal, lease expires: times like the rest of the console's
    # (hh:mm:ss, after the date unless today), the database's ISO time as title.
    expect(me.locator("td.nowrap")).to_have_text([re.compile(r"\d\d:\d\d:\d\d$")] * 3)
    expect(me.locator("td.nowrap").first).to_have_attribute("title", mine["started_at"])

    # A second engine joins the database (as `hostpower serve` does on a shared
    # PostgreSQL): shown by the page's own refresh, alive, not this one, and the
    # hosts are shared between the two.
    with engine.ctx.db.session() as s:
        generation = Engines(s).claim("e-other", "http://127.0.0.1:9", 600)
    assert generation is not None
    other = page.locator("tr[data-engine='e-other']")
    expect(other.locator("[data-engine-state]")).to_have_text("alive", timeout=8000)
    expect(other.locator(".self-tag")).to_have_count(0)
    listed = api.get("/api/engines").json()
    expect(page.locator("tr[data-engine]")).to_have_count(len(listed))
    expect(page.locator(".card-toolbar")).to_contain_text(
        f"{len(listed)} engines · {sum(e['state'] == 'alive' for e in listed)} alive")
    shares = {e["name"]: e["hosts"] for e in listed}
    assert shares[ENGINE_NAME] + shares["e-other"] == total, shares
    expect(me.locator("[data-col=hosts]")).to_have_text(str(shares[ENGINE_NAME]))
    expect(other.locator("[data-col=hosts]")).to_have_text(str(shares["e-other"]))

    # It stops cleanly: stopped (neutral), and its hosts are this engine's again.
    with engine.ctx.db.session() as s:
        assert Engines(s).leave("e-other", generation)
    page.locator("[data-action=refresh]").click()
    expect(other.locator("[data-engine-state]")).to_have_text("stopped")
    expect(other.locator("[data-engine-state]")).to_have_class(re.compile(r"\btone-muted\b"))
    expect(other.locator("[data-col=hosts]")).to_have_text("0")
    expect(me.locator("[data-col=hosts]")).to_have_text(str(total))

    # One that stops renewing without leaving (a crash): expired once its lease ends.
    with engine.ctx.db.session() as s:
        assert Engines(s).claim("e-crashed", "http://127.0.0.1:10", 1.0) is not None
    page.wait_for_timeout(1200)
    page.locator("[data-action=refresh]").click()
    crashed = page.locator("tr[data-engine='e-crashed']")
    expect(crashed.locator("[data-engine-state]")).to_have_text("expired")
    expect(crashed.locator("[data-engine-state]")).to_have_class(re.compile(r"\btone-bad\b"))
    expect(crashed.locator("[data-col=hosts]")).to_have_text("0")
    listed = api.get("/api/engines").json()
    assert [e["name"] for e in listed if e["state"] == "alive"] == [ENGINE_NAME], listed
    expect(page.locator(".card-toolbar")).to_contain_text(f"{len(listed)} engines · 1 alive")


def test_notifiers_page_shows_delivery_state_and_sends_a_test(page, engine: Engine) -> None:  # type: ignore[no-untyped-def]
    from notifykit import WebhookReceiver

    key = "console-webhook-key-0123456789"
    api = engine.api()
    with WebhookReceiver(key) as good, WebhookReceiver(key, answer_status=500) as dead:
        assert api.put("/api/config/NotificationAttempts", json={"value": "1"}).status_code == 200
        made = [api.post("/api/notifiers", json={
            "name": name, "type": "webhook", "webhook": {"url": hook.url}, "secret": key,
            "min_severity": "info", "kinds": ["audit.*"]}) for name, hook in
            (("dead-hook", dead), ("ok-hook", good))]
        assert [r.status_code for r in made] == [201, 201], [r.text for r in made]
        try:
            # Adding each was an audit.write event (dead-hook's own creation included,
            # docs/notifications.md): dead-hook's receiver refuses both.
            wait_until(lambda: api.get(f"/api/notifiers/{made[0].json()['id']}").json()
                       ["state"]["dropped"] == 2, 30, "dead-hook to fail")
            login(page, ADMIN)
            page.get_by_role("link", name="Notifiers").click()
            expect(page).to_have_url(re.compile(r"#/notifiers$"))
            dead_row = page.locator("tr[data-notifier='dead-hook']")
            expect(dead_row.locator("[data-notifier-state]")).to_have_text("failing")
            expect(dead_row.locator("[data-col=dropped]")).to_have_text("2")
            expect(dead_row.locator("[data-col=error]")).to_contain_text("answered 500")
            ok_row = page.locator("tr[data-notifier='ok-hook']")
            expect(ok_row.locator("[data-notifier-state]")).to_have_text("ok")
            expect(ok_row.locator("[data-col=filter]")).to_have_text("info+ · audit.*")
            expect(page.locator(".card-toolbar")).to_contain_text("2 notifiers · 1 failing")
            ok_row.get_by_role("button", name="Test").click()
            expect(page.locator(".toast")).to_contain_text("Test message delivered by ok-hook")
            assert any(r.event["kind"] == "notifier.test" for r in good.delivered())
            assert key not in page.content()
        finally:
            for r in made:
                api.delete(f"/api/notifiers/{r.json()['id']}")
            api.put("/api/config/NotificationAttempts", json={"value": "6"})


def test_not_ready_banner_while_the_engine_cannot_renew_its_lease(page, engine: Engine) -> None:  # type: ignore[no-untyped-def]
    """A real "not ready": another incarnation takes the engine's name the way
    a take-over after a crash does (ends the lease as last seen, claims the
    name, with a lease it never renews). The engine's renewals fail from then
    on ("held by another live engine"); once a quarter of its lease is left
    /api/health answers 503 and the banner shows, with the detail. The name
    freed, the engine joins again, health is ok and the banner goes."""
    login(page, VIEWER)
    page.goto("/#/engines")  # no page here asks for a power action, refused meanwhile
    banner = page.locator(".health-banner")
    me = page.locator(f"tr[data-engine='{ENGINE_NAME}']")
    expect(me.locator(".self-tag")).to_be_visible()
    expect(banner).to_be_hidden()

    def take_the_name() -> int | None:
        with engine.ctx.db.session() as s:
            engines = Engines(s)
            seen = engines.get(ENGINE_NAME)
            if seen is None or not engines.expire(seen):
                return None  # renewed in between: look again
            return engines.claim(ENGINE_NAME, "http://127.0.0.1:11", 120)

    intruder = wait_until(take_the_name, 10, "the engine's name to be taken")
    lease = int(engine.api().get("/api/config/EngineLeaseInSec").json()["value"])
    expect(banner).to_be_visible(timeout=(lease + 6) * 1000)
    expect(banner).to_contain_text("This engine cannot renew its lease in the database: "
                                   "it starts no power action until it can.")
    expect(banner.locator(".health-detail")).to_contain_text("the engine lease was last renewed")
    expect(banner.locator(".health-detail")).to_contain_text(
        f"engine name '{ENGINE_NAME}' is held by another live engine")
    health = page.evaluate("fetch('/api/health').then(async r => [r.status, await r.json()])")
    assert health[0] == 503 and health[1]["status"] == "not ready", health
    # The row is the intruder's now: not this engine's lease.
    expect(me.locator(".self-tag")).to_have_count(0, timeout=8000)

    with engine.ctx.db.session() as s:
        assert Engines(s).leave(ENGINE_NAME, intruder)
    expect(banner).to_be_hidden(timeout=10_000)
    assert page.evaluate("fetch('/api/health').then(r => r.status)") == 200
    expect(me.locator(".self-tag")).to_be_visible(timeout=8000)
    expect(me.locator("[data-col=generation]")).to_have_text(str(intruder + 1))
    expect(me.locator("[data-engine-state]")).to_have_text("alive")


def seed_readiness(engine: Engine) -> None:
    """What a PM health check round would store: east-a-1 ready (the engine
    and east-a-2), east-a-2 through the engine only, east-a-3 (two power
    supplies) through none: its second agent answers nowhere. The other
    hosts are not checked (the check is off in this engine)."""
    def paths(name: str, table: dict[str, list[tuple[str, str]]]) -> None:
        hid = engine.host_id(name)
        with engine.ctx.db.session() as s:
            agents = Inventory(s, engine.ctx.box).agents(hid)
            checks = [PathCheck(proxy, "engine" if proxy == "engine" else "cluster", a.id,
                                f"dummy@127.0.0.1#{n}", PathState(state), message, 0.12)
                      for proxy, rows in table.items()
                      for n, (a, (state, message)) in enumerate(zip(agents, rows), 1)]
            verdict = assess(hid, name, agents, checks)
            ReadinessStore(s).save(replace(verdict, checked_at=datetime.now(UTC), engine=ENGINE_NAME))

    refused = ("fails", "agent at 127.0.2.13:54321 refused the connection")
    paths("east-a-1", {"engine": [("works", "on")], "east-a-2": [("works", "on")],
                       "east-a-3": [refused]})
    paths("east-a-2", {"engine": [("works", "on")],
                       "east-a-1": [("fails", "timed out after 10 s")], "east-a-3": [refused]})
    paths("east-a-3", {"engine": [("works", "on"), ("fails", "status file missing")],
                       "east-a-1": [("works", "on"), ("fails", "status file missing")],
                       "east-b-2": [("not_tried", "not up (status maintenance)")] * 2})


def test_readiness_matrix_flags_single_path_and_unfenceable_hosts(page, engine: Engine) -> None:  # type: ignore[no-untyped-def]
    seed_readiness(engine)
    listed = {r["host"]: r for r in engine.api(VIEWER).get("/api/readiness").json()}
    login(page, VIEWER)  # every logged-in user sees it
    page.get_by_role("link", name="Readiness").click()
    expect(page).to_have_url(re.compile(r"#/readiness$"))
    for state in ("ready", "single_path", "unfenceable", "unknown"):
        expect(page.locator(f".summary-item[data-readiness={state}] .summary-count")).to_have_text(
            str(sum(r["readiness"] == state for r in listed.values())))
    expect(page.locator(".check-note")).to_contain_text("The PM health check is off")
    rows = page.locator(".readiness-table tbody tr[data-host]")
    expect(rows).to_have_count(len(listed))

    def row(name: str):  # type: ignore[no-untyped-def]
        return page.locator(f".readiness-table tr[data-host='{name}']")

    expect(row("east-a-1").locator(".readiness-flag")).to_have_count(0)
    expect(row("east-a-1").locator("[data-col=paths]")).to_have_text("2")
    expect(row("east-a-2").locator("[data-flag=single_path]")).to_have_text("single point of failure")
    expect(row("east-a-2").locator("[data-readiness-state]")).to_have_text("single path")
    expect(row("east-a-3").locator("[data-flag=unfenceable]")).to_have_text("cannot be fenced")
    expect(row("east-a-3").locator("[data-col=paths]")).to_have_text("0")
    expect(row("east-b-1").locator("[data-readiness-state]")).to_have_text("unknown")
    # The matrix: one column per candidate proxy, the engine last.
    expect(page.locator(".readiness-table th.proxy-col")).to_have_text(
        ["east-a-1", "east-a-2", "east-a-3", "east-b-2", "engine"])
    failing = row("east-a-2").locator("td[data-proxy='east-a-1']")
    expect(failing).to_have_attribute("data-state", "fails")
    expect(failing).to_have_attribute("title", re.compile("timed out after 10 s"))
    expect(row("east-a-2").locator("td[data-proxy='engine']")).to_have_attribute("data-state", "works")
    expect(row("east-a-2").locator("td[data-proxy='east-b-2']")).not_to_have_attribute(
        "data-state", re.compile("."))  # no candidate of east-a-2: blank
    # Two power supplies: one mark each; the first works, the second does not.
    mixed = row("east-a-3").locator("td[data-proxy='engine']")
    expect(mixed).to_have_attribute("data-state", "mixed")
    expect(mixed.locator(".mark")).to_have_count(2)
    expect(mixed.locator(".mark").nth(1)).to_have_attribute("data-state", "fails")
    expect(row("east-a-3").locator("td[data-proxy='east-b-2'] .mark[data-state=not_tried]")).to_have_count(2)
    # A click shows every path with its reason.
    row("east-a-2").click()
    details = page.locator("tr[data-details-of='east-a-2']")
    expect(details).to_contain_text("east-a-2 can be fenced only through engine: a single point of failure")
    expect(details.locator("tr[data-proxy='east-a-1'][data-state=fails]")).to_contain_text(
        "timed out after 10 s")
    # Only the hosts that need attention.
    page.get_by_label("Show").select_option("problems")
    expect(rows).to_have_count(2)
    expect(rows.first).to_have_attribute("data-host", "east-a-2")
    page.get_by_label("Cluster").select_option("east-b")
    expect(page.locator(".readiness-box .empty")).to_contain_text("No host matches these filters.")


def test_screenshots_of_the_main_pages(page, engine: Engine) -> None:  # type: ignore[no-untyped-def]
    """The main pages as PNG (docs/screenshots/ with HOSTPOWER_UPDATE_SCREENSHOTS=1)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    login(page, ADMIN)
    expect(host_row(page, "east-b-1").locator("[data-power]")).to_have_text("off")
    expect(page.locator("tbody td.power-cell [data-power]")).to_have_count(7, timeout=30_000)
    page.mouse.move(0, 0)
    page.screenshot(path=SCREENSHOTS / "hosts.png")

    hid = engine.host_id("east-a-3")
    page.goto(f"/#/hosts/{hid}/pm")
    expect(page.locator(".pm-tab[data-loaded]")).to_have_count(1)
    expect(page.locator(".agents-table tbody tr")).to_have_count(2)
    page.locator(".add-source").select_option("dc")
    page.get_by_role("button", name="Add", exact=True).click()
    page.locator(".chain-card [data-action=test]").click()
    expect(page.locator(".chain-card .status-result")).to_be_visible()
    # Tall enough for the whole tab (a full-page shot would cut through the sticky save bar).
    page.set_viewport_size({"width": 1440, "height": 1300})
    page.evaluate("window.scrollTo(0, 0)")
    page.mouse.move(0, 0)
    page.screenshot(path=SCREENSHOTS / "host-power-management.png")
    page.set_viewport_size({"width": 1440, "height": 900})
    page.locator("[data-action=reset]").click()

    page.goto("/#/events")
    expect(page.locator("tr[data-event-id]").first).to_be_visible()
    page.screenshot(path=SCREENSHOTS / "events.png")

    page.goto("/#/engines")
    me = page.locator(f"tr[data-engine='{ENGINE_NAME}']")
    expect(me.locator("[data-engine-state]")).to_have_text("alive")
    page.screenshot(path=SCREENSHOTS / "engines.png")

    seed_readiness(engine)
    page.goto("/#/readiness")
    expect(page.locator(".readiness-table tr[data-readiness=unfenceable]")).to_have_count(1)
    page.locator(".readiness-table tr[data-host='east-a-2']").click()
    expect(page.locator("tr[data-details-of='east-a-2']")).to_be_visible()
    page.mouse.move(0, 0)
    page.screenshot(path=SCREENSHOTS / "readiness.png")

    page.goto("/#/config")
    expect(page.locator("tr[data-key]").first).to_be_visible()
    page.screenshot(path=SCREENSHOTS / "config.png")
    for name in ("hosts", "host-power-management", "events", "engines", "readiness", "config"):
        assert (SCREENSHOTS / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
