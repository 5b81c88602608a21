"""Asynchronous enrichment: I/O-bound lookups on the event loop before the transform.

Modelled on Flink's Async I/O: a capacity (lookups in flight over all batches), a
timeout per attempt, retries with backoff, and results in input order (a batch in,
the batch's results out). The pieces, each with one job:

- ``cache``: a TTL-, entry- and byte-bounded cache and single-flight of lookups, pure.
- ``retry``: the backoff policy and Retry-After parsing, pure.
- ``outcome``: what one attempt and one batch produce (value types).
- ``http``: one GET through one aiohttp session with a bounded connection pool; redirects
  kept to the template's origin, messages with the template's credentials hidden.
- ``body``: an answer's body read with a bound on its bytes, decompressed ones included.
- ``user``: a user's own lookup coroutine, ``package.module:function``.
- ``stage``: the ``Enricher``, and ``enrich_then_process``, which the engine awaits per
  batch in place of ``pool.run`` when enrichment is on.

The ``--enrich-url`` template (placeholders, quoting) is :mod:`stream.url_template`,
outside this package: the options parse it too, and this package imports the options.
"""
