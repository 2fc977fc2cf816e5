"""The system knowledge base (SKB): what the OS knows of the machine, and what it derives.

In Barrelfish the SKB is a service that holds facts about the hardware and
answers queries; the monitors use it to decide how to send a message to
many cores. Here it holds the topology and the core-to-core latencies the
monitors measured at boot (userland/monitor.S), and computes the routing
trees of the four TLB shootdown protocols (DESIGN.md section 4, issue 6):

    skb = SystemKnowledgeBase(load_topology("amd-8x4"), round_trips)
    skb.route("numa-multicast", cores=range(32))   # -> [Route(child, forwards), ...]

A route is what the initiator sends, in order: to `child`, which passes the
request on to the cores in `forwards` and acknowledges for all of them.

  unicast          a message to every core, in core order;
  broadcast        the same acknowledgements, but the request is one message
                   on a ring that every core reads (so `route` lists who must
                   acknowledge);
  multicast        one message per package, to its first core, which
                   forwards it inside the package; the initiator is its own
                   package's aggregator (paper section 5.1);
  numa-multicast   the same, but with what the SKB measured: per package the
                   aggregator is the core the initiator reaches fastest;
                   when there are other packages, the initiator hands its
                   own package to its nearest neighbour too, and its
                   routes go nearest first. The initiator is the busiest
                   core of the tree: what it hands off comes off its
                   path, and in detailed timing, where its stores retire
                   into a store buffer, the acknowledgements it reads in
                   route order should arrive in that order
                   (sprat/bench/tlb.py says what each is worth).

How it meets the guest: monitor 0 stops at its `skb_query` label once
every monitor has measured; `attach` hooks that label on the host, reads
the latency table out of the channel pages, builds the SKB, and writes
back the tables the monitors read: who may send each core a request, and
for every protocol and core count the initiator's routes. The page numbers
are the ones in userland/monitor.S.

What does not live here: the measuring and the protocols themselves
(userland/monitor.S), timing them (sprat/bench/tlb.py).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cpudriver import layout

PROTOCOLS = ("unicast", "broadcast", "multicast", "numa-multicast")
MAX_CORES = 64                # the monitors' pair channels serve this many
PAGE = 4096
# The channel pages of userland/monitor.S
PAIR_STRIDE = 64
SKB_PAGE = 1367
LATENCY_PAGE = 1368
ROUTE_PAGE = 1376
ROUTE_BYTES = 1024
SKB_QUERY = 0x534B42          # monitor 0's rax at skb_query


@dataclass(frozen=True)
class Route:
    """One message of the initiator: to `child`, which forwards it to `forwards`."""
    child: int
    forwards: tuple[int, ...] = ()


class SystemKnowledgeBase:
    """The topology and the measured latencies; routing trees from them."""

    def __init__(self, topology, round_trips: dict[tuple[int, int], int]):
        self.topology = topology
        self.round_trips = dict(round_trips)

    def latency(self, a: int, b: int) -> float:
        """One-way message latency from a to b in cycles: half the measured round trip."""
        if a == b:
            return 0.0
        return self.round_trips[(a, b)] / 2

    def route(self, protocol: str, cores, root: int = 0) -> list[Route]:
        """The initiator's messages, in sending order, for a shootdown over `cores`."""
        cores = sorted(set(cores) | {root})
        if protocol in ("unicast", "broadcast"):
            return [Route(core) for core in cores if core != root]
        if protocol == "multicast":
            return self._multicast(cores, root)
        if protocol == "numa-multicast":
            return self._numa_multicast(cores, root)
        raise ValueError(f"unknown protocol {protocol!r}: one of {', '.join(PROTOCOLS)}")

    def packages(self, cores, root: int) -> tuple[list[int], list[list[int]]]:
        """The root's package mates among `cores`, and the other packages' cores."""
        mine = self.topology.package_of(root)
        mates, others = [], []
        for package in self.topology.packages:
            members = [core for core in package if core in cores and core != root]
            if not members:
                continue
            if self.topology.package_of(members[0]) == mine:
                mates = members
            else:
                others.append(members)
        return mates, others

    def _multicast(self, cores, root) -> list[Route]:
        """Package order; the first core of each package aggregates it."""
        mates, others = self.packages(cores, root)
        return [Route(core) for core in mates] + \
               [Route(members[0], tuple(members[1:])) for members in others]

    def _numa_multicast(self, cores, root) -> list[Route]:
        """Aggregators by measured latency; own package first, then nearest first."""
        # LAB shootdown BEGIN numa_tree
        mates, others = self.packages(cores, root)
        routes = []
        for members in others:
            aggregator = min(members, key=lambda core: (self.latency(root, core), core))
            rest = [core for core in members if core != aggregator]
            rest.sort(key=lambda core: -self.latency(aggregator, core))
            routes.append(Route(aggregator, tuple(rest)))
        routes.sort(key=lambda route: (self.latency(root, route.child), route.child))
        if not routes:                    # one package: nothing to hand off
            return [Route(core) for core in mates]
        if mates:
            nearest = min(mates, key=lambda core: (self.latency(root, core), core))
            routes.insert(0, Route(nearest, tuple(core for core in mates if core != nearest)))
        return routes
        # LAB shootdown END numa_tree


def covered(routes: list[Route]) -> list[int]:
    """Every core a list of routes reaches, once per time it reaches it."""
    return [core for route in routes for core in (route.child, *route.forwards)]


# --- meeting the guest ------------------------------------------------------------------------

def attach(system) -> None:
    """Answer monitor 0's `skb_query` from the host, if the image has monitors.

    The answer becomes `system.skb`.
    """
    from unicorn import UC_HOOK_CODE
    from unicorn import x86_const as x86
    # Every program that links the monitor has skb_query at an address of
    # its own (cpudriver/layout.py); whichever monitor 0 runs asks.
    addresses = sorted({module.program.symbols["skb_query"] for module in system.modules
                        if "skb_query" in module.program.symbols})
    if not addresses:
        return

    def on_query(uc, _address, _size, _data):
        # Only a monitor arriving at skb_query with the question in rax asks.
        if uc.reg_read(x86.UC_X86_REG_RAX) != SKB_QUERY:
            return
        n = uc.reg_read(x86.UC_X86_REG_RDI)
        try:
            system.skb = answer_query(system.machine, n)
        except Exception as error:        # a tree that fails (a lab's unwritten one):
            core = next(core for core in system.machine.cores if core.uc is uc)
            core.fail(f"the SKB failed: {type(error).__name__}: {error}")   # the asker stops

    for core in system.machine.cores:
        for address in addresses:
            core.uc.hook_add(UC_HOOK_CODE, on_query, begin=address, end=address)


def answer_query(machine, n: int) -> SystemKnowledgeBase:
    """Read the monitors' latency table, build the SKB, write its tables back."""
    memory = machine.memory
    table = channel_address(LATENCY_PAGE)
    round_trips = {(a, b): memory.read_u64(table + (a * PAIR_STRIDE + b) * 8)
                   for a in range(n) for b in range(n) if a != b}
    skb = SystemKnowledgeBase(machine.topology, round_trips)
    for number, protocol in enumerate(PROTOCOLS):
        for cores in range(1, n + 1):
            try:
                routes = skb.route(protocol, range(cores))
            except NotImplementedError:   # a lab's skeleton (labs/08-shootdown) has no tree
                routes = []               # yet: its shootdowns reach no one, the others run
            memory.write(route_address(number, cores), encode_routes(routes))
    return skb


def encode_routes(routes: list[Route]) -> bytes:
    """A routing table as monitor 0 reads it: count, then (child, forwards mask) pairs."""
    words = [len(routes), 0]
    for route in routes:
        words += [route.child, sum(1 << core for core in route.forwards)]
    if len(words) * 8 > ROUTE_BYTES:
        raise ValueError(f"{len(routes)} routes do not fit in {ROUTE_BYTES} bytes")
    return struct.pack(f"<{len(words)}Q", *words)


def channel_address(page: int) -> int:
    """The physical address of channel page `page`."""
    return layout.CHANNELS_PHYS + page * PAGE


def route_address(protocol: int, cores: int) -> int:
    return channel_address(ROUTE_PAGE) + (protocol * PAIR_STRIDE + cores - 1) * ROUTE_BYTES
