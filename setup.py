"""Build the cost model's optional C hit path; everything else is in pyproject.toml.

emulator/_hitpath.c makes the cost model faster and changes nothing it
computes (emulator/hitpath.py). `optional=True`: where it cannot be built
(no C compiler, no Python headers) the install goes on without it and sprat
runs the pure Python path. An editable install (`pip install -e .`) builds it
in place, next to its source.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("emulator._hitpath", sources=["emulator/_hitpath.c"], optional=True)])
