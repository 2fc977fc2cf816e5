"""The CPU cost of cold assemblies of images/shootdown.lst's programs (not a test).

    .venv/bin/python tests/asm_cold_cost.py 1      # the first cold boot (worker start included)
    .venv/bin/python tests/asm_cold_cost.py 8      # eight, for the cost of each after the first

CPU seconds of this process and its children (the keystone worker), so a
busy machine does not change the number as it changes the wall clock.
"""

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cpudriver import layout                                    # noqa: E402
from emulator import assembler                                  # noqa: E402
from kernel.boot import _numeric_options, user_defines          # noqa: E402
from kernel.image import parse_image                            # noqa: E402


def main(rounds: int) -> None:
    image = parse_image(Path(__file__).resolve().parents[1] / "images" / "shootdown.lst")
    jobs = [(image.kernel.path, layout.KERNEL_BASE, layout.defines())]
    jobs += [(entry.path, layout.USER_BASE, user_defines() | _numeric_options(entry, "-"))
             for entry in image.modules]
    start = os.times()
    for _ in range(rounds):
        assembler.clear_memo()
        os.environ["SPRAT_CACHE_DIR"] = tempfile.mkdtemp()     # nothing on disk either
        for path, base, defines in jobs:
            assembler.assemble_file(path, base, defines)
    worker = getattr(assembler, "asm_worker", None)
    if worker is not None:
        worker.stop()                   # reaped, so its CPU time is counted
    end = os.times()
    cpu = sum(getattr(end, f) - getattr(start, f)
              for f in ("user", "system", "children_user", "children_system"))
    print(f"{rounds} cold assemblies of {len(jobs)} programs: {cpu * 1000:.0f} ms of CPU")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
