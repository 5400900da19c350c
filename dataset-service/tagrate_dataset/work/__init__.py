"""Background work (WorkService): the durable queue, the worker that drains
it and how it yields to requests, and the datasets' state VerifyDatasets
reports."""
