"""The wire format between engine and agent: what one side writes, the other reads back,
and what is malformed is refused with a reason (no sockets here; test_hostagent.py
runs the same bodies over mutual TLS)."""

from __future__ import annotations

import json

import pytest

from hostpower.hostagent.wire import (
    FenceRequest, HeartbeatAnswer, StorageLeaseAnswer, StorageLeaseRequest, error_body,
    fence_answer, read_error_body, read_fence_answer,
)
from hostpower.model.errors import ValidationError
from hostpower.model.power import AgentSpec, FenceAction, FenceResult, Outcome
from hostpower.model.secret import Secret

PASSWORD = "wire-Pw-8812"
SPEC = AgentSpec(type="ipmilan", address="127.0.0.9", username="admin",
                 password=Secret(PASSWORD), port=6230, plug=None,
                 options=(("lanplus", "1"), ("power_wait", "0")))


def through_json(body: object) -> object:
    return json.loads(json.dumps(body))


@pytest.mark.parametrize("prefer_native", [None, True, False])
def test_a_fence_request_reads_back_as_written(prefer_native: bool | None) -> None:
    request = FenceRequest(SPEC, FenceAction.REBOOT, 12.5, prefer_native)
    body = through_json(request.to_body())
    assert ("prefer_native" in body) is (prefer_native is not None)  # type: ignore[operator]
    assert FenceRequest.from_body(body) == request


def test_a_fence_request_without_timeout_gets_the_default() -> None:
    body = FenceRequest(SPEC, FenceAction.STATUS).to_body()
    del body["timeout"]
    assert FenceRequest.from_body(body).timeout == 60.0


@pytest.mark.parametrize(("change", "field"), [
    (lambda b: b.update(prefer_native=None), "prefer_native"),
    (lambda b: b.update(prefer_native="yes"), "prefer_native"),
    (lambda b: b.update(extra=1), "extra"),
    (lambda b: b.update(timeout=True), "timeout"),
    (lambda b: b.update(timeout=601), "timeout"),
    (lambda b: b["agent"].update(type=""), "agent.type"),
    (lambda b: b["agent"].update(options="lanplus=1"), "agent.options"),
    (lambda b: b["agent"].update(address=7), "agent.address"),
])
def test_a_bad_fence_request_names_the_field_never_the_password(change, field: str) -> None:  # type: ignore[no-untyped-def]
    body = FenceRequest(SPEC, FenceAction.OFF, 5).to_body()
    change(body)
    with pytest.raises(ValidationError) as refused:
        FenceRequest.from_body(body)
    assert refused.value.field == field
    assert PASSWORD not in str(refused.value)


def test_a_fence_answer_reads_back_as_written() -> None:
    result = FenceResult(FenceAction.OFF, Outcome.OFF, "Success: Powered OFF", 0, 0.25)
    assert read_fence_answer(through_json(fence_answer(result))) == result
    bare = FenceResult(FenceAction.STATUS, Outcome.ERROR, "", None, 0.0)
    assert read_fence_answer(through_json(fence_answer(bare))) == bare


@pytest.mark.parametrize("answer", [
    [],
    {"outcome": "on"},
    {"action": "status", "outcome": "maybe"},
    {"action": "status", "outcome": "on", "message": 5},
    {"action": "status", "outcome": "on", "exit_code": "0"},
    {"action": "status", "outcome": "on", "exit_code": True},
    {"action": "status", "outcome": "on", "duration": "1"},
])
def test_a_malformed_fence_answer_is_refused(answer: object) -> None:
    with pytest.raises(ValueError):
        read_fence_answer(answer)


def test_a_heartbeat_answer_reads_back_as_written() -> None:
    beat = HeartbeatAnswer(host="node1", boot_id="b-1", uptime=3.25, agent_version="0.1.0",
                           fence_agent_types=frozenset({"wti", "dummy"}))
    body = through_json(beat.to_body())
    assert body["fence_agent_types"] == ["dummy", "wti"]  # type: ignore[index]
    assert HeartbeatAnswer.from_body(body) == beat


@pytest.mark.parametrize("change", [
    lambda b: b.pop("host"),
    lambda b: b.update(boot_id=7),
    lambda b: b.update(uptime="long"),
    lambda b: b.update(fence_agent_types="wti"),
    lambda b: b.update(fence_agent_types=["wti", 1]),
])
def test_a_malformed_heartbeat_answer_is_refused(change) -> None:  # type: ignore[no-untyped-def]
    body = HeartbeatAnswer("node1", "b-1", 1.0, "0.1.0", frozenset({"wti"})).to_body()
    change(body)
    with pytest.raises(ValueError):
        HeartbeatAnswer.from_body(body)


def test_error_bodies() -> None:
    assert read_error_body(through_json(error_body("agent.port: out of range", "agent.port"))) \
        == ("agent.port: out of range", "agent.port")
    assert read_error_body(error_body("no such resource: /x")) == ("no such resource: /x", None)
    assert read_error_body({"something": "else"}) is None
    assert read_error_body(["detail"]) is None


# --------------------------------------------------------------------------- the storage lease


def test_a_storage_lease_request_reads_back_as_written() -> None:
    request = StorageLeaseRequest("c1-h2.example.com")
    assert StorageLeaseRequest.from_body(through_json(request.to_body())) == request


@pytest.mark.parametrize(("body", "field"), [
    ([], "body"),
    ({}, "host"),
    ({"host": 7}, "host"),
    ({"host": ""}, "host"),
    ({"host": "../../etc/passwd"}, "host"),
    ({"host": ".."}, "host"),
    ({"host": ".hidden"}, "host"),
    ({"host": "a/b"}, "host"),
    ({"host": "a\x00b"}, "host"),
    ({"host": "x" * 256}, "host"),
    ({"host": "h1", "path": "/tmp"}, "path"),
])
def test_a_bad_storage_lease_request_is_refused_naming_the_field(body: object, field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        StorageLeaseRequest.from_body(body)
    assert refused.value.field == field


@pytest.mark.parametrize("answer", [
    StorageLeaseAnswer("c1-h1", False, detail="this host is on no shared storage"),
    StorageLeaseAnswer("c1-h1", True, exists=False, watched_for=12.5),
    StorageLeaseAnswer("c1-h1", True, exists=True, renewed_ago=1.25, watched_for=40.0,
                       counter=17, boot_id="b-1", written_at=1733300000.5, interval=2.0,
                       mtime_age=-0.2),
    StorageLeaseAnswer("c1-h1", True, exists=True, watched_for=3.0, mtime_age=1.0,
                       detail="malformed: not a JSON record"),
])
def test_a_storage_lease_answer_reads_back_as_written(answer: StorageLeaseAnswer) -> None:
    assert StorageLeaseAnswer.from_body(through_json(answer.to_body())) == answer


@pytest.mark.parametrize(("change", "why"), [
    (lambda b: b.update(host=None), "host"),
    (lambda b: b.update(watching="yes"), "watching"),
    (lambda b: b.pop("exists"), "exists"),
    (lambda b: b.update(counter=True), "counter"),
    (lambda b: b.update(counter=-1), "counter"),
    (lambda b: b.update(renewed_ago="2"), "renewed_ago"),
    (lambda b: b.update(renewed_ago=-1.0), "negative"),
    (lambda b: b.update(watched_for=float("inf")), "watched_for"),
    (lambda b: b.update(boot_id=5), "boot_id"),
    (lambda b: b.update(detail=["x"]), "detail"),
])
def test_a_malformed_storage_lease_answer_says_what_is_wrong(change, why: str) -> None:  # type: ignore[no-untyped-def]
    body = StorageLeaseAnswer("c1-h1", True, exists=True, renewed_ago=1.0, watched_for=5.0,
                              counter=3, boot_id="b").to_body()
    change(body)
    with pytest.raises(ValueError, match=why):
        StorageLeaseAnswer.from_body(body)
