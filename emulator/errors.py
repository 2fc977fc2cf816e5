"""The one exception type a person is meant to read.

Anything that is the user's fault or the guest's fault (a bad image, a bad
topology file, a bad command line, an assembly error) is raised as a
SpratError whose str() is a single line saying what is wrong and where.
The `sprat` command prints that line on stderr and exits with status 2;
any other exception is a bug in sprat itself.
"""


class SpratError(Exception):
    """A user-facing error; str(error) is the whole one-line message."""
