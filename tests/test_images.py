"""The demo images in images/: what each is meant to show, it shows."""

from tests.conftest import ROOT, boot_and_run

IMAGES = ROOT / "images"


def test_spawn_image_starts_a_child_on_another_core_and_they_talk():
    run = boot_and_run(IMAGES / "spawn.lst", cores=4)
    assert run.result.clean, run.result.reason
    assert run.output(0) == ["parent: spawning the child on core 2",
                             "parent: the child answered 42 from core 2"]
    assert run.output(2) == ["child: running on core 2", "child: got 21 from core 0"]
    assert [run.system.dispatchers(core) for core in range(4)] == [1, 0, 1, 0]
    assert run.machine.cores[2].stats.ipis_received == 3, "INIT, STARTUP and the inbox IPI"


def test_spawn_on_a_core_that_does_not_exist_is_refused(tmp_path):
    image = tmp_path / "far.lst"
    image.write_text("kernel /cpudriver/cpudriver.S\n"
                     "module /userland/spawn_parent.S core=0 child=1 on=7\n"
                     "module /userland/spawn_child.S nospawn\n")
    run = boot_and_run(image, cores=2)
    assert run.output(0)[1:] == ["parent: spawn failed",
                                 "cpu driver: program exited with status 1"]


def test_faults_image_stops_each_culprit_with_its_report_and_ends_cleanly():
    run = boot_and_run(IMAGES / "faults.lst", cores=4)
    assert run.result.clean, run.result.reason
    kernel_write, privileged, foreign_jump = (run.output(core)[0] for core in range(3))
    assert "#PF page fault" in kernel_write and "address 0x200000" in kernel_write
    assert "error 0x7" in kernel_write                   # present, write, user
    assert "#GP general protection" in privileged
    assert "#PF page fault at rip 0x400000" in foreign_jump
    assert "error 0x15" in foreign_jump                  # present, user, instruction fetch
    assert all("program killed" in line for line in (kernel_write, privileged, foreign_jump))
    assert run.output(3) == [
        "faulty: invoking slot 9, which holds no capability, was refused: error 104",
        "cpu driver: program exited with status 1",
        "hello from core 3 of 4"]
    assert not any("not enforced" in line for _, line in run.lines)


def test_caps_image_maps_a_frame_made_from_ram_and_unmap_really_unmaps():
    run = boot_and_run(IMAGES / "caps.lst", cores=1)
    assert run.result.clean, run.result.reason
    out = run.output(0)
    assert out[:3] == ["retype: PD, PT and frame made", "overlap refused: error 111",
                       "frame mapped, it holds 4660"]
    touch = run.system.modules[0].program.symbols["touch_again"]
    assert out[-1].startswith(f"cpu driver: user fault: #PF page fault at rip {touch:#x}")
    assert "address 0x8040000000" in out[-1]


def test_lmp_image_shares_a_frame_by_sending_its_capability():
    run = boot_and_run(IMAGES / "lmp.lst", cores=2)
    assert run.result.clean, run.result.reason
    assert run.output(0) == ["taker: mapped the frame I was given; it holds 23063",
                             "giver: sent my frame's capability over LMP"]
    assert run.output(1)[0].startswith("lmp rounds 100 cycles ")
    service = run.machine._hypercall_handler
    giver, taker = service.cspaces[(0, 0)], service.cspaces[(0, 1)]
    given = service.systems[0].lookup(taker, (1 << 16) | 255)
    assert given.obj is service.systems[0].lookup(giver, (1 << 16) | 4).obj, \
        "the taker holds a copy of the giver's frame capability"
