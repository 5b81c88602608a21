"""Record formats: JSON (the default), and Avro and Protobuf through a Schema Registry.

- :mod:`~stream.formats.spec`: what a worker is told (``FormatSpec``) and the codecs it
  builds from it once;
- :mod:`~stream.formats.framing`: the Confluent wire format;
- :mod:`~stream.formats.registry`: a small synchronous registry client;
- :mod:`~stream.formats.json`, :mod:`~stream.formats.avro`,
  :mod:`~stream.formats.protobuf`: the codecs (``decode_batch`` / ``encode_batch``);
- :mod:`~stream.formats.batch`: a worker's batch through the codecs (decode, transform,
  encode), shared with ``stream try``;
- :mod:`~stream.formats.container`: Avro object container files, each record framed as a
  worker would get it (``stream try --input-format avro``);
- :mod:`~stream.formats.setup`: the start-up step that registers the output schema;
- :mod:`~stream.formats.bench`: per-record cost of each format in a worker.
"""
