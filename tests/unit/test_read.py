"""`stream read`'s lines, made without a broker: where a record is, its key, its value
decoded or escaped, and a dead letter's reason line from the headers the engine writes.
Nothing a record holds reaches the terminal raw."""

from __future__ import annotations

import pytest

from stream.cli import main
from stream.engine.routing import Router
from stream.kafka.protocols import TopicPartition
from stream.kafka.reading import TopicRecord
from stream.read import (
    dead_letter_line,
    decoded_text,
    escaped,
    json_values,
    key_text,
    quoted,
    record_lines,
)


def record(
    value: bytes | None,
    key: bytes | None = b"sensor-0007",
    headers: tuple[tuple[str, bytes], ...] = (),
) -> TopicRecord:
    return TopicRecord(2, 41, 0, key, value, headers)


def test_a_record_is_one_line_where_key_value() -> None:
    (text,) = json_values([b'{"sensor_id": "sensor-0007", "mean": 0.5}'], 2000)
    lines = record_lines("out", record(b""), text, 2000)
    assert lines == ['out[2]@41 key=sensor-0007 {"sensor_id":"sensor-0007","mean":0.5}']


def test_a_dead_letter_shows_the_reason_message_and_source_the_engine_wrote() -> None:
    router = Router(False, 1 << 20, 1 << 20)
    _, value, headers, _ = router.dead_letter(
        TopicPartition("in", 2),
        41,
        key=b"sensor-0007",
        value=b'{"id": "sensor-0007", "matrix": [[1.0]]}',
        reason="schema",
        message="missing field(s): sensor_id, values",
    )
    letter = TopicRecord(0, 3, 0, b"sensor-0007", value, tuple(headers or ()))
    (text,) = json_values([letter.value], 2000)
    assert record_lines("in.dlq", letter, text, 2000) == [
        'in.dlq[0]@3 key=sensor-0007 {"id":"sensor-0007","matrix":[[1.0]]}',
        '  reason=schema message="missing field(s): sensor_id, values" source=in[2]@41',
    ]


def test_a_cut_dead_letter_says_its_original_size() -> None:
    router = Router(False, 16, 1 << 20)  # values are cut to 16 bytes
    _, value, headers, _ = router.dead_letter(
        TopicPartition("in", 0), 7, key=b"k", value=b"x" * 100, reason="too_large", message="big"
    )
    line = dead_letter_line(tuple(headers or ()), 2000)
    assert line == '  reason=too_large message="big" source=in[0]@7 original-size=100'
    assert json_values([value], 2000) == ['(not JSON, 16 bytes) "xxxxxxxxxxxxxxxx"']


def test_other_records_have_no_second_line() -> None:
    assert dead_letter_line((("trace-id", b"abc"),), 2000) is None
    assert len(record_lines("out", record(b"1", headers=(("trace-id", b"a"),)), "1", 99)) == 1


def test_values_that_do_not_decode_are_said_so_and_escaped() -> None:
    texts = json_values([b"not json", b"\xff\xfe{", None, b""], 2000)
    assert texts == [
        '(not JSON, 8 bytes) "not json"',
        '(not UTF-8 text, 3 bytes) "\\xff\\xfe{"',
        "(no value)",
        '(not JSON, 0 bytes) ""',
    ]


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[2J\x1b[H", "\\x1b[2J\\x1b[H"),  # clear the screen
        ("a\nb\rc\td", "a\\nb\\rc\\td"),  # a second line, a carriage return
        ("\x9b31m", "\\x9b31m"),  # the one-byte CSI
        ("\u202eevil", "\\u202eevil"),  # right-to-left override
        ('say "hi" \\', 'say \\"hi\\" \\\\'),
        ("héllo wörld ✓", "héllo wörld ✓"),  # printable text stays as it is
    ],
)
def test_nothing_reaches_the_terminal_raw(raw: str, shown: str) -> None:
    assert escaped(raw) == (shown, False)


def test_a_registry_framed_value_read_as_json_says_which_option_decodes_it() -> None:
    (text,) = json_values([b"\x00\x00\x00\x00\x07\x02ab"], 2000)
    assert text == (
        "(not JSON: the Schema Registry's wire format, schema id 7; --input-format avro or "
        'protobuf decodes it, 8 bytes) "\\x00\\x00\\x00\\x00\\x07\\x02ab"'
    )


def test_hostile_keys_headers_and_json_strings_are_escaped() -> None:
    assert key_text(b"sensor-0007") == "sensor-0007"
    assert key_text(None) == "null"
    assert key_text(b"null") == '"null"'  # not the same as no key
    assert key_text(b"a b\x1b[31m") == '"a b\\x1b[31m"'
    assert key_text(b"\xff") == '"\\xff"'
    line = dead_letter_line(
        (
            ("stream.error.reason", b"x\x1b]0;pwned\x07"),
            ("stream.error.message", b"line\nbreak"),
            ("stream.error.\x1bname", b"v"),
        ),
        2000,
    )
    assert line is not None
    assert not {"\x1b", "\x07", "\n"} & set(line)
    assert 'reason="x\\x1b]0;pwned\\x07" message="line\\nbreak"' in line
    # JSON escapes its own control characters; what it leaves (C1, bidi) is escaped here.
    assert decoded_text({"s": "\x1b[1m\x9b\u202e"}, 2000) == '{"s":"\\u001b[1m\\x9b\\u202e"}'


def test_a_long_value_is_cut_with_a_note() -> None:
    (text,) = json_values([b'{"values": [' + b",".join([b"1.5"] * 1000) + b"]}"], 100)
    assert text.startswith('{"values":[1.5,1.5,')
    assert text.endswith(" ...[cut: 4012 characters in all]")
    assert len(text.split(" ...[cut")[0]) <= 100
    assert quoted(b"\xff" * 50, 20) == '"\\xff\\xff\\xff\\xff\\xff" ...[cut: 50 bytes in all]'
    assert escaped("x" * 50, 0) == ("x" * 50, False)  # 0: no limit


def test_read_needs_a_topic_and_a_registry_for_avro(capsys: pytest.CaptureFixture[str]) -> None:
    def code(args: list[str]) -> int:
        try:
            return main(args)
        except SystemExit as exc:
            return int(exc.code or 0)

    assert code(["read"]) == 2
    assert "stream read: error: the following arguments are required: TOPIC" in (
        capsys.readouterr().err
    )
    assert code(["read", "out", "--input-format", "avro"]) == 2
    assert capsys.readouterr().err == (
        "stream read: error: the avro format needs --schema-registry-url\n"
    )
    assert code(["read", "out", "--isolation", "dirty"]) == 2
    assert "read_committed, read_uncommitted" in capsys.readouterr().err
