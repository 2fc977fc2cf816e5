"""Lab 8's grader: TLB shootdown down the SKB's routing trees.

Two parts, graded apart, so that one scores while the other is unwritten:

  the tree      kernel/skb.py's `_numa_multicast`, called directly: it must
                reach every core once on every preset machine, and use the
                latencies the SKB measured;
  the monitor   userland/monitor_shootdown.S's `shootdown_node`, graded on
                what the machine did in shootdowns down the plain multicast
                tree (the tree's own code, not the student's): each core's
                page table, and a touch of the page afterwards, which must
                fault on every core (a stale TLB entry is real in sprat, so
                a missing invlpg shows); the messages, read at the URPC
                tracepoints, against the tree's edges; the acknowledgements'
                order and counts; and each core's own system calls (map;
                unmap, then invlpg) against its acknowledgement.

The last test runs both together on the 32 cores of amd-8x4: both
shootdowns must be correct, each aggregator forwarding to all of its subtree
before its own part and before it waits for any acknowledgement;
then the student's NUMA-aware tree must beat plain multicast, both measured
with the tree's own monitor (a monitor that knows which protocol it serves
could dawdle under plain multicast).

The images run userland/shootdown.S on core 0 (mode 2: map the page on
cores 0 .. n-1, shoot it down twice, then have every other core touch it)
beside a monitor on every core, built without the stale-entry probe but
for `multicast-4-probe`, whose monitors count the stale reads they saw.
"""

import re
from collections import Counter, defaultdict

from sprat.lab.grading import QUANTA, boot, fail, test

# userland/lib/monitor_client.S, userland/monitor.S, userland/shootdown.S
PAGE = 1536                       # MONITOR_FIRST_PAGE: the page shootdown.S shoots down
OP_PREPARE, OP_INVALIDATE, OP_TOUCH, OP_STOP, OP_REPLY = 1, 2, 3, 4, 13
STEP_NAMES = {OP_PREPARE: "map", OP_INVALIDATE: "unmap"}
RUNS = 2                          # shootdown.S maps and shoots the page down twice
MSG_PARTICIPANTS = 3              # a request's word: the cores taking part
ANSWER = 0x414E53                 # MONITOR_ANSWER: word 0 of an answer to a program
MULTICAST, NUMA_MULTICAST = 2, 3  # kernel/skb.py's PROTOCOLS, by number
PAIR_STRIDE, RINGS_PER_PAGE, BROADCAST_PAGE = 64, 3, 1366   # the monitors' pair rings
# cpudriver/layout.py: where each core's page table for the channel window is
PERCORE_BASE, PERCORE_SIZE, PC_PT_CHANNELS = 0x0100_0000, 0x0004_0000, 0x6000
USER_CHANNELS = 0x0000_0080_0020_0000
MAX_CYCLES = 3_000_000            # these images end before 500,000 cycles
FASTER = 0.90                     # NUMA-aware: at most this share of multicast's cycles
# (the reference takes 0.87; a tree that serves its own package itself, 0.95)
FAST_FIRST = tuple(sorted(QUANTA, reverse=True))   # a hang costs least at a large quantum

# (image, topology, cores): multicast trees in which an aggregator forwards
FOUR = ("images/multicast-4.lst", "amd-2x2", 4)       # 0 -> 1; 0 -> 2 -> 3
PROBED = ("images/multicast-4-probe.lst", "amd-2x2", 4)   # the same, monitors built probe=1
SIX = ("images/multicast-6.lst", "intel-2x4", 6)      # 0 -> 1, 2, 3; 0 -> 4 -> 5
SIXTEEN = ("images/multicast-16.lst", "amd-4x4", 16)  # 0 -> 1, 2, 3; 0 -> 4, 8, 12 -> ...
LONG = ("images/multicast-16-long.lst", "amd-4x4", 16)  # the same, 8 rounds: the rings fill
ROUNDS = {LONG[0]: 8}             # an image's rounds, where not RUNS
# cpudriver/syscall.S: the calls a monitor's own part makes, by their handlers
OWN_CALLS = {"sys_channel_map": "map", "sys_channel_unmap": "unmap", "sys_invlpg": "invlpg"}
CALL_NAMES = {"map": "local_map", "unmap": "unmap_page", "invlpg": "SYS_INVLPG"}


# --- the tree -----------------------------------------------------------------------------------

@test(points=20)
def tree_covers_every_core_once():
    """The NUMA-aware tree reaches every core exactly once: every preset machine, 2 to 32 cores."""
    from emulator.interconnect import list_presets, load_topology
    from kernel.skb import SystemKnowledgeBase, covered
    for name in list_presets():
        topology = load_topology(name)
        for kind, round_trips in latency_tables(topology).items():
            skb = SystemKnowledgeBase(topology, round_trips)
            for n in range(2, min(32, topology.n_cores()) + 1):
                for root in sorted({0, n - 1}):
                    here = f"{name}, {n} cores, from core {root} ({kind} latencies)"
                    check_covers(here, covered(numa_tree(skb, n, root, here)), n, root)


def numa_tree(skb, n, root, here):
    """The student's tree over cores 0 .. n-1, or a FAIL saying why there is none."""
    from kernel.skb import Route
    try:
        routes = skb.route("numa-multicast", range(n), root)
    except NotImplementedError as error:
        fail(str(error))
    except Exception as error:     # the student's code, any mistake: say where
        fail(f"{here}: the tree raised {type(error).__name__}: {error}")
    if type(routes) is not list or not all(type(route) is Route for route in routes):
        fail(f"{here}: the tree is a {type(routes).__name__}, not a list of Route")
    # Python's own ints only: an int subclass whose == always says yes would
    # be every aggregator the grader asks for.
    for route in routes:
        if type(route.forwards) is not tuple:
            fail(f"{here}: a route's forwards is a {type(route.forwards).__name__}, not a tuple "
                 f"of ints")
        odd = [core for core in (route.child, *route.forwards) if type(core) is not int]
        if odd:
            fail(f"{here}: a route names a core with a {type(odd[0]).__name__}, not an int")
    return routes


def check_covers(here, reached, n, root) -> None:
    times = Counter(reached)
    twice = sorted(core for core, count in times.items() if count > 1)
    if twice:
        fail(f"{here}: core {twice[0]} gets the request {times[twice[0]]} times")
    if root in times:
        fail(f"{here}: the tree sends the request to core {root}, the initiator itself")
    strangers = sorted(core for core in times if not 0 <= core < n)
    if strangers:
        fail(f"{here}: the tree reaches core {strangers[0]}, which takes no part")
    missing = sorted(set(range(n)) - set(times) - {root})
    if missing:
        fail(f"{here}: core {missing[0]} is not in the tree")


def latency_tables(topology) -> dict[str, dict]:
    """Two SKBs' round trips: the model's (four line transfers, as a URPC round
    trip roughly is), and the same with a few cycles of measuring noise, so
    that the nearest core of a package is not always its first."""
    n = topology.n_cores()
    modeled = {(a, b): 4 * topology.transfer_cycles(a, b)
               for a in range(n) for b in range(n) if a != b}
    noisy = {(a, b): cycles + (a * b + a + b) % 11 for (a, b), cycles in modeled.items()}
    return {"modeled": modeled, "measured": noisy}


@test(points=10)
def tree_uses_the_measured_latencies():
    """Each package's aggregator is the core the initiator reaches fastest; its own package is handed off."""
    from emulator.interconnect import load_topology
    from kernel.skb import SystemKnowledgeBase, covered
    topology = load_topology("amd-8x4")
    n = topology.n_cores()
    last = n - 1
    # Latencies as if some cores were busy while the monitors measured: in
    # each package the fast ones answer sooner by the cycles given.
    busy = {"each package's last core answers fastest": lambda core: 12 * (core % 4),
            "a middle core answers fastest": lambda core: 30 * (core % 4 == 1 + core // 4 % 2),
            "two cores tie for fastest": lambda core: 30 * (core % 4 >= 2)}
    scenarios = [(f"from core 0, {name}", 0, lambda a, b, speed=speed: -speed(a) - speed(b))
                 for name, speed in busy.items()]
    # A round trip measured from each end need not come out the same (a core
    # busy while it measured): the initiator's own measurement counts, for it
    # says how fast the request reaches a core.

    def each_way(a, b):
        if a == 0:
            return -12 * (b % 4)          # core 0 found each package's last core fastest
        return 12 * (a % 4) if b == 0 else 0      # which found core 0 slowest

    def per_initiator(a, b):
        if a == 0:
            return -12 * (b % 4)          # core 0 found each package's last core fastest
        return -12 * (3 - b % 4) if a == last else 0   # the last core, the first

    scenarios += [("from core 0, which measured each package's last core fastest, and those "
                   "measured core 0 slowest", 0, each_way),
                  (f"from core {last}, which measured each package's first core fastest, "
                   f"where core 0 measured the last", last, per_initiator)]
    for scenario, root, adjust in scenarios:
        round_trips = {(a, b): 4 * topology.transfer_cycles(a, b) + adjust(a, b)
                       for a in range(n) for b in range(n) if a != b}
        skb = SystemKnowledgeBase(topology, round_trips)
        here = f"amd-8x4, 32 cores, {scenario}"
        check_shape(skb, numa_tree(skb, n, root, here), here, range(n), root)
    # Every machine and size, from either end and the middle: a tree that is
    # NUMA-aware only where the scenarios above look (32 cores of amd-8x4)
    # and plain multicast elsewhere must not pass.
    from emulator.interconnect import list_presets
    for name in list_presets():
        topology = load_topology(name)
        skb = SystemKnowledgeBase(topology, latency_tables(topology)["measured"])
        for n in range(2, min(32, topology.n_cores()) + 1):
            for root in sorted({0, n // 2, n - 1}):
                here = f"{name}, {n} cores, from core {root} (measured latencies)"
                routes = numa_tree(skb, n, root, here)
                check_covers(here, covered(routes), n, root)
                check_shape(skb, routes, here, range(n), root)


def check_shape(skb, routes, here, cores, root) -> None:
    """The tree the handout asks for over `cores`: each route forwards only
    within its child's package; with other packages, one message per package
    (its own too), to the core the initiator reaches fastest; with none,
    one route per mate."""
    topology = skb.topology
    for route in routes:
        strays = [core for core in route.forwards
                  if topology.package_of(core) != topology.package_of(route.child)]
        if strays:
            fail(f"{here}: core {route.child} forwards to core {strays[0]}, of another package: "
                 f"an aggregator serves the rest of its own package")
    own = topology.package_of(root)
    if all(topology.package_of(core) == own for core in cores):
        if any(route.forwards for route in routes):
            fail(f"{here}: the tree is {routes}; with no other package there is nothing to "
                 f"gain by handing the package off: one route per mate")
        return
    check_aggregators(skb, topology, routes, here, root, cores)


def check_aggregators(skb, topology, routes, here, root=0, cores=None) -> None:
    """One message per package of `cores` (default: every core), to the core
    the initiator reaches fastest (ties: lower number)."""
    by_package = defaultdict(list)
    for route in routes:
        by_package[topology.package_of(route.child)].append(route.child)
    own = topology.package_of(root)
    taking_part = set(range(topology.n_cores()) if cores is None else cores)
    for package, members in enumerate(topology.packages):
        members = [core for core in members if core in taking_part and core != root]
        if not members:
            continue
        children = by_package.get(package, [])
        fastest = min(members, key=lambda core: (skb.latency(root, core), core))
        if package == own and len(children) != 1:
            fail(f"{here}: core {root} sends to {len(children)} cores of its own package itself: "
                 f"hand the package to the nearest one (core {fastest}), which serves the others")
        if len(children) != 1:
            fail(f"{here}: core {root} sends {len(children)} messages into package {package}: "
                 f"one, to its aggregator, which forwards to the rest")
        chosen = children[0]
        if chosen != fastest:
            which = f"core {root}'s own package" if package == own else f"package {package}"
            why = why_chosen(skb, root, chosen, fastest)
            fail(f"{here}: {which} is handed to core {chosen}, but core {root} reaches core "
                 f"{fastest} fastest ({skb.latency(root, fastest):.0f} against "
                 f"{skb.latency(root, chosen):.0f} cycles one way){why}")


def why_chosen(skb, root, chosen, fastest) -> str:
    """What a tree that chose `chosen` over `fastest` measured instead, if we can tell."""
    if skb.latency(root, fastest) == skb.latency(root, chosen):
        return " (a tie: the lower core number wins)"
    if skb.latency(chosen, root) < skb.latency(fastest, root):
        return (f" (core {chosen} reaches core {root} fastest: the latency that counts is "
                f"latency(root, core), the way the request goes)")
    if root != 0 and skb.latency(0, chosen) < skb.latency(0, fastest):
        return (f" (core 0 reaches core {chosen} fastest: the latency that counts is the "
                f"initiator's, latency(root, core))")
    return ""


# --- the monitor --------------------------------------------------------------------------------

@test(points=25)
def every_core_invalidates():
    """After the shootdown no core translates the page: its PTE is gone and a touch faults."""
    from unicorn.x86_const import UC_X86_REG_CR2
    runs = [(FOUR, quantum) for quantum in FAST_FIRST] + [(SIXTEEN, QUANTA[-1])]
    for (image, topology, n), quantum in runs:
        run = multicast_run(image, topology, quantum)
        here = f"{topology}, {n} cores, quantum {quantum}"
        found = shootdown_steps(run, n, MULTICAST, here,
                                lambda step: check_own_part(run, step, here))
        check_no_stale_reads(run, found, here)
        memory = run.system.machine.memory
        touched = {m.receiver for m in pair_messages(run, n) if m.words[0] == OP_TOUCH}
        early = answered_early(found, n)
        for core in range(1, n):
            pte = memory.read_u64(PERCORE_BASE + core * PERCORE_SIZE + PC_PT_CHANNELS + PAGE * 8)
            if pte:
                fail(f"{here}: core {core}'s page table still maps page {PAGE} after the "
                     f"shootdown (PTE {pte:#x}): " +
                     (early or "it never unmapped it"),
                     run, stop=f"shootdown_node core {core}")
            if core not in touched:
                fail(f"{here}: core {core}'s monitor never took the touch that follows the "
                     f"shootdown: it is stuck, or gone", run, stop=f"shootdown_node core {core}")
            if run.system.machine.cores[core].regs.read(UC_X86_REG_CR2) != \
                    USER_CHANNELS + PAGE * 4096:
                fail(f"{here}: core {core} still read page {PAGE} after the shootdown: its PTE "
                     f"is gone, but " + (early or "its TLB kept the entry (no SYS_INVLPG, or "
                     "not of the page: rdi = the page number, MSG_PAGE, not its address)"),
                     run, stop=f"shootdown_node core {core}")
        run.expect_clean(failed=n - 1)      # each monitor dies of its touch, as it must
    check_stale_reads_counted()


def answered_early(found, n) -> str:
    """Why a core may still hold the page although its own part is right: monitor
    0 answered an unmap step before every core had acknowledged, and the
    program went on to touch the page (or "" if every answer counted n cores)."""
    for step in found:
        if step.op == OP_INVALIDATE and step.answer[2] < n:
            return (f"monitor 0 answered the unmap step counting {step.answer[2]} of the {n} "
                    f"cores, so the program went on before every core had dropped the page: an "
                    f"acknowledgement counts its core and its subtree, and goes up only after "
                    f"take_ack has collected the subtree's")
    return ""


def check_own_part(run, step, here) -> None:
    """Between taking the request and acknowledging it, each core did its own
    part: a map (local_map); or an unmap, then an invlpg, of the page."""
    name = STEP_NAMES[step.op]
    needed = ("map",) if step.op == OP_PREPARE else ("unmap", "invlpg")
    for core in range(1, step.cores):
        taken = [m.time for m in step.messages if m.receiver == core and m.words[0] == step.op]
        acked = [e["time"] for e in step.ack_sends if e["core"] == core]
        if not taken or not acked:
            continue                          # the messages' tests say what is missing
        mine = [(time, call, page) for time, call, page in run.calls[core] if time >= taken[0]]
        before = [call for time, call, page in mine if time <= acked[0] and page == PAGE]
        stop = f"shootdown_node core {core}"
        missing = [call for call in needed if call not in before]
        if missing:
            later = {call for time, call, page in mine if time > acked[0] and page == PAGE}
            elsewhere = [page for time, call, page in mine
                         if time <= acked[0] and call == "invlpg" and page != PAGE]
            what = " and ".join(CALL_NAMES[call] for call in missing)
            if missing == ["invlpg"] and elsewhere:
                why = (f"acknowledged the {name} request, but its SYS_INVLPG was of "
                       f"{elsewhere[0]:#x}, not of page {PAGE}: {wrong_page(elsewhere[0])}")
            elif later.issuperset(missing):
                why = (f"acknowledged the {name} request before its own part: {what} of page "
                       f"{PAGE} came only after the acknowledgement, which says the core has "
                       f"done its part: do the part first")
            else:
                why = (f"acknowledged the {name} request without its own part: it never ran "
                       f"{what} of page {PAGE}")
            fail(f"{here}: core {core} {why}", run, stop=stop)
        if step.op == OP_PREPARE and ("unmap" in before or "invlpg" in before):
            fail(f"{here}: core {core} unmapped page {PAGE} in the map step: a prepare only "
                 f"maps it (local_map); the unmap and invlpg are the invalidation's (does the "
                 f"prepare's path fall through into the invalidation's?)", run, stop=stop)
        if "invlpg" in needed and "invlpg" not in before[before.index("unmap"):]:
            fail(f"{here}: core {core} ran SYS_INVLPG before unmap_page removed the PTE: "
                 f"until the PTE is gone any read (the probe's, a prefetch) puts the entry "
                 f"back in the TLB, so unmap first, then invlpg", run, stop=stop)


def wrong_page(rdi) -> str:
    """Why SYS_INVLPG got `rdi` rather than the page number, as far as the value tells."""
    if rdi in (PAGE * 4096, USER_CHANNELS + PAGE * 4096):
        return "rdi = the page number, MSG_PAGE, not its address"
    return ("rdi must hold the page number, MSG_PAGE, at the syscall: something between "
            "unmap_page (which keeps rdi) and the syscall changed it")


def leftover(count) -> str:
    """A hint for a stale count no probe can make: more than one per core."""
    if count <= 1:
        return ""
    return (f" ({count} is no count of reads but a register's leftover: the syscall clobbers "
            f"rcx, r11 and rax)")


def check_no_stale_reads(run, steps, here) -> None:
    """Where no probe reads the page (monitors built without it, and every
    prepare), every acknowledgement counts 0 stale reads: ACK_STALE is what
    unmap_page saw, not a constant that the probe's runs happen to expect."""
    for step in steps:
        for m in step.messages:
            if m.words[0] == OP_REPLY and m.words[2] != 0:
                fail(f"{here}: core {m.sender} acknowledged the {STEP_NAMES[step.op]} step with "
                     f"{m.words[2]} stale read(s), where no probe read the page: ACK_STALE "
                     f"starts as what this core's own part returned (unmap_page's rax: 0 "
                     f"without the probe; local_map's: 0) and take_ack adds the "
                     f"subtree's{leftover(m.words[2])}",
                     run, stop=f"shootdown_node core {m.sender}")


def check_stale_reads_counted() -> None:
    """With the probe, each core but 0 reads the page between its unmap and its
    invlpg, through its stale TLB entry: each acknowledgement counts the
    stale reads of its core and subtree, and monitor 0's answer all of them."""
    image, topology, n = PROBED
    run = multicast_run(image, topology, FAST_FIRST[0])
    here = f"{topology}, {n} cores, monitors built probe=1"
    parent = parents(run.system.skb.route("multicast", range(n)), n, here)
    found = shootdown_steps(run, n, MULTICAST, here)
    check_no_stale_reads(run, [step for step in found if step.op != OP_INVALIDATE], here)
    for step in found:
        if step.op != OP_INVALIDATE:
            continue
        for m in step.messages:
            subtree = sorted(core for core, up in parent.items() if up == m.sender)
            whose = f"itself and its subtree {subtree}" if subtree else "itself"
            if m.words[0] == OP_REPLY and m.words[2] != 1 + len(subtree):
                fail(f"{here}: core {m.sender} acknowledged {m.words[2]} stale read(s) for "
                     f"{whose}, which made {1 + len(subtree)}: "
                     f"ACK_STALE starts as what unmap_page returned (rax, before the syscall "
                     f"takes it), take_ack adds the subtree's, and nothing writes it after",
                     run, stop=f"shootdown_node core {m.sender}")
        if step.answer[3] != n - 1:
            fail(f"{here}: monitor 0's answer counts {step.answer[3]} stale read(s), but cores "
                 f"1 to {n - 1} each read the page through their stale TLB entry",
                 run, stop="root_run_done core 0")


@test(points=15)
def requests_follow_the_tree():
    """Each core gets each request once, from its parent in the SKB's tree, at several quanta."""
    # LONG: an aggregator's ring to each core fills, so urpc_send waits for
    # room there, on the path that clobbers r8: a forwarding loop that keeps
    # its mask in r8 loses it only then.
    runs = [(SIX, 7, False), (SIX, 100, False), (SIX, 100, True), (SIXTEEN, QUANTA[-1], False),
            (LONG, QUANTA[-1], False)]
    for (image, topology, n), quantum, last in runs:
        run = multicast_run(image, topology, quantum, last_aggregators=last)
        here = f"{topology}, {n} cores, quantum {quantum}" + \
            (", each package's last core its aggregator" if last else "") + \
            (f", {ROUNDS[image]} rounds, so that each ring fills and urpc_send waits for room "
             f"(and clobbers rax rcx rdx r8)" if image in ROUNDS else "")
        tree = run.system.skb.route("multicast", range(n))
        shootdown_steps(run, n, MULTICAST, here, lambda step: check_requests(run, step, tree, here))
        expect_touches_done(run, n)


@test(points=15)
def acknowledgements_come_up_the_tree():
    """Each core acknowledges once, to its parent, after its subtree did; monitor 0 answers after all."""
    # With each package's last core its aggregator too: a monitor that waits
    # only for the cores numbered above it acknowledges before its subtree.
    runs = [(SIX, 13, False), (SIX, QUANTA[-1], False), (SIX, 100, True),
            (SIXTEEN, QUANTA[-1], False)]
    for (image, topology, n), quantum, last in runs:
        run = multicast_run(image, topology, quantum, last_aggregators=last)
        here = f"{topology}, {n} cores, quantum {quantum}" + \
            (", each package's last core its aggregator" if last else "")
        tree = run.system.skb.route("multicast", range(n))
        shootdown_steps(run, n, MULTICAST, here, lambda step: check_acks(run, step, tree, here))
        expect_touches_done(run, n)


def expect_touches_done(run, n) -> None:
    """The run ended cleanly but for the touches after the shootdown. A touch
    that faults kills its monitor, as it must; one that does not fault is
    every_core_invalidates's to judge, not the messages' tests."""
    killed = sum(run.system.failed_programs(core) for core in range(1, n))
    run.expect_clean(failed=min(killed, n - 1))


# --- both parts: the cost -------------------------------------------------------------------------

@test(points=15)
def numa_multicast_beats_multicast():
    """At 32 cores on amd-8x4 the NUMA-aware tree's shootdown is 10% faster than plain multicast's."""
    calls = defaultdict(list)
    run = boot("images/cost-32.lst", topology="amd-8x4", max_cycles=MAX_CYCLES,
               setup=lambda system: watch_own_calls(system, calls))
    measured = measured_shootdowns(run)
    for protocol, step in measured.items():
        slow = first_to_work_before_forwarding(run, calls, step, trees_of(run)[protocol])
        if slow is not None:
            fail(f"amd-8x4, 32 cores, {PROTOCOL_NAMES[protocol]}: core {slow}, an aggregator, "
                 f"unmapped the page before it had forwarded the request to all of its subtree: "
                 f"forward first, so that its subtree works while it does",
                 run, stop=f"shootdown_node core {slow}")
        waited = first_to_wait_before_forwarding(run, step, trees_of(run)[protocol])
        if waited is not None:
            fail(f"amd-8x4, 32 cores, {PROTOCOL_NAMES[protocol]}: core {waited}, an aggregator, "
                 f"took an acknowledgement before it had forwarded the request to all of its "
                 f"subtree: send to every core of the subtree first, then collect, so that "
                 f"they all work at once rather than one after another",
                 run, stop=f"shootdown_node core {waited}")
    # The speed is the tree's: measured with the tree's own monitor, so that a
    # monitor that dawdles under plain multicast (it can tell the protocols
    # apart by the subtrees it is given, or by the order the image runs
    # them in) does not make a slow tree look fast.
    cycles = {protocol: step.answer[1] for protocol, step in
              measured_shootdowns(boot("images/cost-32.lst", topology="amd-8x4",
                                       max_cycles=MAX_CYCLES, reference=True)).items()}
    numa, plain = cycles[NUMA_MULTICAST], cycles[MULTICAST]
    if numa > FASTER * plain:
        fail(f"the NUMA-aware shootdown took {numa:,} cycles, plain multicast {plain:,}, both "
             f"with the tree's own monitor: not {100 - 100 * FASTER:.0f}% faster (whose "
             f"messages does core 0 wait for?)")


PROTOCOL_NAMES = {MULTICAST: "multicast", NUMA_MULTICAST: "the NUMA-aware tree"}


def trees_of(run) -> dict:
    """The two trees `cost-32` ran, by protocol number, from the run's SKB."""
    return {MULTICAST: run.system.skb.route("multicast", range(32)),
            NUMA_MULTICAST: numa_tree(run.system.skb, 32, 0, "amd-8x4, 32 cores")}


def measured_shootdowns(run) -> dict:
    """`cost-32`'s measured shootdown (the last step) under each protocol, both
    checked: the requests and acknowledgements went along the tree's edges."""
    if run.system.skb is None:
        run.expect_clean()
        fail("monitor 0 never asked the SKB for its routes", run)
    measured = {}
    for protocol, tree in trees_of(run).items():
        here = f"amd-8x4, 32 cores, {PROTOCOL_NAMES[protocol]}"
        parents(tree, 32, here)

        def check(step, tree=tree, here=here):
            check_requests(run, step, tree, here)
            check_acks(run, step, tree, here)
        measured[protocol] = shootdown_steps(run, 32, protocol, here, check)[-1]
    run.expect_clean()
    return measured


def first_to_work_before_forwarding(run, calls, step, tree) -> int | None:
    """The first aggregator of `tree` that did its own part of `step` before
    it had sent the request on to every core of its subtree, or None."""
    for route in tree:
        sent = [e["time"] for e in run.sends() if e["core"] == route.child
                and e["words"][0] == step.op and step.begin <= e["time"] <= step.answered]
        own = [time for time, call, page in calls[route.child]
               if call == "unmap" and page == PAGE and time >= step.begin]
        if route.forwards and sent and own and own[0] < sent[-1]:
            return route.child
    return None


def first_to_wait_before_forwarding(run, step, tree) -> int | None:
    """The first aggregator of `tree` that took an acknowledgement in `step`
    before it had sent the request on to every core of its subtree, or None."""
    for route in tree:
        sent = [e["time"] for e in run.sends() if e["core"] == route.child
                and e["words"][0] == step.op and step.begin <= e["time"] <= step.answered]
        taken = [m.time for m in step.messages
                 if m.receiver == route.child and m.words[0] == OP_REPLY]
        if route.forwards and sent and taken and taken[0] < sent[-1]:
            return route.child
    return None


# --- checking a step of a shootdown ---------------------------------------------------------------

def check_requests(run, step, tree, here) -> None:
    """The request went exactly along the tree's edges, each once."""
    parent = parents(tree, step.cores, here)
    name = STEP_NAMES[step.op]
    got = defaultdict(list)
    for m in step.messages:
        if m.words[0] == step.op:
            got[m.receiver].append(m.sender)
    if 0 in got:
        fail(f"{here}: core {got[0][0]} sent the {name} request back to core 0, the initiator",
             run, stop=f"shootdown_node core {got[0][0]}")
    strays = [core for core in got if not 0 < core < step.cores]
    if strays:
        fail(f"{here}: core {strays[0]} got the {name} request from core {got[strays[0]][0]}, "
             f"but takes no part in it", run, stop=f"shootdown_node core {got[strays[0]][0]}")
    for core in range(1, step.cores):
        senders = got.get(core, [])
        if not senders:
            below = (f": a subtree may hold cores numbered below its aggregator"
                     if 0 < core < parent[core] else "")
            fail(f"{here}: core {core} never got the {name} request (its parent in the tree is "
                 f"core {parent[core]}{below}){last_words(run, parent[core])}",
                 run, stop=sender_stop(parent[core]))
        if senders != [parent[core]]:
            fail(f"{here}: core {core} got the {name} request {len(senders)} time(s), from core(s) "
                 f"{', '.join(map(str, senders))}; its parent in the tree is core {parent[core]}, "
                 f"once", run, stop=f"shootdown_node core {senders[-1]}")


def sender_stop(core) -> str:
    """Where a replay stops to watch `core` send requests: monitor 0 sends
    from root_run (the tree's code), the others from shootdown_node."""
    return "root_run_send core 0" if core == 0 else f"shootdown_node core {core}"


def check_acks(run, step, tree, here) -> None:
    """Each core acknowledged once, to its parent, for its subtree, after its subtree did;
    monitor 0 answered after the last acknowledgement, counting every core."""
    parent = parents(tree, step.cores, here)
    children = defaultdict(list)
    for child, up in parent.items():
        children[up].append(child)
    name = STEP_NAMES[step.op]
    sent = defaultdict(list)                  # core -> times it sent an acknowledgement
    for event in step.ack_sends:
        sent[event["core"]].append(event["time"])
    arrived = {}                              # (from, to) -> when it was taken
    for m in step.messages:
        if m.words[0] == OP_REPLY:
            arrived.setdefault((m.sender, m.receiver), (m.time, m.words[1]))
    for core in range(1, step.cores):
        stop = f"shootdown_node core {core}"
        if len(sent[core]) > 1:
            fail(f"{here}: in the {name} step core {core} acknowledged {len(sent[core])} times: "
                 f"once, to its parent (core {parent[core]})", run, stop=stop)
        if not sent[core]:
            continue                          # an unfinished step: shootdown_steps says so
        to = [receiver for (sender, receiver) in arrived if sender == core]
        if to and to != [parent[core]]:
            fail(f"{here}: core {core} acknowledged to core {to[0]}; its parent in the tree is "
                 f"core {parent[core]}", run, stop=stop)
        if not to and step.answer is not None:
            fail(f"{here}: in the {name} step core {core} acknowledged, but its parent in the "
                 f"tree (core {parent[core]}) never took it: send ACK to MSG_PARENT, the parent "
                 f"the request names, and leave MSG as it came while forwarding",
                 run, stop=stop)
        for child in children[core]:
            when = arrived.get((child, core))
            if when is None or when[0] > sent[core][0]:
                fail(f"{here}: in the {name} step core {core} acknowledged before core "
                     f"{child}'s acknowledgement reached it: wait for the subtree first",
                     run, stop=stop)
        count = arrived.get((core, parent[core]), (0, None))[1]
        if count is not None and count != 1 + len(children[core]):
            fail(f"{here}: core {core} acknowledged for {count} core(s); it and its subtree "
                 f"{sorted(children[core])} are {1 + len(children[core])}", run, stop=stop)
    if step.answer is None:
        return
    last = max((times[0] for times in sent.values()), default=0)
    if step.answered < last:
        fail(f"{here}: monitor 0 finished the {name} step before the last acknowledgement was "
             f"sent", run, stop="root_run_done core 0")
    if step.answer[2] != step.cores:
        fail(f"{here}: monitor 0 counted {step.answer[2]} cores that did the {name} step, of "
             f"{step.cores}", run, stop="root_run_done core 0")


# --- reading a run --------------------------------------------------------------------------------

class Message:
    """A message between monitors on a pair ring, as its receiver took it."""

    def __init__(self, time, sender, receiver, words):
        self.time, self.sender, self.receiver, self.words = time, sender, receiver, words


class Step:
    """One request of the program to monitor 0 (map or unmap the page on cores
    0 .. cores-1) and what the monitors did for it: the pair-ring messages and
    acknowledgements from its arrival to the next request's."""

    def __init__(self, op, cores, begin, answered, answer):
        self.op, self.cores = op, cores
        self.begin, self.answered, self.answer = begin, answered, answer
        self.messages, self.ack_sends = [], []


def shootdown_steps(run, n, protocol, here, check=lambda step: None) -> list[Step]:
    """The run's map and unmap steps of `protocol`, RUNS of each, each passed to
    `check` and then required to have been answered by monitor 0."""
    found = steps(run, n, protocol)
    for step in found:
        check(step)
        if step.answer is None:
            why, stop = who_is_missing(run, step)
            fail(f"{here}: monitor 0 never finished the {STEP_NAMES[step.op]} step: {why}",
                 run, stop=stop)
    rounds = getattr(run, "rounds", RUNS)     # multicast_run's images say theirs
    if len(found) != 2 * rounds:
        run.expect_clean()
        fail(f"{here}: monitor 0 ran {len(found)} of the {2 * rounds} steps (map, unmap, "
             f"and so on)", run)
    return found


def who_is_missing(run, step) -> tuple[str, str]:
    """Why an unfinished step is stuck, as far as the messages tell, and where
    to stop a replay to see it."""
    acked = {e["core"] for e in step.ack_sends}
    taken = {m.sender for m in step.messages if m.words[0] == OP_REPLY}
    lost = sorted(acked - taken)
    if lost:
        return (f"core {lost[0]} acknowledged, but no monitor took its acknowledgement "
                f"(sent to the wrong core?)", f"shootdown_node core {lost[0]}")
    silent = [core for core in range(1, step.cores) if core not in acked]
    asked = {m.receiver for m in step.messages if m.words[0] == step.op}
    stuck = [core for core in silent if core in asked]
    left_out = [m for m in step.messages if m.words[0] == step.op and m.receiver in silent
                and not m.words[MSG_PARTICIPANTS] >> m.receiver & 1]
    if left_out:
        m = left_out[0]
        return (f"core {m.receiver} got the {STEP_NAMES[step.op]} request from core {m.sender}, "
                f"but its MSG_PARTICIPANTS ({m.words[MSG_PARTICIPANTS]:#x}) leaves core "
                f"{m.receiver} out, so shootdown_step ignored it: a forwarded request keeps "
                f"MSG's MSG_PARTICIPANTS", f"shootdown_node core {m.sender}")
    words = last_words(run, silent[0]) if silent else ""
    if "(in local_map" in words:
        why = ("the monitor died of that fault in local_map, the helper after your region: "
               "code that runs on past the region's end, without its ret?")
    elif "user fault" in words:
        why = ("the monitor died of that fault: what did the helper it faulted in get in "
               "its registers? A register the interface says a call clobbers is gone after it")
    else:
        why = ("a monitor that waits forever, or one whose rbx, rbp or r15 changed: the "
               "interface says to keep them")
    return (f"core(s) {', '.join(map(str, silent))} never acknowledged{words} ({why})",
            f"shootdown_node core {stuck[0]}" if stuck else "take_ack core 0")


def last_words(run, core) -> str:
    """What a core printed last, if anything (a monitor prints only when it gives
    up, or the CPU driver when the monitor faulted: then where, by label)."""
    lines = [line.strip() for printer, line in run.console if printer == core]
    return f" (core {core} printed: {named_rips(run, '; '.join(lines[-2:]))})" if lines else ""


def named_rips(run, text) -> str:
    """`text` with each "rip 0x..." followed by the label it is in, if any."""
    from kernel.diagnosis import symbols_of
    symbols = symbols_of(run.system)

    def name(match):
        label = symbols.describe(int(match.group(1), 16))
        return match.group(0) + (f" (in {label})" if label else "")
    return re.sub(r"rip (0x[0-9a-f]+)", name, text)


def steps(run, n, protocol) -> list[Step]:
    """The map and unmap steps of `protocol` in the run, in order."""
    asked = sorted((e for e in run.receives() if e["core"] == 0
                    and e["channel"] >= BROADCAST_PAGE
                    and e["words"][0] in (OP_PREPARE, OP_INVALIDATE, OP_TOUCH, OP_STOP)),
                   key=lambda e: e["time"])     # the program's requests, as monitor 0 took them
    answers = sorted((e for e in run.sends() if e["core"] == 0 and e["words"][0] == ANSWER),
                     key=lambda e: e["time"])
    messages = pair_messages(run, n)
    found = []
    for index, request in enumerate(asked):
        begin = request["time"]
        end = asked[index + 1]["time"] if index + 1 < len(asked) else float("inf")
        op, w2 = request["words"][0], request["words"][2]
        if op not in STEP_NAMES or w2 >> 8 != protocol:
            continue
        answer = next((a for a in answers if begin <= a["time"] < end), None)
        step = Step(op, w2 & 255, begin, answer["time"] if answer else None,
                    answer["words"] if answer else None)
        step.messages = [m for m in messages if begin <= m.time < end]
        step.ack_sends = [e for e in run.sends() if begin <= e["time"] < end
                          and e["channel"] < BROADCAST_PAGE and e["words"][0] == OP_REPLY]
        found.append(step)
    return found


def pair_messages(run, n) -> list[Message]:
    """Every message a monitor took from a pair ring, in time order.

    A tracepoint names the ring's page. Ring a -> b is number a * 64 + b,
    three to a page, so for a known receiver b one sender a fits the page."""
    out = []
    for event in run.receives():
        page, receiver = event["channel"], event["core"]
        if page >= BROADCAST_PAGE:
            continue
        for sender in range(n):
            if 0 <= sender * PAIR_STRIDE + receiver - RINGS_PER_PAGE * page < RINGS_PER_PAGE:
                out.append(Message(event["time"], sender, receiver, event["words"]))
    return sorted(out, key=lambda m: m.time)


def parents(tree, n, here) -> dict[int, int]:
    """Each core's parent in a two-level tree rooted at core 0, if the tree
    is one over cores 0 .. n-1 (or a FAIL: the tree is wrong, not the monitor)."""
    from kernel.skb import covered
    check_covers(f"{here}: the SKB's tree", covered(tree), n, 0)
    parent = {}
    for route in tree:
        parent[route.child] = 0
        for core in route.forwards:
            parent[core] = route.child
    return parent


def multicast_run(image, topology, quantum, last_aggregators=False):
    """Boot a shootdown image that runs plain multicast; `run.calls[core]`
    holds the core's own-part system calls, (time, "map" | "unmap" |
    "invlpg", page), in order.

    The SKB computes every protocol's routes at boot, the NUMA-aware tree's
    too: here that is plain multicast's, so the monitor is graded whether or
    not the student's tree is written (each test is its own process). With
    `last_aggregators`, each package's last core aggregates it instead of its
    first (as a NUMA-aware tree may choose): a subtree below the aggregator.
    """
    from kernel.skb import SystemKnowledgeBase
    plain = PLAIN.setdefault("multicast", SystemKnowledgeBase._multicast)
    tree = multicast_from_last_core if last_aggregators else plain
    SystemKnowledgeBase._multicast = SystemKnowledgeBase._numa_multicast = tree
    calls = defaultdict(list)
    run = boot(image, topology=topology, quantum=quantum, max_cycles=MAX_CYCLES,
               setup=lambda system: watch_own_calls(system, calls))
    run.calls = calls
    run.rounds = ROUNDS.get(image, RUNS)
    return run


PLAIN = {}                    # the tree's own multicast, before a test replaces it


def multicast_from_last_core(skb, cores, root):
    """Plain multicast, but each other package's last core is its aggregator."""
    from kernel.skb import Route
    mates, others = skb.packages(cores, root)
    return [Route(core) for core in mates] + \
           [Route(members[-1], tuple(members[:-1])) for members in others]


def watch_own_calls(system, calls) -> None:
    """Hook the CPU driver's map, unmap and invlpg handlers: each call goes
    into calls[core] as (time, what, page)."""
    from unicorn import UC_HOOK_CODE
    from unicorn.x86_const import UC_X86_REG_RDI
    symbols = system.kernel.symbols
    for core in system.machine.cores:
        for label, what in OWN_CALLS.items():
            def on_call(uc, _address, _size, _data, core=core, what=what):
                calls[core.id].append((core.now(), what, uc.reg_read(UC_X86_REG_RDI)))
            core.uc.hook_add(UC_HOOK_CODE, on_call, begin=symbols[label], end=symbols[label])
            core.uc.ctl_remove_cache(symbols[label], symbols[label] + 1)
