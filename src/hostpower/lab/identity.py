"""A lab instance's identity: its number, the names of everything it creates
and its address ranges. Pure: no I/O (instances.py hands the numbers out).

Several labs run side by side on one machine (a test run while `make demo` is
up), so nothing a lab creates may be fixed: instance N (0 <= N < MAX_INSTANCES)

* names its namespaces and its root-namespace links `hpl<N>-…` (`hpl3-front`,
  `hpl3-h1`, `hpl3-m2`, links `hpl3-f0`, `hpl3-e2`): a one-digit number keeps
  every link name far below the kernel's 15 characters and never matches the
  names of another instance (`hpl1-` is not a prefix of `hpl12-` because N
  has exactly one digit);
* owns two /19 blocks: 32 /24 networks in each of the front range
  (198.18.0.0/16) and the management range (198.19.0.0/16), third octets
  32*N .. 32*N+31. Network 0 of the front block holds the engine side
  (198.18.32N.1), networks 1..31 are the clusters: cluster n's hosts are on
  198.18.(32N+n).x, its management network is 198.19.(32N+n).0/24.
  Instance 0 keeps the addresses of the single-lab days (198.19.1.11 is
  c1-h1's BMC).
* in loopback mode uses the same numbers under 127.18 and 127.19.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_INSTANCES = 8
NETWORKS_PER_INSTANCE = 32          # /24 networks per /19 block
MAX_CLUSTERS = NETWORKS_PER_INSTANCE - 1   # network 0 of the front block is the engine's
NAME_PREFIX = "hpl"
GUARD_METRIC = 4242  # guard routes share their prefix with a lab link: a higher metric lets the link win


@dataclass(frozen=True)
class LabInstance:
    number: int

    def __post_init__(self) -> None:
        if not 0 <= self.number < MAX_INSTANCES:
            raise ValueError(f"lab instance {self.number} out of range 0..{MAX_INSTANCES - 1}")

    # -- names ---------------------------------------------------------------------

    @property
    def prefix(self) -> str:
        return f"{NAME_PREFIX}{self.number}-"

    @property
    def front_ns(self) -> str:
        return f"{self.prefix}front"

    def host_ns(self, host_index: int) -> str:
        return f"{self.prefix}h{host_index}"

    def mgmt_ns(self, network_index: int) -> str:
        return f"{self.prefix}m{network_index}"

    @property
    def uplink(self) -> str:
        """Root-namespace end of the veth into the front bridge."""
        return f"{self.prefix}f0"

    def engine_leg(self, network_index: int) -> str:
        """Root-namespace end of the veth into a management network."""
        return f"{self.prefix}e{network_index}"

    # -- addresses -----------------------------------------------------------------

    def _octet(self, network_index: int) -> int:
        return NETWORKS_PER_INSTANCE * self.number + network_index

    @staticmethod
    def _first(namespaced: bool) -> int:
        return 198 if namespaced else 127

    def front_subnet(self, network_index: int, namespaced: bool) -> str:
        """The first three octets of cluster n's hosts on the front network."""
        return f"{self._first(namespaced)}.18.{self._octet(network_index)}"

    def mgmt_subnet(self, network_index: int, namespaced: bool) -> str:
        """The first three octets of cluster n's management network."""
        return f"{self._first(namespaced)}.19.{self._octet(network_index)}"

    def front_range(self, namespaced: bool = True) -> str:
        return f"{self.front_subnet(0, namespaced)}.0/19"

    def mgmt_range(self, namespaced: bool = True) -> str:
        return f"{self.mgmt_subnet(0, namespaced)}.0/19"

    def ranges(self, namespaced: bool = True) -> tuple[str, str]:
        return self.front_range(namespaced), self.mgmt_range(namespaced)

    def engine_front_address(self, namespaced: bool) -> str:
        """Where the hosts reach the engine machine."""
        return f"{self.front_subnet(0, True)}.1" if namespaced else "127.0.0.1"


FIRST_INSTANCE = LabInstance(0)


def instance_of(name: str) -> LabInstance | None:
    """The instance a namespace or link name belongs to (None: not a lab name,
    or one of an older hostpower without instance numbers, `hpl-…`)."""
    head = name[len(NAME_PREFIX):len(NAME_PREFIX) + 2]
    if not name.startswith(NAME_PREFIX) or len(head) != 2 or not head[0].isdigit() or head[1] != "-":
        return None
    number = int(head[0])
    return LabInstance(number) if number < MAX_INSTANCES else None
