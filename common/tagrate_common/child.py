"""``python -m tagrate_common.child PARENT_PID MODULE``: runs ``python -m
MODULE`` in this process, first arranging to get SIGTERM when the process
``PARENT_PID`` (the ``make run`` supervisor) dies.

The supervisor used to do this in a ``preexec_fn``, but that makes Popen
fork the whole supervisor (a plain fork runs gRPC's fork handlers, which can
hang for good once the supervisor has made gRPC health checks). Without a
``preexec_fn`` Popen can vfork/exec, and this module does the one thing the
child needs before the service starts.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import runpy
import signal
import sys

PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> None:
    parent, module = int(argv[0]), argv[1]
    with contextlib.suppress(OSError, AttributeError):  # not Linux/glibc: children outlive a killed supervisor
        # PDEATHSIG follows the thread that spawned this process: the
        # supervisor spawns every child from its main thread, which lives
        # until the group has stopped.
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        sys.exit(1)
    sys.argv = [module]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
