"""The engine: small parts with one job each, wired together by ``runner``.

- ``runner``: lifecycle and task supervision; ``signals``: ``serve()``, signals, watchdog;
- ``stages``: the parts the settings choose (guarantee, formats, enrichment, sink);
- ``fetcher``: the fetch loop, backpressure, seek-back, cutting batches;
- ``assignment``: per-partition state and in-flight accounting;
- ``rebalance``: assign, revoke, drain, release, and rewinds;
- ``emitter``: one per partition, finished batches to delivery in input order;
- ``delivery``: the ``Delivery`` protocol and at-least-once; ``sending``: a batch to Kafka;
- ``transactions``: exactly-once, a transactional producer per partition;
- ``routing``: pure, a batch's outputs and dead letters; ``sinking``: the database stage;
- ``monitor``: lag, loop lag, the stats line, liveness and readiness.
"""

from stream.engine.runner import Engine
from stream.engine.signals import serve

__all__ = ["Engine", "serve"]
