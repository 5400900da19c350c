"""Background work: the durable queue, the worker that drains it, and how it yields to requests."""
