"""What a worker needs to know about formats, and the codecs it builds from that once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from stream.formats.registry import RegistryClient, RegistryConfig
from transforms import BadRecord
from transforms.codec import JSON_DECODER, JSON_ENCODER, Decoder, Encoder
from transforms.reasons import Reason

Format = Literal["json", "avro", "protobuf"]
FORMATS: tuple[Format, ...] = ("json", "avro", "protobuf")


@dataclass(frozen=True, slots=True)
class FormatSpec:
    """Input and output formats of a run; picklable and hashable (it keys the worker's
    codec cache). ``output_schema_id``/``output_schema`` are what the start-up step
    registered for the output subject (Avro JSON or .proto text)."""

    input: Format = "json"
    output: Format = "json"
    registry: RegistryConfig | None = None
    output_schema_id: int = 0
    output_schema: str = ""

    def __post_init__(self) -> None:
        if self.input not in FORMATS or self.output not in FORMATS:
            raise ValueError(f"formats are {', '.join(FORMATS)}")
        uses_registry = self.input != "json" or self.output != "json"
        if uses_registry and self.registry is None:
            raise ValueError("Avro and Protobuf need a schema registry")

    @property
    def has_output_schema(self) -> bool:
        return bool(self.output_schema_id and self.output_schema)

    @property
    def same_bytes(self) -> bool:
        """A passthrough transform may return its input bytes as they are."""
        return self.input == self.output


JSON = FormatSpec()


@dataclass(frozen=True, slots=True)
class Codecs:
    decoder: Decoder
    encoder: Encoder
    client: RegistryClient | None


def build(spec: FormatSpec) -> Codecs:
    """The decoder and encoder of a spec (a worker calls it once per spec)."""
    client = RegistryClient(spec.registry) if spec.registry is not None else None
    decoder: Decoder = JSON_DECODER
    encoder: Encoder = JSON_ENCODER
    if spec.input != "json":
        assert client is not None
        if spec.input == "avro":
            from stream.formats import avro  # noqa: PLC0415 - only Avro runs pay for it

            decoder = avro.decoder(client)
        else:
            from stream.formats import protobuf  # noqa: PLC0415

            decoder = protobuf.decoder(client)
    if spec.output != "json" and not spec.has_output_schema:
        encoder = _NoSchema(spec.output)
    elif spec.output == "avro":
        from stream.formats.avro import AvroEncoder  # noqa: PLC0415

        encoder = AvroEncoder(spec.output_schema_id, spec.output_schema)
    elif spec.output == "protobuf":
        from stream.formats.protobuf import ProtobufEncoder  # noqa: PLC0415

        encoder = ProtobufEncoder(spec.output_schema_id, spec.output_schema)
    return Codecs(decoder, encoder, client)


class _NoSchema:
    """Output format without a registered schema: only a passthrough (its input's own
    bytes) can be written; anything else is refused per record."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt

    def encode_batch(self, items: list[Any]) -> list[bytes | BadRecord]:
        problem = BadRecord(Reason.ENCODE_ERROR, f"no registered {self.fmt} output schema")
        return [problem for _ in items]
