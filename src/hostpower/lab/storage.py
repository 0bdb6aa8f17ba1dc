"""The lab's shared storage: one directory every simulated host mounts.

In production the hosts' agents renew their leases on the shared storage
the operator gives them (`--storage-lease-dir`); in the lab every agent gets
`<home>/lab/storage`, so each host renews its lease there and watches its
peers' (hostagent/storagelease.py). A network namespace does not separate
file systems, so the `isolate` fault (no route to the engine) leaves a
host renewing, as a real host cut off from the engine but not from its
storage would; `agent_crash` and `agent_hang` stop its renewals, as power
off does.
"""

from __future__ import annotations

from pathlib import Path

STORAGE_DIR = "storage"
RENEW_INTERVAL = 1.0  # seconds; shorter than an agent's default so scenarios run fast


def storage_dir(run_dir: Path) -> Path:
    """The shared directory of the lab whose run directory is `run_dir`."""
    path = Path(run_dir) / STORAGE_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def agent_args(run_dir: Path) -> list[str]:
    """The agent options that put a lab host on the shared storage."""
    return ["--storage-lease-dir", str(storage_dir(run_dir)),
            "--storage-lease-interval", f"{RENEW_INTERVAL:g}"]
