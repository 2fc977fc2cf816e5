"""`python -m sprat`: the same as the `sprat` command.

`python -m` puts the current directory first on sys.path. In a lab
workspace that directory holds the student's copies of a few files of the
tree (emulator/interconnect/coherence.py, say), and their folders would
hide the installed packages of the same names: `import emulator` would
find a folder with one file in it. The `sprat` command never looks in the
current directory, and the lab runner loads the student's files itself,
so neither does this, unless sprat itself was found there (run from a
source tree that was never installed).
"""

import os
import sys
from pathlib import Path

import sprat

_here = os.getcwd()
if Path(sprat.__file__).resolve().parent.parent != Path(_here).resolve():
    sys.path[:] = [entry for entry in sys.path if entry not in ("", _here)]

from sprat.cli import main  # noqa: E402  (after the path is settled)

sys.exit(main())
