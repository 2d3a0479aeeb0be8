"""Run the astrotf command line and SIGKILL the process at a named moment (for the kill -9 tests).

    python -m tests.kill_child MODULE:ATTRIBUTE@N astrotf-arguments...

Just before the N-th call of ``MODULE.ATTRIBUTE`` (a function, or ``Class.method``) the process
sends itself SIGKILL: no ``finally``, no ``atexit``, what a crash, the OOM killer or ``kill -9``
leave behind. The library carries no test hook; the attribute is replaced before the command runs.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys


def arm(spec: str) -> None:
    """Replace the attribute named by ``spec`` (``module:Class.name@N``) with a killing wrapper."""
    target, _, count = spec.partition("@")
    module_name, attribute = target.split(":")
    owner = importlib.import_module(module_name)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, name)
    calls = [0]

    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] >= int(count or 1):
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)


if __name__ == "__main__":
    arm(sys.argv[1])
    from astrotf.cli import main

    main(sys.argv[2:], prog_name="astrotf")
