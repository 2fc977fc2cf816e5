"""The store buffer (emulator/interconnect/storebuffer.py): x86-TSO timing and litmus tests.

First the buffer on its own, in front of a coherence directory: what a
store, a fence and a locked instruction cost, and when each store commits.
Then guest programs on two cores, the litmus tests of x86-TSO, run at many
quanta and seeds as the lab graders run them: message passing is never
broken, a core reads its own stores at once, and store buffering with an
`mfence` never shows both loads old.
"""

import copy
import re

import pytest

from emulator.interconnect import load_topology
from emulator.interconnect.coherence import CoherenceDirectory
from emulator.interconnect.storebuffer import (CORE_2, K10, LOCKED, MFENCE, SFENCE, StoreBuffer,
                                               fence_kind, spec_for)

LINE = 0x5000
LATER = 1_000_000


def machine(name="amd-8x4"):
    """A directory and a store buffer per core in front of it."""
    directory = CoherenceDirectory(load_topology(name), merge_reads=True)
    spec = spec_for(directory.topology)
    return directory, [StoreBuffer().attach(core, directory, spec)
                       for core in range(directory.topology.n_cores())]


def cost_of_write(directory, core, addr, now):
    """What the directory charges `core` for writing `addr` at `now`, asked of
    a copy (the transaction itself, before any store buffer)."""
    return copy.deepcopy(directory).access(core, addr, True, now)


def shared_by(directory, reader, lines, now=0):
    """`reader` reads each of `lines`, so a write to them must invalidate its copy."""
    for line in lines:
        directory.read(reader, line, now)


# -- the buffer on its own --

def test_a_store_miss_retires_at_hit_cost_and_commits_when_its_line_arrives():
    directory, buffers = machine()
    shared_by(directory, 8, [LINE])
    transaction = cost_of_write(directory, 0, LINE, LATER)
    charged = buffers[0].store(LINE, LATER, stamp=1)
    assert charged == directory.topology.l1_hit, "the core waited for its store's line"
    assert buffers[0].pending() == [LATER + transaction], "the store commits when the line is in"
    assert directory.visible_at(8, LINE >> 6) > LATER + transaction, \
        "another core could see the store before it committed"


def test_store_misses_overlap_up_to_the_outstanding_bound_then_the_core_waits():
    directory, buffers = machine()
    lines = [LINE + 64 * i for i in range(K10.outstanding + 1)]
    shared_by(directory, 8, lines)
    buffer, now = buffers[0], LATER
    for line in lines[:-1]:
        charged = buffer.store(line, now, stamp=now)
        assert charged == directory.topology.l1_hit, f"store to {line:#x} waited: no overlap"
        now += charged
    first_commit = buffer.pending()[0]
    charged = buffer.store(lines[-1], now, stamp=now)
    assert charged == first_commit - now + directory.topology.l1_hit, \
        "a full buffer must make the core wait for its oldest store, and only that"


def test_stores_commit_in_program_order():
    # A slow miss (its line is busy with core 31's write), then a quick one:
    # the quick line's store commits with the slow one, not before it.
    directory, buffers = machine()
    slow, quick = LINE, LINE + 64
    directory.write(31, slow, now=LATER)
    shared_by(directory, 1, [quick])
    assert cost_of_write(directory, 0, slow, LATER + 1) > \
        cost_of_write(directory, 0, quick, LATER + 4), "the test's first miss is not the slower"
    buffers[0].store(slow, LATER + 1, stamp=1)
    buffers[0].store(quick, LATER + 4, stamp=2)
    first, second = buffers[0].pending()
    assert second == first, "the second store became visible before the first"
    assert directory.visible_at(1, quick >> 6) > first, \
        "a reader could see the later store before the earlier one"


def test_a_store_hit_behind_a_miss_commits_after_it():
    directory, buffers = machine()
    shared_by(directory, 8, [LINE])
    directory.write(0, LINE + 64, now=0)          # core 0 holds this one M
    buffers[0].store(LINE, LATER, stamp=1)
    assert buffers[0].store(LINE + 64, LATER + 3, stamp=2) == directory.topology.l1_hit
    assert directory.visible_at(8, (LINE + 64) >> 6) > buffers[0].pending()[0], \
        "a store hit became visible before the buffered store in front of it"


@pytest.mark.parametrize("kind, cost", [(MFENCE, K10.mfence), (SFENCE, K10.sfence),
                                        (LOCKED, K10.locked)])
def test_a_fence_waits_for_every_buffered_store(kind, cost):
    directory, buffers = machine()
    shared_by(directory, 8, [LINE, LINE + 64])
    buffers[0].store(LINE, LATER, stamp=1)
    buffers[0].store(LINE + 64, LATER + 3, stamp=2)
    last = buffers[0].pending()[-1]
    now = LATER + 6
    assert buffers[0].fence(now, kind) == last - now + cost - 1, \
        f"{kind} did not wait for the buffer to drain, then cost {cost} cycles"
    assert buffers[0].pending() == []
    assert buffers[0].fence(last + 100, kind) == cost - 1, "an empty buffer: only the fence"


def test_a_locked_instructions_store_waits_for_its_line():
    directory, buffers = machine()
    shared_by(directory, 8, [LINE])
    buffers[0].fence(LATER, LOCKED)
    buffers[0].locked_at = 7                       # the locked instruction's stamp
    transfer = cost_of_write(directory, 0, LINE, LATER)
    assert buffers[0].store(LINE, LATER, stamp=7) == transfer
    assert buffers[0].pending() == []
    assert buffers[0].store(LINE + 64, LATER + transfer, stamp=8) == \
        directory.topology.l1_hit, "the next instruction's store did not go to the buffer"


def test_the_intel_machine_has_core_2_store_buffers_the_others_k10():
    assert spec_for(load_topology("intel-2x4")) is CORE_2
    for name in ("amd-2x2", "amd-4x4", "amd-8x4"):
        assert spec_for(load_topology(name)) is K10


@pytest.mark.parametrize("code, kind", [
    ("0faef0", MFENCE), ("0faef8", SFENCE), ("0faee8", None),          # lfence orders loads
    ("f048ff07", LOCKED),                                               # lock inc qword [rdi]
    ("f04c0fb108", LOCKED),                                             # lock cmpxchg [rax], r9
    ("48870424", LOCKED),                                               # xchg [rsp], rax
    ("4887d8", None),                                                   # xchg rax, rbx
    ("488907", None), ("f390", None),                                   # mov [rdi], rax; pause
])
def test_the_draining_instructions_are_recognised(code, kind):
    assert fence_kind(bytes.fromhex(code)) == kind


# -- litmus tests: guest programs on two cores --

# Each program runs on core 0 (side 0) and core PARTNER (side 1; the
# other cores leave at once), on lines of channel 5, which the cost model
# tracks: X at +0, Y at +64, each side's round count at +128 (the start
# barrier), and what SB_SIDE below keeps, at +256 and +320.
LITMUS = """
X = USER_CHANNELS + 5 * 4096
Y = X + 64
start:
    xor r12, r12                      # which side: 0 or 1
    test rdi, rdi
    jz side_known
    inc r12
    cmp rdi, PARTNER
    je side_known
    xor edi, edi
    call exit
side_known:
    mov r13, ROUNDS
    xor r14, r14                      # rounds with the outcome looked for
    xor r15, r15                      # rounds run
round:
    # Both sides start a round together: each counts its rounds in GO, and
    # waits for the other's count to catch up.
    inc r15
    mov rbx, X + 128
    mov qword ptr [rbx + r12 * 8], r15
    mov rax, r12
    xor rax, 1
barrier:
    cmp qword ptr [rbx + rax * 8], r15
    jae go
    pause
    jmp barrier
go:
    test r12, r12
    jnz side_1
side_0:
    SIDE_0
    jmp counted
side_1:
    SIDE_1
counted:
    adc r14, 0                        # the sides leave CF set for the outcome
    dec r13
    jnz round
    mov rdi, r14
    call print_u64
    xor edi, edi
    call exit
"""

# Store buffering: each side stores to one line and loads the other's, in
# round r: store r, load. Both loads old (< r) is the TSO outcome that only
# a store buffer allows; with an mfence between store and load, never.
SB_SIDE = """
    mov rbx, {mine}
    mov qword ptr [rbx], r15
    {fence}
    mov rbx, {other}
    cmp qword ptr [rbx], r15          # CF: the other side's store not seen yet
    mov rbx, X + 256
    setc byte ptr [rbx + r12]         # remember it, and wait for the other side's
    mov rax, r12
    xor rax, 1
    mov rbx, X + 320
    mov qword ptr [rbx + r12 * 8], r15
sb_wait_{side}:
    cmp qword ptr [rbx + rax * 8], r15
    jae sb_both_{side}
    pause
    jmp sb_wait_{side}
sb_both_{side}:
    mov rbx, X + 256
    mov al, byte ptr [rbx]
    and al, byte ptr [rbx + 1]        # both old: CF
    neg al
"""

# Message passing: side 0 stores the data, then the flag; side 1 loads the
# flag, then the data. Seeing the new flag with the old data breaks it.
MP_0 = """
    mov rbx, X
    mov qword ptr [rbx], r15          # data
    mov rbx, Y
    mov qword ptr [rbx], r15          # flag
    clc
"""
MP_1 = """
    mov rbx, Y
mp_poll:
    cmp qword ptr [rbx], r15          # the flag of this round
    jae mp_flag
    pause
    jmp mp_poll
mp_flag:
    mov rbx, X
    cmp qword ptr [rbx], r15          # CF: the data of this round not there
"""

# Forwarding: a core loads what it just stored, before the store can have
# reached the other core's copy of the line.
OWN_0 = """
    mov rbx, X
    mov rax, qword ptr [rbx]          # keep a copy: the store below misses
    mov rbx, Y
    mov qword ptr [rbx], r15          # the other side read Y: a miss
    cmp qword ptr [rbx], r15          # CF: its own store not seen
"""
OWN_1 = """
    mov rbx, Y
    mov rax, qword ptr [rbx]
    clc
"""

ROUNDS = 40
SCHEDULES = [(1, None), (7, None), (50, None), (10_000, None), (50, 1), (1_000, 2), (7, 3)]


def litmus(tmp_path, side_0, side_1, quantum, seed, topology="amd-2x2", partner=2):
    """Run a litmus program on cores 0 and `partner` (one hop apart on
    amd-2x2); how many rounds side 0 and side 1 saw their outcome."""
    from kernel.boot import boot_image
    from tests.conftest import write_image
    source = LITMUS.replace("ROUNDS", str(ROUNDS)).replace("PARTNER", str(partner)) \
                   .replace("SIDE_0", side_0).replace("SIDE_1", side_1)
    image = write_image(tmp_path, {"litmus": source}, {"litmus": "channels=5"})
    lines = []
    topology = load_topology(topology)
    system = boot_image(image, cores=topology.n_cores(), topology=topology, quantum=quantum,
                        seed=seed, output=lambda core, line: lines.append((core, line)))
    result = system.machine.run(max_cycles=10**8)
    assert result.clean, f"the litmus program failed: {result.reason}"
    counts = {core: int(line) for core, line in lines if re.fullmatch(r"\d+", line)}
    assert set(counts) == {0, partner}, f"a side did not finish its rounds: {lines[-4:]}"
    return counts[0], counts[partner]


@pytest.mark.parametrize("quantum, seed", SCHEDULES)
def test_message_passing_never_shows_the_flag_without_its_data(tmp_path, quantum, seed):
    _, broken = litmus(tmp_path, MP_0, MP_1, quantum, seed)
    assert broken == 0, (f"quantum {quantum}, seed {seed}: in {broken} of {ROUNDS} rounds the "
                         "reader saw the new flag but the old data (TSO forbids it)")


@pytest.mark.parametrize("quantum, seed", SCHEDULES)
def test_a_core_reads_its_own_buffered_store(tmp_path, quantum, seed):
    missed, _ = litmus(tmp_path, OWN_0, OWN_1, quantum, seed)
    assert missed == 0, (f"quantum {quantum}, seed {seed}: in {missed} of {ROUNDS} rounds a "
                         "core did not read back the store it had just made")


@pytest.mark.parametrize("quantum, seed", SCHEDULES)
def test_store_buffering_with_mfence_never_shows_both_loads_old(tmp_path, quantum, seed):
    sides = [SB_SIDE.format(mine=mine, other=other, fence="mfence", side=side)
             for side, (mine, other) in enumerate((("X", "Y"), ("Y", "X")))]
    both_old, _ = litmus(tmp_path, *sides, quantum, seed)
    assert both_old == 0, (f"quantum {quantum}, seed {seed}: in {both_old} of {ROUNDS} rounds "
                           "both loads missed the other side's store despite mfence")
