"""Binding through the monitors, and a capability moved to another core.

A server offers a service to the monitors; a client on another core (or
the same) binds to it, sending a frame capability along; the monitors set
up a channel and move the capability (userland/monitor_bind.S). These
tests boot images with the two programs and check what each end saw and
what each core's capability system holds afterwards.
"""

import pytest

from conftest import ROOT, boot_and_run
from kernel.caps import CapType

CORES = 4


def bind_image(tmp_path, client_core, server_core, service=7, retry=1, count=3):
    lines = ["kernel /cpudriver/cpudriver.S"]
    for core in sorted({0, client_core, server_core}):
        lines.append(f"module /userland/monitor.S core={core} monitor")
        if core == client_core:
            lines.append(f"module /userland/bind_client.S core={core} service={service} "
                         f"retry={retry} count={count}")
        if core == server_core and server_core != client_core:
            lines.append(f"module /userland/bind_server.S core={core} service=7 count={count}")
    lines.append("module /userland/monitor.S monitor")
    image = tmp_path / "bind.lst"
    image.write_text("\n".join(lines) + "\n")
    return image


@pytest.mark.parametrize("client_core, server_core", [(0, 2), (3, 1), (1, 0)])
def test_a_client_binds_through_the_monitors_and_its_frame_moves(tmp_path, client_core, server_core):
    run = boot_and_run(bind_image(tmp_path, client_core, server_core), cores=CORES,
                       max_cycles=10**8)
    assert run.result.clean, run.result.reason
    client, server = run.output(client_core), run.output(server_core)
    assert f"bound to service 7 on core {server_core}: channel 1504; the frame went with it" in client
    assert "our slot for the frame is empty now: error 104" in client          # SLOT_EMPTY
    assert [line for line in client if line.startswith("asked")] == \
        ["asked 1, the server answered 10", "asked 2, the server answered 20",
         "asked 3, the server answered 30"]
    assert f"service 7: a client on core {client_core} bound, on channel 1504" in server
    frame_line = next(line for line in server if line.startswith("it sent a frame"))
    base = int(frame_line.split("physical ")[1].split(",")[0])
    # The server's core holds the frame now, as a foreign copy of the same memory ...
    service = run.machine._hypercall_handler
    server_caps = [cap for (core, _), cspace in service.cspaces.items() if core == server_core
                   for cap in cspace.root.obj.slots if cap is not None
                   and cap.type == CapType.FRAME and cap.obj.base == base]
    assert len(server_caps) == 1
    # ... and the client's core keeps its object in the monitor's record slot.
    client_caps = [cap for (core, _), cspace in service.cspaces.items() if core == client_core
                   for cap in cspace.root.obj.slots if cap is not None
                   and cap.type == CapType.FRAME and cap.obj.base == base]
    assert len(client_caps) == 1


def test_a_refused_bind_gives_the_capability_back(tmp_path):
    run = boot_and_run(bind_image(tmp_path, 3, 3, service=5, retry=0), cores=CORES,
                       max_cycles=10**8)
    assert run.result.clean, run.result.reason
    assert "bind refused: error 1; the frame is ours again" in run.output(3)
