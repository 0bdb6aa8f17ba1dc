"""A lab and an engine for the benchmarks that need real agents and BMCs."""

from __future__ import annotations


import tempfile
from contextlib import contextmanager
from collections.abc import Iterator
from pathlib import Path

import yaml


from enginekit import EngineThread, engine_context  # noqa: E402
from hostpower.context import EngineContext  # noqa: E402
from hostpower.lab.runner import RunningLab, load_topology, start_lab  # noqa: E402
from hostpower.settings import Settings  # noqa: E402

BENCH_TOPOLOGY = """
name: bench
boot_delay: 0.3
data_centers:
  - name: dc1
    clusters:
      - name: c1
        management: {engine_access: true}
        hosts: [{name: c1-h1}, {name: c1-h2}, {name: c1-h3}]
"""


@contextmanager
def lab_and_engine(monitor: bool = False, doc: str = BENCH_TOPOLOGY, db_url: str | None = None
                   ) -> Iterator[tuple[RunningLab, EngineContext, EngineThread, Settings]]:
    """The lab of `doc` and an engine beside it, on an SQLite file of its own
    or on `db_url` (an empty database: EngineContext.open upgrades it, e.g.
    bench/pgdb.fresh_database's)."""
    with tempfile.TemporaryDirectory(prefix="hostpower-bench-") as tmp:
        settings = Settings(home=Path(tmp) / "home",
                            db_url=db_url or f"sqlite:///{Path(tmp) / 'engine.db'}")
        topo = load_topology(yaml.safe_load(doc), loopback=False)
        lab = start_lab(settings, topo, log=lambda m: None)
        try:
            ctx = engine_context(lab, settings)
        except BaseException:
            lab.stop()
            raise
        try:
            with EngineThread(ctx, monitor=monitor) as engine:
                yield lab, ctx, engine, settings
        finally:
            ctx.close()
            lab.stop()
