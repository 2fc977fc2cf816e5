"""The exception types a person is meant to read.

Anything that is the user's fault or the guest's fault (a bad image, a bad
topology file, a bad command line, an assembly error) is raised as a
SpratError whose str() is a single line saying what is wrong and where.
The `sprat` command prints that line on stderr and exits with its
`exit_status`: 2 for a SpratError; 1 for an OutputError, a file sprat could
not write (a full disk, an I/O error) although the user asked for nothing
wrong, and for a MachineFailure, a run that failed inside the machine. Any other exception is a bug in sprat itself.
"""


class SpratError(Exception):
    """A user-facing error; str(error) is the whole one-line message."""
    exit_status = 2


class OutputError(SpratError):
    """An output file could not be written: one line, exit status 1."""
    exit_status = 1


class MachineFailure(SpratError):
    """A run failed inside the machine (a bench's program did not finish):
    one line, exit status 1, as for `sprat boot`."""
    exit_status = 1
