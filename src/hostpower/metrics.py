"""Prometheus metrics of one engine (`GET /metrics`, or `--metrics-bind`).

Each engine exports what it does and what it watches; Prometheus scrapes
every engine and sums. So the gauges about hosts count the hosts *this*
engine owns (the shares add up to the inventory, whichever engine dies), and
the counters count what this process did since it started.

Nothing here reaches into the database at scrape time: the pieces that know
push what they learn — the fencing service when a flow ends, the event
stream for proxy attempts, the monitor after each round, the health check
after each round — and the collector reads three cheap values (lease,
database errors) when scraped. A scrape therefore costs microseconds and
never waits for a busy engine. docs/metrics.md lists the names and example
alerts.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hostpower.model.events import Event
from hostpower.model.inventory import HostStatus
from hostpower.model.proxychain import KEYWORDS, ProxySource
from hostpower.model.readiness import HostReadiness, PathState, Readiness
from hostpower.monitor import RoundReport
from hostpower.store.journal import Operation

FLOW_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
COMMAND_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 60)
ROUND_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10)


def source_kind(source: str) -> str:
    """A chain entry as a label of few values: cluster, dc, other_dc, engine,
    or "host" for a named proxy host (its name would make a label per host)."""
    return source if source in KEYWORDS else ProxySource.HOST.value


class EngineMetrics:
    """The registry of one engine and the hooks that feed it."""

    def __init__(self, may_act: Callable[[], bool] = lambda: True,
                 database_errors: Callable[[], int] = lambda: 0) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.fence_operations = Counter(
            "hostpower_fence_operations", "Fence flows ended, by action and result.",
            ["action", "result", "origin"], registry=r)
        self.fence_duration = Histogram(
            "hostpower_fence_operation_duration_seconds",
            "Time from a fence flow's request to its end.", ["action"], buckets=FLOW_BUCKETS,
            registry=r)
        self.proxy_attempts = Counter(
            "hostpower_proxy_attempts", "Fence agent commands sent through a proxy, by the chain "
            "entry the proxy came from and the outcome.", ["source", "action", "outcome"],
            registry=r)
        self.command_duration = Histogram(
            "hostpower_proxy_attempt_duration_seconds",
            "Time of one fence agent command through a proxy.", ["action"],
            buckets=COMMAND_BUCKETS, registry=r)
        self.events = Counter("hostpower_events", "Events written by this engine.",
                              ["severity"], registry=r)
        self.hosts = Gauge("hostpower_hosts", "Hosts this engine owns, by status (sum over "
                           "engines for the inventory).", ["status"], registry=r)
        self.readiness = Gauge(
            "hostpower_hosts_by_readiness", "Hosts this engine owns and health-checked, by "
            "verdict (ready: two or more paths; single_path; unfenceable).", ["readiness"],
            registry=r)
        self.failing_agents = Gauge(
            "hostpower_pm_agents_failing", "PM agents (devices) of owned hosts that no proxy "
            "could reach at the last health check.", registry=r)
        self.round_duration = Histogram(
            "hostpower_heartbeat_round_duration_seconds", "Duration of a full heartbeat round.",
            buckets=ROUND_BUCKETS, registry=r)
        self.round_lag = Gauge("hostpower_heartbeat_round_lag_seconds",
                               "How late the last heartbeat round started.", registry=r)
        self.heartbeats = Counter("hostpower_heartbeats", "Heartbeats sent, by result.",
                                  ["result"], registry=r)
        self.engines_alive = Gauge("hostpower_engines_alive", "Live engines sharing the "
                                   "database, as this engine sees them.", registry=r)
        for status in HostStatus:
            self.hosts.labels(status.value)
        for verdict in (Readiness.READY, Readiness.SINGLE_PATH, Readiness.UNFENCEABLE):
            self.readiness.labels(verdict.value)
        r.register(_LiveValues(may_act, database_errors))
        ProcessCollector(registry=r)   # process_cpu_seconds_total, open files, memory

    # -- hooks ------------------------------------------------------------------------------

    def operation_finished(self, op: Operation) -> None:
        self.fence_operations.labels(op.action.value, op.state.value, op.origin.value).inc()
        if op.finished_at is not None:
            seconds = (op.finished_at - op.created_at).total_seconds()
            self.fence_duration.labels(op.action.value).observe(max(0.0, seconds))

    def event(self, event: Event) -> None:
        self.events.labels(event.severity.value).inc()
        if event.kind == "fence.attempt":
            d = event.details
            action = str(d.get("action", ""))
            self.proxy_attempts.labels(source_kind(str(d.get("source", ""))), action,
                                       str(d.get("outcome", ""))).inc()
            duration = d.get("duration")
            if isinstance(duration, int | float):
                self.command_duration.labels(action).observe(duration)

    def round_finished(self, report: RoundReport) -> None:
        self.round_duration.observe(report.duration)
        self.round_lag.set(report.lag)
        self.heartbeats.labels("answered").inc(report.answered)
        self.heartbeats.labels("missed").inc(report.missed)
        for status in HostStatus:
            self.hosts.labels(status.value).set(report.hosts.get(status.value, 0))
        self.engines_alive.set(report.engines_alive)

    def health_checked(self, verdicts: Iterable[HostReadiness]) -> None:
        verdicts = list(verdicts)
        tally = Tally(v.readiness.value for v in verdicts)
        for verdict in (Readiness.READY, Readiness.SINGLE_PATH, Readiness.UNFENCEABLE):
            self.readiness.labels(verdict.value).set(tally.get(verdict.value, 0))
        self.failing_agents.set(len(failing_agents(verdicts)))


def failing_agents(verdicts: Iterable[HostReadiness]) -> set[int]:
    """Agents tried by the health check through no working path."""
    tried: set[int] = set()
    working: set[int] = set()
    for v in verdicts:
        for check in v.checks:
            if check.state is PathState.WORKS:
                working.add(check.agent_id)
            elif check.state is PathState.FAILS:
                tried.add(check.agent_id)
    return tried - working


class _LiveValues(Collector):
    """Read when scraped: whether the engine may act now, database errors so far."""

    def __init__(self, may_act: Callable[[], bool], database_errors: Callable[[], int]) -> None:
        self.may_act = may_act
        self.database_errors = database_errors

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("hostpower_engine_ready", "1 while this engine holds a certain "
                                "lease and may act (as /api/health), else 0.",
                                value=1.0 if self.may_act() else 0.0)
        yield CounterMetricFamily("hostpower_database_errors", "Database operations that failed "
                                  "(unreachable, read-only, timed out) since start.",
                                  value=float(self.database_errors()))
