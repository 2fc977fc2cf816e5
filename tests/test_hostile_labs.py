"""Hostile student code against the lab grader: it fails, it never wins.

tests/test_lab_machinery.py holds graders whose own tests misbehave. Here
the student's code does: tests/fixtures/labs/96-answer asks for a Python
function that the grader calls inside the test's process, where the code
can reach the runner itself. Whatever it does (forge the verdict, print
without end, leave a process behind), the grade is a FAIL with a reason,
or a pass earned, and the grader neither hangs nor grows.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_LABS = ROOT / "tests" / "fixtures" / "labs"
ANSWER = "tests/fixtures/labs/96-answer/answer.py"
GRADE_SECONDS = 120           # a grade of one 20-second test that takes this long hangs


def grade(workspace: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, SPRAT_LABS=str(FIXTURE_LABS))
    return subprocess.run([sys.executable, "-m", "sprat", "lab", "grade", "--json"],
                          cwd=workspace, env=env, capture_output=True, text=True,
                          timeout=GRADE_SECONDS)


@pytest.fixture
def answer(tmp_path):
    """Write the body of the student's answer(); grade it; the test's result."""
    env = dict(os.environ, SPRAT_LABS=str(FIXTURE_LABS))
    done = subprocess.run([sys.executable, "-m", "sprat", "lab", "start", "96", "ws"],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    workspace = tmp_path / "ws"

    def write_and_grade(body: str) -> dict:
        path = workspace / ANSWER
        stub = 'raise NotImplementedError("answer: not written yet")'
        path.write_text(path.read_text().replace(stub, textwrap.indent(
            textwrap.dedent(body).strip(), "    ").lstrip()))
        done = grade(workspace)
        assert "Traceback" not in done.stderr, done.stderr
        assert done.returncode in (0, 1), (done.returncode, done.stderr)
        return json.loads(done.stdout)["tests"][0]
    return write_and_grade


def test_an_honest_answer_scores(answer):
    assert answer("return 42")["passed"]


def test_a_verdict_the_students_code_writes_itself_scores_nothing(answer):
    """The verdict's path was on the runner's command line: a module could
    write `passed` there and exit before the grader looked."""
    result = answer("""
        import os, sys
        for path in [sys.argv[i + 1] for i, word in enumerate(sys.argv) if word == "--verdict"] \\
                + ["verdict.json"]:
            with open(path, "w") as verdict:
                verdict.write('{"passed": true}')
        os._exit(0)
    """)
    assert not result["passed"], "a verdict forged by the student's code was believed"
    assert "os._exit" in result["reason"] or "not the grader's own" in result["reason"], \
        result["reason"]


def test_printing_without_end_costs_the_grader_no_memory(answer, tmp_path):
    """Everything a test prints went into the grader's memory: 1 GiB printed
    was 2.1 GB held, by the process that is not memory-limited."""
    measure = tmp_path / "measure.py"
    measure.write_text(textwrap.dedent(f"""
        import os, resource, subprocess, sys
        subprocess.run([sys.executable, "-m", "sprat", "lab", "grade"], cwd={str(tmp_path / 'ws')!r},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    """))
    answer("return 42")            # the workspace exists; now make it print 512 MiB
    path = tmp_path / "ws" / ANSWER
    path.write_text(path.read_text().replace(
        "return 42", 'import os\n    for _ in range(512):\n        os.write(1, b"x" * (1 << 20))\n'
                     '    return 42'))
    env = dict(os.environ, SPRAT_LABS=str(FIXTURE_LABS))
    done = subprocess.run([sys.executable, str(measure)], env=env, capture_output=True,
                          text=True, timeout=GRADE_SECONDS)
    largest = int(done.stdout.split()[-1]) << 10          # ru_maxrss is in KiB
    assert largest < 256 << 20, f"grading a test that printed 512 MiB took {largest >> 20} MiB"


def test_a_process_left_behind_does_not_hold_up_the_grade(answer, tmp_path):
    """A daemon the student's code leaves (its own session, so the runner's
    kill of the test's process group misses it) keeps the output pipe open:
    the grader waited for it to close, for as long as the daemon lived."""
    pid_file = tmp_path / "daemon.pid"
    try:
        result = answer(f"""
            import os, time
            if os.fork() == 0:
                os.setsid()
                with open({str(pid_file)!r}, "w") as note:
                    note.write(str(os.getpid()))
                time.sleep(600)
                os._exit(0)
            return 42
        """)
        assert result["passed"], result["reason"]
    finally:
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text()), 9)
            except (ProcessLookupError, ValueError):
                pass


@pytest.mark.parametrize("body, said", [
    ("import os\nos._exit(0)", "sys.exit or os._exit"),
    ("def f(n):\n    return f(n + 1)\nreturn f(0)", "recursion"),
])
def test_leaving_the_test_early_is_a_reason(answer, body, said):
    result = answer(body)
    assert not result["passed"] and said in result["reason"], result["reason"]


# --- assembly that kills itself: the reason says so ----------------------------------

def workspace_with(tmp_path, number, name, region, body):
    """A workspace of lab `number`: the reference, with `region` of `name` replaced by `body`."""
    from sprat.lab import workspace
    from sprat.lab.manifest import find_lab
    from sprat.lab.regions import find_regions
    lab = find_lab(str(number))
    files = workspace.reference_files(lab)
    lines = files[name].splitlines(keepends=True)
    found = next(r for r in find_regions(files[name], lab.slug, name) if r.name == region)
    # Indented as the region's BEGIN line is (a Python region's body is in a function).
    lines[found.begin + 1:found.end] = [textwrap.indent(textwrap.dedent(body).lstrip("\n"),
                                                        found.indent)]
    files[name] = "".join(lines)
    workspace.create(lab, tmp_path / "ws", files)
    return tmp_path / "ws"


def sprat_in(folder, *args) -> subprocess.CompletedProcess:
    """`sprat ARGS` run in a workspace, as a student would (text, a time limit)."""
    return subprocess.run([sys.executable, "-m", "sprat", *args], cwd=folder,
                          capture_output=True, text=True, timeout=GRADE_SECONDS)


def grade_one(folder, test):
    env = {key: value for key, value in os.environ.items() if key != "SPRAT_LABS"}
    done = subprocess.run([sys.executable, "-m", "sprat", "lab", "grade", "--json", "-k", test],
                          cwd=folder, env=env, capture_output=True, text=True,
                          timeout=GRADE_SECONDS)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    return json.loads(done.stdout)["tests"][0]


def test_a_sender_killed_for_a_wild_store_is_named_in_the_reason(tmp_path):
    """Lab 5, urpc_send storing to an unmapped address: the reason said only
    that the receivers wait, not that the senders were killed, nor for what."""
    folder = workspace_with(tmp_path, 5, "userland/lib/urpc.S", "send", """
        mov rcx, 0xdead0000000
        mov qword ptr [rcx], 1
    urpc_send_commit:
    """)
    result = grade_one(folder, "messages_arrive")
    assert not result["passed"]
    assert "program was killed: user fault: #PF" in result["reason"], result["reason"]
    assert "touching 0xdead0000000" in result["reason"], result["reason"]
    assert "(in urpc_send+" in result["reason"] and "lib/urpc.S:" in result["reason"], \
        f"the reason does not name the store's label and line: {result['reason']}"


def test_a_kernel_panic_in_the_students_cpu_driver_code_says_where(tmp_path):
    """Lab 3, the TLB flush (ring 0) storing to an unmapped address: the
    reason said `core 0 stopped with exit code 1`, not the panic and its line."""
    folder = workspace_with(tmp_path, 3, "cpudriver/syscall.S", "flush", """
        mov rcx, 0xdead0000000
        mov qword ptr [rcx], 1
        ret
    """)
    result = grade_one(folder, "pages_map")
    assert not result["passed"]
    assert "a kernel panic, #PF page fault" in result["reason"], result["reason"]
    assert "in sys_invoke+" in result["reason"], result["reason"]


# --- Python that lies about what it returns --------------------------------------------

LIAR_CLASS = """
class Liar(int):
    # An int that equals anything: every comparison the grader made agreed.
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    __hash__ = int.__hash__
    def __add__(self, other):
        return self
    __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __add__
"""
LIAR = LIAR_CLASS + "return Liar(0)\n"


def test_a_cost_that_equals_anything_scores_nothing(tmp_path):
    """Lab 6, amd_probe_broadcast returning an int subclass whose == always
    says yes: it scored the AMD path's 15 points without a line of the path."""
    folder = workspace_with(tmp_path, 6, "emulator/interconnect/protocol.py", "amd_path", LIAR)
    result = grade_one(folder, "the_amd_path_adds_up_its_legs")
    assert not result["passed"], "a cost that equals anything was believed"
    assert "is a Liar, not a plain int" in result["reason"], result["reason"]


def test_a_machine_priced_by_a_cost_that_equals_anything_is_refused_not_run_forever(tmp_path):
    """Its sums are itself, so the clocks never move: a boot with it (and
    lab 6's whole-machine test) ran until it was killed."""
    folder = workspace_with(tmp_path, 6, "emulator/interconnect/protocol.py", "amd_path", LIAR)
    done = sprat_in(folder, "boot", "images/contended.lst", "--topology", "amd-2x2")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "priced a transaction at a Liar: not a whole number of cycles" in done.stderr, \
        done.stderr


def test_aggregators_that_equal_anything_score_nothing(tmp_path):
    """Lab 8, a tree whose aggregators are int subclasses that equal any core:
    it passed the latency test while ignoring every latency."""
    tree = LIAR_CLASS + textwrap.dedent("""
        mates, others = self.packages(cores, root)
        routes = [Route(Liar(members[0]), tuple(members[1:])) for members in others]
        if mates and routes:
            routes.insert(0, Route(Liar(mates[0]), tuple(mates[1:])))
        return routes or [Route(core) for core in mates]
    """)
    folder = workspace_with(tmp_path, 8, "kernel/skb.py", "numa_tree", tree)
    result = grade_one(folder, "tree_uses_the_measured_latencies")
    assert not result["passed"], "aggregators that equal anything were believed"
    assert "a route names a core with a Liar, not an int" in result["reason"], result["reason"]


# --- a delivery (lab 1) that never reaches a handler --------------------------------------

def test_a_delivery_that_never_reaches_a_handler_ends_the_core_not_the_machine(tmp_path):
    """Lab 1, a delivery that sets RIP and RSP to 0 and nothing else: each
    fault faulted again at once, unicorn counted no instruction, and after
    the third it spun inside the engine: `sprat boot` hung."""
    folder = workspace_with(tmp_path, 1, "emulator/traps.py", "vector", """
        core.regs.write(x86.UC_X86_REG_RIP, 0)
        core.regs.write(x86.UC_X86_REG_RSP, 0)
    """)
    done = sprat_in(folder, "boot", "images/faults.lst", "--cores", "2")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "core 0 failed: 1000 events in a row at RIP 0x0" in done.stderr, done.stderr
    assert "with no instruction run between them" in done.stderr, done.stderr


def test_a_delivery_that_writes_nowhere_says_where_it_wrote(tmp_path):
    """Lab 1, a delivery that pushes its frame at an unmapped address: the
    reason was `delivery raised PageFault: (18446744073709486080, False, True, False)`."""
    folder = workspace_with(tmp_path, 1, "emulator/traps.py", "vector", """
        core.write_virtual(0xFFFF_FFFF_FFFF_0000, bytes(40))
    """)
    done = sprat_in(folder, "boot", "images/faults.lst", "--cores", "2")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "delivery raised PageFault: a kernel write of 0xffffffffffff0000: not mapped" \
        in done.stderr, done.stderr


# --- a Python part that does not import ------------------------------------------------

@pytest.mark.parametrize("appended, said", [
    ("def (:\n", "invalid syntax"),
    ("raise SystemExit(0)\n", "importing your file raised SystemExit"),
])
def test_a_python_part_that_does_not_import_is_one_line_for_boot_and_grade(tmp_path, appended,
                                                                            said):
    """Lab 1's traps.py with a syntax error or an import that fails: `sprat
    boot` printed a Python traceback, and one that exits at import ended it
    with status 0; the grade's reason named no line."""
    env = {key: value for key, value in os.environ.items() if key != "SPRAT_LABS"}
    subprocess.run([sys.executable, "-m", "sprat", "lab", "start", "1", "ws"], cwd=tmp_path,
                   env=env, capture_output=True, check=True)
    traps = tmp_path / "ws" / "emulator" / "traps.py"
    line = len(traps.read_text().splitlines()) + 1
    with open(traps, "a") as source:
        source.write(appended)
    for command in (["boot", "images/faults.lst", "--cores", "2"], ["lab", "grade"]):
        done = subprocess.run([sys.executable, "-m", "sprat", *command], cwd=tmp_path / "ws",
                              env=env, capture_output=True, text=True, timeout=GRADE_SECONDS)
        assert done.returncode == 2 and "Traceback" not in done.stderr, (command, done.stderr)
        errors = [line for line in done.stderr.splitlines() if line.startswith("sprat: error:")]
        assert len(errors) == 1 and said in errors[0], (command, done.stderr)
        assert f"emulator/traps.py:{line}: " in errors[0], (command, done.stderr)


def test_a_delivery_that_calls_sys_exit_fails_its_core_not_the_run(tmp_path):
    """Lab 1, `sys.exit(0)` inside the delivery: `sprat boot` ended with
    status 0 and said nothing."""
    folder = workspace_with(tmp_path, 1, "emulator/traps.py", "vector", """
        import sys
        sys.exit(0)
    """)
    done = sprat_in(folder, "boot", "images/faults.lst", "--cores", "2")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "core 0 failed: #PF page fault at RIP" in done.stderr, done.stderr
    assert "delivery raised SystemExit: 0" in done.stderr, done.stderr


def test_an_amd_path_that_raises_is_one_line_naming_the_students_line(tmp_path):
    """A leg's name mistyped (a KeyError in protocol.py): sprat boot, topology
    show and the urpc bench in the workspace each say what the path raised
    and where, not a Python traceback."""
    folder = workspace_with(tmp_path, 6, "emulator/interconnect/protocol.py", "amd_path",
                            'return round(topo.legs_in_cycles()["ht_hopp"])\n')
    for command in (["boot", "images/contended.lst", "--topology", "amd-2x2"],
                    ["topology", "show", "amd-2x2"]):
        done = sprat_in(folder, *command)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert "path (emulator/interconnect/protocol.py) raised KeyError: 'ht_hopp'" \
            in done.stderr, done.stderr
        assert "protocol.py:" in done.stderr.splitlines()[-1], done.stderr


# --- reading the grader, or changing what the grader runs --------------------------------

def test_an_answer_read_off_the_graders_stack_scores_nothing(tmp_path):
    """Lab 6, amd_probe_broadcast returning the `want` of the grader's frame:
    the grader computed the reference's cost before it called the student's
    path, and the path found it on the stack (15 points, no line of the path)."""
    folder = workspace_with(tmp_path, 6, "emulator/interconnect/protocol.py", "amd_path", """
        import sys
        frame = sys._getframe(1)
        while frame is not None:
            if "want" in frame.f_locals:
                return frame.f_locals["want"]
            frame = frame.f_back
        return 1
    """)
    result = grade_one(folder, "the_amd_path_adds_up_its_legs")
    assert not result["passed"], "an answer read off the grader's stack was believed"
    assert "yours 1" in result["reason"], result["reason"]


UNICAST_MULTICAST = """
        return [Route(core) for core in cores if core != root]
"""


def test_given_code_changed_outside_the_regions_fails_every_test(tmp_path):
    """Lab 8, `_multicast` (given code) rewritten as unicast and a monitor that
    never forwards: the monitor's tests run "plain multicast" from the
    student's own skb.py, so they asked for no forwarding, and
    every_core_invalidates scored its 25 points."""
    folder = workspace_with(tmp_path, 8, "userland/monitor_shootdown.S", "node", """
        shootdown_node:
            mov rdi, qword ptr [r15 + MSG + MSG_PAGE]
            cmp qword ptr [r15 + MSG + MSG_OP], OP_PREPARE
            jne 1f
            call local_map
            jmp 2f
        1:  call unmap_page
            mov r8, rax
            mov eax, SYS_INVLPG
            syscall
            mov rax, r8
        2:  mov qword ptr [r15 + ACK + ACK_STALE], rax
            mov qword ptr [r15 + ACK + ACK_COUNT], 1
            mov rdi, qword ptr [r15 + MSG + MSG_PARENT]
            call send_end
            mov rdi, rax
            lea rsi, [r15 + ACK]
            call urpc_send
            ret
    """)
    skb = folder / "kernel" / "skb.py"
    given = """        mates, others = self.packages(cores, root)
        return [Route(core) for core in mates] + \\
               [Route(members[0], tuple(members[1:])) for members in others]
"""
    text = skb.read_text()
    assert given in text, "the given _multicast is not where this test looks"
    skb.write_text(text.replace(given, UNICAST_MULTICAST.lstrip("\n")))
    result = grade_one(folder, "every_core_invalidates")
    assert not result["passed"], "a monitor that never forwards passed under a unicast _multicast"
    assert "kernel/skb.py:" in result["reason"] and "is not the given code" in result["reason"], \
        result["reason"]


def test_a_monitor_that_dawdles_under_plain_multicast_does_not_make_a_tree_fast(tmp_path):
    """Lab 8, a monitor that does its own part before forwarding (too slow for
    the NUMA-aware tree to gain 10%) and spins in the image's first two
    shootdowns, which are plain multicast's: the multicast it was compared
    with became as slow, and the test passed."""
    folder = workspace_with(tmp_path, 8, "userland/monitor_shootdown.S", "node",
                            (ROOT / "userland" / "monitor_shootdown.S").read_text()
                            .split("# LAB shootdown BEGIN node\n")[1]
                            .split("# LAB shootdown END node")[0]
                            .replace("""    call forward                      # first, so the subtree starts while we work
    call local_part
    mov qword ptr [r15 + ACK + ACK_STALE], rax
""", """    mov rax, FIRST_VALUE + 2          # the image's first two runs: plain multicast
    cmp qword ptr [r15 + MSG + MSG_EXPECTED], rax
    ja 1f
    mov ecx, 3000
2:  dec ecx
    jnz 2b
1:  call local_part
    mov r9, rax
    call forward
    mov qword ptr [r15 + ACK + ACK_STALE], r9
"""))
    result = grade_one(folder, "numa_multicast_beats_multicast")
    assert not result["passed"], "a monitor that dawdles under plain multicast made the tree pass"
    assert "unmapped the page before it had forwarded" in result["reason"], result["reason"]
