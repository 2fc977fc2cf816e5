"""Coursework labs: the machinery behind `sprat lab`.

A lab (labs/NN-slug/, its format in labs/FORMAT.md) asks a student to write
one mechanism of sprat. The tree's own code is the reference solution; the
part the student writes is marked in it as a region. The pieces, one idea
each:

  manifest.py   what labs there are: labs/*/lab.toml
  regions.py    the marked regions of a file: blank them (the skeleton),
                fill them, apply a recorded wrong solution (a diff)
  workspace.py  a student's folder: make one, find the one we are in, and
                make sprat read its files ahead of the tree's
  grading.py    what a lab's grade.py uses: @test, fail, boot, QUANTA
  runner.py     runs each test in a child process with a time and memory
                limit, so no submission can hang or crash the grader
  command.py    `sprat lab list | start | grade | check`
"""
