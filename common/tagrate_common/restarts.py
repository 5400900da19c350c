"""When ``make run``'s supervisor restarts a child that died: exponential
backoff like a process manager's, reset after a good run, and what counts
as a crash loop."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .supervisor_settings import SupervisorSettings


@dataclass(frozen=True)
class RestartPolicy:
    """When to restart a child that died: exponential backoff like a process
    manager's, and what counts as a crash loop."""

    initial: float = 0.5
    maximum: float = 30.0
    reset_after: float = 60.0
    loop_exits: int = 5
    loop_window: float = 60.0

    @classmethod
    def from_settings(cls, s: SupervisorSettings) -> RestartPolicy:
        return cls(
            s.restart_backoff_seconds,
            s.restart_backoff_max_seconds,
            s.restart_reset_seconds,
            s.crash_loop_exits,
            s.crash_loop_window_seconds,
        )


class Restarts:
    """One child's restart history under a :class:`RestartPolicy`. Times are
    ``time.monotonic()`` values passed in, so the policy is testable without
    waiting."""

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self.delay = policy.initial
        self.exits: deque[float] = deque()
        self.count = 0  # restarts so far
        self.started_at = 0.0
        self.loop_reported = False

    def started(self, now: float) -> None:
        self.started_at = now

    def exited(self, now: float) -> float:
        """Records a death; returns how long to wait before the restart."""
        p = self.policy
        if now - self.started_at >= p.reset_after:  # it ran well for a while: a fresh incident
            self.delay = p.initial
            self.exits.clear()
            self.loop_reported = False
        self.exits.append(now)
        while self.exits and now - self.exits[0] > p.loop_window:
            self.exits.popleft()
        wait = p.maximum if self.crash_looping else self.delay
        self.delay = min(self.delay * 2, p.maximum)
        self.count += 1
        return wait

    @property
    def crash_looping(self) -> bool:
        return len(self.exits) >= self.policy.loop_exits
