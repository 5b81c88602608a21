"""The engine: small parts with one job each, wired together by ``runner``.

- ``runner``: builds the parts and runs them; ``signals``: ``serve()``, signals, watchdog;
- ``state``: stopping and the fatal error, group membership; ``tasks``: owned tasks;
- ``stages``: the parts the settings choose (formats, enrichment, sink, guarantee);
- ``fetcher``: the fetch loop, backpressure, seek-back, cutting batches;
- ``assignment``: per-partition state and in-flight accounting; ``batch``: a batch;
- ``rebalance``: assign and revoke, one ``lifecycle`` per owned partition;
- ``lifecycle``: open (fence, restore, offsets), ordered emit loop, commit, rewind, close;
- ``policy``: when to commit, pure; ``delivery``: what differs between the guarantees,
  ``at_least_once`` and ``exactly_once``; ``sending``: batches to Kafka, refusals;
- ``routing``: pure, a batch's outputs and dead letters; ``sinking``: the database stage;
- ``progress``: counts and metrics of work done; ``monitor``: lag, stats, health.
"""

from stream.engine.runner import Engine
from stream.engine.signals import serve

__all__ = ["Engine", "serve"]
