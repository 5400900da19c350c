"""A process's CPU time and resident memory, read from /proc; stopping one."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

UNSET = float("nan")


def read_proc_stat(pid: int) -> tuple[int, float]:
    """A process's parent pid and CPU seconds (user + system) from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks


def rss_mib(pid: int) -> float:
    """VmRSS of ``pid`` in MiB (NaN once the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return UNSET


def cpu_seconds(pid: int) -> float:
    try:
        return read_proc_stat(pid)[1]
    except (OSError, ValueError, IndexError):
        return UNSET


def stop_process(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL when ``proc`` has not exited after ``timeout`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
