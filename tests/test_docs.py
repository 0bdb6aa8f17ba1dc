"""The operator docs stay in step with the code."""

from pathlib import Path

from hostpower.config import KEYS

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_every_configuration_key_is_documented_with_its_default() -> None:
    text = (DOCS / "configuration.md").read_text()
    for key in KEYS:
        assert f"| `{key.name}` | `{key.default}` |" in text, key.name
