"""Windowed aggregation's pure core: window specs, vectorised partial aggregates, one
partition's window state with its changelog records, and the output value of a closed
window. numpy and orjson only; no I/O, no asyncio, no Kafka."""
