"""The engine: small parts with one job each, wired together by ``runner``.

- ``runner``: lifecycle, task supervision, ``serve()`` and signals;
- ``fetcher``: the fetch loop, backpressure, seek-back, cutting batches;
- ``assignment``: per-partition state and in-flight accounting;
- ``rebalance``: assign, revoke, drain, release, and rewinds;
- ``emitter``: one per partition, finished batches to delivery in input order;
- ``delivery``: the ``Delivery`` protocol and at-least-once;
- ``transactions``: exactly-once, a transactional producer per partition;
- ``routing``: pure, a batch's outputs and dead letters;
- ``monitor``: lag, loop lag, the stats line, liveness and readiness.
"""

from stream.engine.runner import Engine, serve

__all__ = ["Engine", "serve"]
