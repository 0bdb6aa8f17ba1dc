"""Top functions of a py-spy profile in its raw (collapsed stacks) format.

    python -m bench.pyspy_agg FILE [--under TEXT] [--top N]

Each line of a raw profile is `frame;frame;...;frame COUNT`, outermost first,
each frame `function (path:line)`. A function's inclusive share is the part of
the samples whose stack holds it anywhere (time spent in it and in what it
calls), its self share the part where it is the innermost frame. Frames are
named `function (path)` with the path cut after site-packages/, src/ or the
standard library's directory, so the same function on different lines counts
once. `--under TEXT` keeps only the stacks with a frame containing TEXT (e.g.
the flow tasks), shares then being of those stacks.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

_FRAME = re.compile(r"(.*) \((.*?)(?::\d+)?\)$")
_PREFIX = re.compile(r".*/(site-packages|python3\.\d+|src)/")


def frame_name(frame: str) -> str:
    """`function (short/path.py)` for py-spy's `function (/long/path.py:line)`."""
    m = _FRAME.match(frame)
    if not m:
        return frame
    function, path = m.groups()
    return f"{function} ({_PREFIX.sub('', path)})"


@dataclass
class Profile:
    total: int  # samples kept
    inclusive: Counter[str]
    self: Counter[str]

    def top(self, kind: str, n: int = 25, floor: float = 0.5) -> list[tuple[float, str]]:
        """The `n` largest shares (%) of `kind` ("inclusive" or "self"), at least `floor` %."""
        counts = self.inclusive if kind == "inclusive" else self.self
        return [(100 * v / self.total, k) for k, v in counts.most_common(n)
                if self.total and 100 * v / self.total >= floor]


def aggregate(lines: Iterable[str], under: str = "") -> Profile:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in lines:
        line = line.rstrip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        # A stack read while the thread changed it (--nonblocking) may lack frames.
        frames = [frame_name(f) for f in stack.split(";") if f.strip()] or ["(torn stack)"]
        if under and not any(under in f for f in frames):
            continue
        n = int(count)
        total += n
        for name in set(frames):  # a recursive function counts once per sample
            inclusive[name] += n
        own[frames[-1]] += n
    return Profile(total, inclusive, own)


def report(profile: Profile, top: int = 25, title: str = "") -> str:
    out = [title] if title else []
    out.append(f"{profile.total} samples")
    for kind in ("inclusive", "self"):
        out.append(f"== {kind}")
        out += [f"{share:6.1f}% {name}" for share, name in profile.top(kind, top)]
    return "\n".join(out)


def markdown(profile: Profile, title: str, within: str = "hostpower/", top: int = 12) -> str:
    """A short block for docs/benchmarks.md: the project's own functions by
    inclusive share (frames whose path holds `within`), every function by self share."""
    ours = [(s, k) for s, k in profile.top("inclusive", 400, floor=0) if within in k][:top]
    lines = [title, "", "```", f"inclusive, {within} functions ({profile.total} samples):"]
    lines += [f"{share:6.1f}% {name}" for share, name in ours]
    lines.append("self, all functions:")
    lines += [f"{share:6.1f}% {name}" for share, name in profile.top("self", top)]
    lines.append("```")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("file", type=Path)
    p.add_argument("--under", default="", help="keep only stacks with a frame containing this")
    p.add_argument("--top", type=int, default=25)
    a = p.parse_args(argv)
    with a.file.open() as f:
        print(report(aggregate(f, a.under), a.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
