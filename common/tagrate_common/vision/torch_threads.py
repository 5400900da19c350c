"""torch's intra-op thread count, per thread.

torch runs its CPU operators on OpenMP, whose thread count belongs to the
thread that calls them: a thread takes torch's process-wide setting the first
time it runs an operator and can change its own later. Every thread that runs
torch work in a tagrate service says what it wants with
:func:`use_torch_threads`: the model's batch thread uses every configured
thread for a lone image, CPU stream threads and the request threads that
preprocess uploads use one each, so preprocessing never starts OpenMP teams
of its own that would compete with the forward passes for the cores.
"""

from __future__ import annotations

import os
import threading

import torch

_local = threading.local()


def use_torch_threads(count: int) -> None:
    """Makes the calling thread run torch operators on ``count`` threads
    (cheap when it already does). It also becomes the default for threads
    that have not run torch yet."""
    if getattr(_local, "count", None) != count:
        torch.set_num_threads(count)
        _local.count = count


_configured = 0  # set_configured_threads; 0: every core


def every_core() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_configured_threads(count: int) -> None:
    """Records the service's thread setting (0: every core): what a model
    loaded afterwards runs a forward pass on (:func:`configured_threads`)."""
    global _configured
    _configured = count


def configured_threads() -> int:
    """The thread count for one forward pass: the service's setting, or
    every core. Unlike ``torch.get_num_threads()`` it does not depend on
    which thread asks."""
    return _configured or every_core()
