"""The layers of the code, enforced: what each low layer may import.

Data flows one way (DESIGN.md): the domain model at the bottom, the fence
drivers above it, the host agent above those; the engine's fencing, API and
store stand above all of them and may import them, never the reverse. Every
import statement counts, also one inside a function, so a cycle cannot be
hidden by a late import.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# What the agent daemon is made of: it runs on every managed host, without
# the engine's database, API or fencing logic.
AGENT_SIDE = ("hostpower.hostagent.agent", "hostpower.hostagent.daemon",
              "hostpower.hostagent.pki", "hostpower.hostagent.sdnotify",
              "hostpower.hostagent.server", "hostpower.hostagent.storagelease",
              "hostpower.hostagent.wire")

# module or package -> the hostpower modules it may import (packages include
# their submodules; "hostpower" alone is the root module, for __version__).
RULES: dict[str, tuple[str, ...]] = {
    "hostpower.model": ("hostpower.model",),
    "hostpower.drivers": ("hostpower.drivers", "hostpower.model"),
    # Both the engine and the agent import the wire format: it stands on the model only.
    "hostpower.hostagent.wire": ("hostpower.model",),
    **{name: ("hostpower", "hostpower.model", "hostpower.drivers", *AGENT_SIDE)
       for name in AGENT_SIDE if name != "hostpower.hostagent.wire"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(name: str) -> bool:
    base = SRC.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def modules_of(name: str) -> list[Path]:
    """The files of a module, or of a package and everything below it."""
    base = SRC.joinpath(*name.split("."))
    if base.is_dir():
        return sorted(base.rglob("*.py"))
    return [base.with_suffix(".py")]


def hostpower_imports(path: Path) -> Iterator[str]:
    """Every hostpower module the file imports, wherever the statement stands."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package.pop()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the file's package
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            # `from pkg import mod` imports the module pkg.mod
            targets = [f"{base}.{a.name}" if is_module(f"{base}.{a.name}") else base
                       for a in node.names]
        else:
            continue
        yield from (t for t in targets if t == "hostpower" or t.startswith("hostpower."))


def allowed(target: str, prefixes: tuple[str, ...]) -> bool:
    return any(target == p or (p != "hostpower" and target.startswith(p + "."))
               for p in prefixes)


@pytest.mark.parametrize("layer", sorted(RULES))
def test_a_layer_imports_nothing_above_it(layer: str) -> None:
    files = modules_of(layer)
    assert files and all(f.is_file() for f in files), f"{layer} not found under {SRC}"
    wrong = [f"{module_name(f)} imports {target}"
             for f in files for target in hostpower_imports(f)
             if not allowed(target, RULES[layer])]
    assert wrong == [], f"{layer} may import only {RULES[layer]}"


def test_the_import_walk_sees_what_a_module_imports() -> None:
    """Guards the test above against passing because it found nothing."""
    agent = set(hostpower_imports(SRC / "hostpower/hostagent/agent.py"))
    assert {"hostpower", "hostpower.drivers.registry", "hostpower.hostagent.pki",
            "hostpower.hostagent.wire"} <= agent
    assert "hostpower.drivers.installed" in set(hostpower_imports(SRC / "hostpower/context.py"))


def test_the_engine_and_the_agent_share_one_wire_format() -> None:
    """Paths and bodies are spelled in wire.py only; both sides import it."""
    for side in ("client", "heartbeat", "agent", "server"):
        path = SRC / f"hostpower/hostagent/{side}.py"
        assert "hostpower.hostagent.wire" in set(hostpower_imports(path)), side
        assert '"/v1/' not in path.read_text(), f"{side}.py spells a path of its own"


def test_the_drivers_left_the_fencing_package() -> None:
    assert not (SRC / "hostpower/fencing/drivers").exists()
