"""The protocol paths: what one coherence transaction costs, per machine family.

The directory (coherence.py) decides WHAT happens to a line: who supplies
it, whose copies die. This module says what that costs on the hardware,
by the path the transaction takes through it. Each machine family has its
own path, one function each, its legs named as the hardware names them:

    family               path (this file)         the ordering point
    -------------------  -----------------------  ----------------------------
    amd-probe-broadcast  amd_probe_broadcast()    the line's home memory
                                                  controller (per line)
    intel-fsb            intel_fsb()              the front-side bus, one
                                                  transaction at a time
                                                  (machine-wide), and the line

A transaction is a request by core `me` for a line whose home is package
`home`, served by `source`: a core's cache holding it, MEMORY, or NOBODY
(an invalidation: no data moves, only the other copies die). What the
functions return is core cycles, from the legs in the topology file
(presets/*.toml cite a source for every leg):

  amd-probe-broadcast (Opteron K8/K10 before Istanbul: no probe filter)

    leg               what it is                                     clock
    ----------------  ---------------------------------------------  -----
    on_chip           everything on the chips but the links: the     NB
                      miss through L1/L2 (/L3), the request queue,
                      the crossbar, each node's probe lookup, the
                      collection of responses, the fill
    request_to_home   the request, one ht_hop per link to the home   NB
    probe_round       home -> every node -> me: the last probe       NB
                      response in; the request completes only then
    data_from_owner   home -> owner -> me, plus the line's           NB, HT
                      serialization on a link (line_on_link) if the
                      owner is on another chip
    data_from_dram    the home's DRAM, then back to me               DRAM

    cost = on_chip + request_to_home + max(probe_round, data)

  intel-fsb (Core 2 Xeon on a Bensley board: two dies per package, one
  L2 per die; everything that leaves a die goes over the bus)

    leg               what it is                                     clock
    ----------------  ---------------------------------------------  -----
    on_die_snoop      the other core of my die has it: after the     bus
                      L2 lookup (l2_miss), its L1 is snooped
    l2_miss           my die's L2 misses                             core
    bus_transaction   request, snoop of every die on the bus, data   bus
    snoop_forward     the chipset snoops the other package's bus     bus
    hitm_supply       the owning die's L2 hands the line over        core
    line_through_mch  the line crosses the chipset to my bus         bus
    memory            the whole trip to DRAM through the chipset     (ns)

    cost = l2_miss + on_die_snoop                         (source on my die)
         = l2_miss + bus_transaction + snoop_forward + hitm_supply
           (+ line_through_mch if the source is on the other package)
         = memory                                         (from DRAM)

`CostTables(topology)` evaluates a family's path for every (home, me,
source) once, so the directory (and its C mirror, emulator/_hitpath.c)
only look costs up.

What does not live here: MOESI states and who supplies a line (coherence.py),
the machine's shape (topology.py), the legs' values (presets/*.toml).
"""

from __future__ import annotations

FAMILIES = ("amd-probe-broadcast", "intel-fsb")


# -- AMD: the home broadcasts probes to every node ------------------------------------

def amd_probe_broadcast(topo, me: int, home: int, source: int | str) -> int:
    """Cycles for core `me` to complete a transaction on a line homed at
    package `home`, the data coming from core `source`, "memory", or
    nobody ("invalidate": a change-to-dirty, no data)."""
    # LAB interconnect BEGIN amd_path
    legs = topo.legs_in_cycles()
    hop = legs["ht_hop"]
    hops = topo.package_hops
    mine = topo.package_of(me)

    # 1. The miss leaves my core and crosses to the line's home.
    request_to_home = hop * hops(mine, home)
    # 2. The home probes every node; each answers me. Done at the last answer.
    probe_round = hop * max(hops(home, node) + hops(node, mine)
                            for node in range(len(topo.packages)))
    # 3. The data: none, from the owner's cache (probed too), or the home's DRAM.
    if source == "invalidate":
        data = 0
    elif source == "memory":
        data_from_dram = legs["dram"] - legs["on_chip"] + hop * hops(home, mine)
        data = data_from_dram + (legs["line_on_link"] if home != mine else 0)
    else:
        owner = topo.package_of(source)
        data_from_owner = hop * (hops(home, owner) + hops(owner, mine))
        data = data_from_owner + (legs["line_on_link"] if owner != mine else 0)
    return round(legs["on_chip"] + request_to_home + max(probe_round, data))
    # LAB interconnect END amd_path


# -- Intel: one front-side bus, snooped by every die -----------------------------------

def intel_fsb(topo, me: int, home: int, source: int | str) -> int:
    """Cycles for core `me` to complete a transaction served by core
    `source`, "memory", or nobody ("invalidate"). Memory is uniform
    behind the chipset: `home` does not matter."""
    legs = topo.legs_in_cycles()
    if source != "memory" and source != "invalidate" and topo.same_die(me, source):
        return round(legs["l2_miss"] + legs["on_die_snoop"])
    if source == "memory":
        return round(legs["memory"])
    # Leaves the die: on the bus, snooped by every die of both packages.
    cycles = legs["l2_miss"] + legs["bus_transaction"]
    if len(topo.packages) > 1:
        cycles += legs["snoop_forward"]
    if source != "invalidate":
        cycles += legs["hitm_supply"]
        if topo.package_of(source) != topo.package_of(me):
            cycles += legs["line_through_mch"]
    return round(cycles)


PATHS = {"amd-probe-broadcast": amd_probe_broadcast, "intel-fsb": intel_fsb}


class CostTables:
    """A family's path evaluated for every case, for the directory to look up:

        fetch[home][me][source]       data from core `source`; source == n:
                                      from memory (n = the number of cores)
        invalidate[home][me][sharer]  killing the copy at core `sharer`;
                                      sharer == n: an upgrade no other core
                                      holds a copy for
        die[core]                     the core's die (intel-fsb: the bus is
                                      taken by what leaves it)
        bus_occupancy                 cycles a transaction holds the bus (0:
                                      no machine-wide ordering point)
    """

    def __init__(self, topo):
        n = topo.n_cores()
        homes = range(len(topo.packages))
        self.n = n
        # A path depends on the dies of the requester and the source (a die
        # lies in one package), not on which of their cores: evaluate it
        # once per die, then spread it over the cores (64 cores: 66,560
        # entries a table, from a few hundred evaluations).
        die = [topo.die_of(core) for core in range(n)]
        first = {}
        for core in range(n):
            first.setdefault(die[core], core)
        fetch, invalidate = {}, {}
        for home in homes:
            for d_me, me in first.items():
                for d_src, src in first.items():
                    fetch[home, d_me, d_src] = self._fetch(topo, me, home, src)
                    invalidate[home, d_me, d_src] = self._invalidate(topo, me, home, src,
                                                                     invalidate)
                fetch[home, d_me, None] = self._fetch(topo, me, home, "memory")
                invalidate[home, d_me, None] = self._invalidate(topo, me, home, None,
                                                                invalidate)
        sources = [*die, None]
        fetch_rows = {(home, d_me): [fetch[home, d_me, d] for d in sources]
                      for home in homes for d_me in first}
        invalidate_rows = {(home, d_me): [invalidate[home, d_me, d] for d in sources]
                           for home in homes for d_me in first}
        self.fetch = [[self._own_hit(fetch_rows[home, die[me]], me, topo.l1_hit)
                       for me in range(n)] for home in homes]
        self.invalidate = [[list(invalidate_rows[home, die[me]]) for me in range(n)]
                           for home in homes]
        self.die = die
        self.bus_occupancy = (round(topo.legs_in_cycles()["bus_transaction"])
                              if topo.family == "intel-fsb" else 0)

    @staticmethod
    def _own_hit(row, me, l1_hit) -> list:
        row = list(row)
        row[me] = l1_hit                 # never fetched from itself: a hit
        return row

    @staticmethod
    def _fetch(topo, me, home, source) -> int:
        return PATHS[topo.family](topo, me, home, source)

    @staticmethod
    def _invalidate(topo, me, home, sharer, known) -> int:
        path = PATHS[topo.family]
        if topo.family == "intel-fsb":
            if sharer is None:                        # the die's L2 says no one else
                return topo.l2_hit
            if topo.same_die(me, sharer):
                return path(topo, me, home, sharer)   # the on-die snoop
        # A broadcast, whoever holds copies (AMD: always): evaluated once
        # per requester's die.
        key = (home, topo.die_of(me), "broadcast")
        if key not in known:
            known[key] = path(topo, me, home, "invalidate")
        return known[key]
