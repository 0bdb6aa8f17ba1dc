"""The inventory store on SQLite and PostgreSQL: rules enforced at save time,
secrets encrypted at rest, nothing half-stored."""

from __future__ import annotations

import os
import stat

import pytest
from sqlalchemy import text

from hostpower.model.errors import ConflictError, NotFoundError, ValidationError
from hostpower.model.inventory import (
    FencingPolicy, HostStatus, NonOperationalReason, PowerManagement,
)
from hostpower.model.secret import Secret
from hostpower.store.crypto import SecretBox, SecretKeyError
from hostpower.store.inventory import AgentInput, HostInput, Inventory

SECRET = "S3cr3t-pm-pa55word"


@pytest.fixture
def world(ctx):  # type: ignore[no-untyped-def]
    """dc1/{c1: h1,h2; c2: h3}, dc2/{c3: h4}."""
    with ctx.db.session() as s:
        inv = Inventory(s, ctx.box)
        dc1, dc2 = inv.add_data_center("dc1"), inv.add_data_center("dc2")
        c1, c2 = inv.add_cluster("c1", dc1.id), inv.add_cluster("c2", dc1.id)
        c3 = inv.add_cluster("c3", dc2.id)
        ids = {}
        for name, cluster, addr in (("h1", c1, "10.0.0.1"), ("h2", c1, "10.0.0.2"),
                                    ("h3", c2, "10.0.0.3"), ("h4", c3, "h4.example.com")):
            ids[name] = inv.add_host(HostInput(name, addr, cluster.id, HostStatus.UP)).id
    return ids


def count(ctx, table: str) -> int:  # type: ignore[no-untyped-def]
    with ctx.db.engine.connect() as conn:
        return conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()


def test_inventory_round_trip(ctx, world) -> None:  # type: ignore[no-untyped-def]
    with ctx.db.session() as s:
        snap = Inventory(s, ctx.box).snapshot()
    assert sorted(h.name for h in snap.hosts) == ["h1", "h2", "h3", "h4"]
    h4 = snap.find_host("H4.EXAMPLE.COM")
    assert h4 is not None and snap.data_center_of(h4) == next(
        d.id for d in snap.data_centers if d.name == "dc2")


def test_chain_is_validated_when_saved(ctx, world) -> None:  # type: ignore[no-untyped-def]
    h1 = world["h1"]
    cases = [
        ("clustr", "pm_proxies: entry 1 'clustr' is an unknown word"),
        ("cluster,cluster", "entry 2 'cluster' duplicates entry 1"),
        ("h1", "entry 1 'h1' is the host itself"),
        ("cluster,10.0.0.1", "entry 2 '10.0.0.1' is the host itself"),
        ("nosuchhost", "entry 1 'nosuchhost' is not a defined host"),
        ("h2,10.0.0.2", "entry 2 '10.0.0.2' names the same host as entry 1"),
    ]
    for spec, message in cases:
        with pytest.raises(ValidationError) as err, ctx.db.session() as s:
            Inventory(s, ctx.box).update_host(h1, power_management=PowerManagement(pm_proxies=spec))
        assert message in str(err.value), spec
    with ctx.db.session() as s:
        assert Inventory(s, ctx.box).host(h1).power_management.pm_proxies == ""
        host = Inventory(s, ctx.box).update_host(
            h1, power_management=PowerManagement(enabled=True, pm_proxies=" H4.example.com , DC"))
    assert host.power_management.pm_proxies == "H4.example.com,dc"


def test_new_host_may_not_name_itself_in_its_chain(ctx, world) -> None:  # type: ignore[no-untyped-def]
    with ctx.db.session() as s:
        c1 = Inventory(s, ctx.box).host(world["h1"]).cluster_id
    with pytest.raises(ValidationError, match="is the host itself"), ctx.db.session() as s:
        Inventory(s, ctx.box).add_host(HostInput(
            "h9", "10.0.0.9", c1, power_management=PowerManagement(pm_proxies="h2,h9")))
    assert count(ctx, "hosts") == 4


def test_host_names_and_addresses_are_unique_across_both(ctx, world) -> None:  # type: ignore[no-untyped-def]
    with ctx.db.session() as s:
        c1 = Inventory(s, ctx.box).host(world["h1"]).cluster_id
    for name, addr, field in (("H1", "10.9.9.9", "name"), ("h9", "10.0.0.2", "address"),
                              ("10.0.0.3", "10.9.9.9", "name")):
        with pytest.raises(ConflictError) as err, ctx.db.session() as s:
            Inventory(s, ctx.box).add_host(HostInput(name, addr, c1))
        assert err.value.field == field
    assert count(ctx, "hosts") == 4


def test_host_named_in_a_chain_cannot_be_removed_or_renamed(ctx, world) -> None:  # type: ignore[no-untyped-def]
    with ctx.db.session() as s:
        Inventory(s, ctx.box).update_host(world["h1"], power_management=PowerManagement(pm_proxies="h2"))
    with pytest.raises(ConflictError, match="named in the proxy chain of h1"), ctx.db.session() as s:
        Inventory(s, ctx.box).delete_host(world["h2"])
    with pytest.raises(ConflictError, match="named in the proxy chain of h1"), ctx.db.session() as s:
        Inventory(s, ctx.box).update_host(world["h2"], name="h2-renamed")
    with ctx.db.session() as s:  # changing its address is fine: the chain names it by name
        assert Inventory(s, ctx.box).update_host(world["h2"], address="10.0.0.22").address == "10.0.0.22"


def test_host_keywords_are_not_host_names(ctx, world) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError, match="is a proxy source keyword"), ctx.db.session() as s:
        Inventory(s, ctx.box).add_host(HostInput("Cluster", "10.1.1.1", 1))


def test_non_operational_needs_a_reason(ctx, world) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError) as err, ctx.db.session() as s:
        Inventory(s, ctx.box).set_status(world["h1"], HostStatus.NON_OPERATIONAL)
    assert err.value.field == "non_operational_reason"
    with ctx.db.session() as s:
        h = Inventory(s, ctx.box).set_status(world["h1"], HostStatus.NON_OPERATIONAL,
                                             NonOperationalReason.STORAGE_UNREACHABLE)
        assert h.non_operational_reason is NonOperationalReason.STORAGE_UNREACHABLE
        h = Inventory(s, ctx.box).set_status(world["h1"], HostStatus.UP)
        assert h.non_operational_reason is None


def test_passwords_are_encrypted_at_rest_and_readable_with_the_key(ctx, world) -> None:  # type: ignore[no-untyped-def]
    with ctx.db.session() as s:
        agent = Inventory(s, ctx.box).add_agent(world["h1"], AgentInput(
            "ipmilan", "10.1.0.1", 623, "admin", Secret(SECRET), (("lanplus", "1"),)))
    with ctx.db.engine.connect() as conn:
        raw = conn.execute(text("SELECT * FROM fence_agents")).mappings().one()
    assert SECRET not in " ".join(str(v) for v in raw.values())
    assert raw["password_encrypted"]
    with ctx.db.session() as s:
        loaded = Inventory(s, ctx.box).agent(world["h1"], agent.id)
    assert loaded.password.reveal() == SECRET
    assert SECRET not in repr(loaded)


def test_encrypted_options_are_encrypted_at_rest(ctx, world) -> None:  # type: ignore[no-untyped-def]
    with ctx.db.session() as s:
        Inventory(s, ctx.box).add_agent(world["h1"], AgentInput(
            "apc_snmp", "10.1.0.2", None, "apc", Secret("x"),
            (("community", "very-private-community"),), encrypt_options=True))
        [agent] = Inventory(s, ctx.box).agents(world["h1"])
    assert agent.options == (("community", "very-private-community"),)
    with ctx.db.engine.connect() as conn:
        raw = conn.execute(text("SELECT options FROM fence_agents")).scalar_one()
    assert "very-private-community" not in raw


def test_agent_orders_default_to_the_next_group_and_same_order_groups(ctx, world) -> None:  # type: ignore[no-untyped-def]
    with ctx.db.session() as s:
        inv = Inventory(s, ctx.box)
        a = inv.add_agent(world["h1"], AgentInput("apc_snmp", "10.1.0.3"))
        b = inv.add_agent(world["h1"], AgentInput("apc_snmp", "10.1.0.4", order=a.order))
        c = inv.add_agent(world["h1"], AgentInput("ipmilan", "10.1.0.5"))
    assert (a.order, b.order, c.order) == (1, 1, 2)


@pytest.mark.parametrize("agent, field, message", [
    (AgentInput("nosuch", "10.1.0.1"), "type", "unknown fence agent type 'nosuch'"),
    (AgentInput("kdump", "10.1.0.1"), "type", "does not switch power"),
    (AgentInput("ipmilan", ""), "address", "must not be empty"),
    (AgentInput("ipmilan", "not an address"), "address", "is not a valid host name or IP"),
    (AgentInput("ipmilan", "10.1.0.1", port=70000), "port", "out of range"),
    (AgentInput("ipmilan", "10.1.0.1", port=0), "port", "out of range"),
    (AgentInput("ipmilan", "10.1.0.1", options=(("lanplus", "1\naction=off"),)), "options",
     "must not contain a newline"),
    (AgentInput("ipmilan", "10.1.0.1", options=(("a=b", "1"),)), "options", "must not contain '='"),
    (AgentInput("ipmilan", "10.1.0.1", options=(("x", "a=b"),)), "options", "must not contain '='"),
    (AgentInput("ipmilan", "10.1.0.1", options=(("action", "off"),)), "options", "is reserved"),
    (AgentInput("ipmilan", "10.1.0.1", options=(("Bad-Key", "1"),)), "options", "is invalid"),
    (AgentInput("ipmilan", "10.1.0.1", password=Secret("pw\naction=off")), "password",
     "must not contain a line break"),
    (AgentInput("ipmilan", "10.1.0.1", order=0), "order", "out of range"),
])
def test_bad_agents_are_refused_and_nothing_is_stored(ctx, world, agent, field, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError) as err, ctx.db.session() as s:
        Inventory(s, ctx.box).add_agent(world["h1"], agent)
    assert err.value.field == field
    assert message in err.value.message
    assert "pw" not in err.value.message
    assert count(ctx, "fence_agents") == 0


def test_deletes_refuse_objects_still_in_use(ctx, world) -> None:  # type: ignore[no-untyped-def]
    with ctx.db.session() as s:
        inv = Inventory(s, ctx.box)
        dc1 = next(d for d in inv.data_centers() if d.name == "dc1")
        c1 = next(c for c in inv.clusters() if c.name == "c1")
    with pytest.raises(ConflictError, match="still holds 2 cluster"), ctx.db.session() as s:
        Inventory(s, ctx.box).delete_data_center(dc1.id)
    with pytest.raises(ConflictError, match="still holds 2 host"), ctx.db.session() as s:
        Inventory(s, ctx.box).delete_cluster(c1.id)
    with pytest.raises(NotFoundError), ctx.db.session() as s:
        Inventory(s, ctx.box).host(9999)


def test_cluster_fencing_policy_is_stored(ctx) -> None:  # type: ignore[no-untyped-def]
    from hostpower.model.inventory import ConnectivityPolicy
    with ctx.db.session() as s:
        inv = Inventory(s, ctx.box)
        dc = inv.add_data_center("d")
        c = inv.add_cluster("c", dc.id, fencing_policy=FencingPolicy(
            enabled=False, skip_if_connectivity_broken=ConnectivityPolicy(True, 30),
            skip_if_sd_active=True))
    with ctx.db.session() as s:
        p = Inventory(s, ctx.box).cluster(c.id).fencing_policy
    assert (p.enabled, p.skip_if_connectivity_broken.threshold, p.skip_if_sd_active) == (False, 30, True)
    with pytest.raises(ValidationError, match="threshold"), ctx.db.session() as s:
        Inventory(s, ctx.box).update_cluster(c.id, fencing_policy=FencingPolicy(
            skip_if_connectivity_broken=ConnectivityPolicy(True, 150)))


def test_key_file_is_created_private_and_a_wrong_key_is_detected(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "home" / "secret.key"
    box = SecretBox.load_or_create(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    token = box.encrypt("pw")
    assert SecretBox.load_or_create(path).decrypt(token) == "pw"
    other = SecretBox.load_or_create(tmp_path / "other.key")
    with pytest.raises(SecretKeyError, match="does not match the key file"):
        other.decrypt(token)
    os.chmod(path, 0o644)
    with pytest.raises(SecretKeyError, match="readable by others"):
        SecretBox.load_or_create(path)


def test_revisions_move_with_every_inventory_configuration_or_status_write(ctx, world) -> None:  # type: ignore[no-untyped-def]
    """What tells every engine's cache it is stale: inventory and configuration
    writes move "inventory", a status-only write moves "status", reads and
    other tables move nothing; a failed write moves nothing either."""
    from hostpower.model.events import Event, Severity
    from hostpower.store import revisions
    from hostpower.store.configstore import ConfigStore
    from hostpower.store.events import Events

    def now() -> tuple[int, int]:
        with ctx.db.session() as s:
            r = revisions.current(s)
        return r.inventory, r.status

    inventory, status = now()
    with ctx.db.session() as s:
        Inventory(s, ctx.box).hosts()
        Events(s).add(Event(Severity.INFO, "test", "nothing to do with the inventory"))
    assert now() == (inventory, status)
    with ctx.db.session() as s:
        Inventory(s, ctx.box).set_status(world["h1"], HostStatus.CONNECTING)
        Inventory(s, ctx.box).set_status(world["h2"], HostStatus.CONNECTING)
        assert revisions.moved_by(s) == {"status": status + 1}  # once per transaction
    assert now() == (inventory, status + 1)
    with ctx.db.session() as s:
        Inventory(s, ctx.box).set_status(world["h1"], HostStatus.CONNECTING)  # no change
    assert now() == (inventory, status + 1)
    with ctx.db.session() as s:
        ConfigStore(s).set("FenceProxyDefaultPreferences", "cluster")
    assert now() == (inventory + 1, status + 1)
    with ctx.db.session() as s:
        Inventory(s, ctx.box).update_host(world["h3"], agent_port=5555)
    assert now() == (inventory + 2, status + 1)
    with pytest.raises(ConflictError):
        with ctx.db.session() as s:
            Inventory(s, ctx.box).add_data_center("dc1")
    assert now() == (inventory + 2, status + 1)
