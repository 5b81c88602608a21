"""Record formats: JSON (the default), and Avro and Protobuf through a Schema Registry.

- :mod:`~stream.formats.spec`: what a worker is told (``FormatSpec``) and the codecs it
  builds from it once (JSON's codec is :mod:`transforms.codec`, and the batch through
  any codec is :func:`transforms.batch.run_batch`);
- :mod:`~stream.formats.framing`: the Confluent wire format;
- :mod:`~stream.formats.registry`: a small synchronous registry client;
- :mod:`~stream.formats.codec`: the decode loop the registry formats share;
- :mod:`~stream.formats.avro`, :mod:`~stream.formats.protobuf`: their codecs
  (``decode_batch`` / ``encode_batch``);
- :mod:`~stream.formats.proto_json`: Protobuf messages as plain values (maps, recursive
  messages, well-known types as protobuf's JSON mapping writes them);
- :mod:`~stream.formats.container`: Avro object container files, each record framed as a
  worker would get it (``stream try --input-format avro``);
- :mod:`~stream.formats.setup`: the start-up step that registers the output schema.
"""
