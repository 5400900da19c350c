"""Write transactions of one process take turns on the process's own lock
before SQLite's (tagrate_common.database): concurrent writers queue and each
starts the moment the last one committed, instead of polling SQLite's busy
handler (sleeps of up to 100 ms, the database idle meanwhile, and a
"database is locked" failure once its timeout runs out)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import text

from tagrate_common.database import Database, create_db_engine


def test_concurrent_writers_of_one_process_queue_instead_of_timing_out(tmp_path: Path) -> None:
    # A busy timeout far shorter than the queue: SQLite's own waiting would
    # give up ("database is locked") for most of these writers.
    engine = create_db_engine(f"sqlite:///{tmp_path / 'w.db'}", sqlite_busy_timeout_seconds=0.05)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE counter (n INTEGER NOT NULL)"))
        conn.execute(text("INSERT INTO counter VALUES (0)"))
    db = Database(engine)
    inside = threading.Semaphore(1)
    overlapped = []

    def add_one(_: int) -> None:
        def work(session) -> None:
            if not inside.acquire(blocking=False):
                overlapped.append(True)
            session.execute(text("UPDATE counter SET n = n + 1"))
            time.sleep(0.02)  # holds the write lock a while
            inside.release()

        db.write(work)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(add_one, range(40)))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT n FROM counter")).scalar_one() == 40
    # Every writer got through (SQLite's 50 ms busy timeout alone would have
    # failed most with "database is locked") and none overlapped another.
    assert not overlapped
    engine.dispose()
