"""The benchmarks' shared harness; each benchmark (``bench/NAME.py``) imports
from here and never from another benchmark (import-linter's
``bench-benchmarks-independent`` contract).

- :mod:`.measure`: run a call at a concurrency for a number of calls
  (:func:`measure`, :class:`Stats`), keep-alive HTTP clients without
  httpx's overhead, print a table;
- :mod:`.dataset`: the 100k-image bench dataset, generated, cached and
  loaded into SQLite or PostgreSQL, and the options its benchmarks share;
- :mod:`.dataset_stack`: the dataset service and a gateway as processes;
- :mod:`.workload`: the /getuserdata requests of each scenario;
- :mod:`.tagger_stack`: the tagger and a gateway as processes;
- :mod:`.supervised_stack`: the whole stack under the real supervisor, as
  ``make run`` starts it;
- :mod:`.photos`: small real photos, distinct on demand, and multipart bodies;
- :mod:`.processes`: a process's CPU time and memory from /proc, stopping one.
"""

from .measure import KeepAliveHttp, KeepAlivePool, Stats, measure, median, print_table

__all__ = ["KeepAliveHttp", "KeepAlivePool", "Stats", "measure", "median", "print_table"]
