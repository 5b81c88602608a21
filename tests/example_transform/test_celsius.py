"""The README's example transform, tested with the helper it shows."""

from transforms.testing import run


def test_readings_become_celsius() -> None:
    events = [
        {"sensor_id": "a", "values": [32.0, 212.0]},
        {"sensor_id": "b", "values": [-40]},
    ]
    result = run("transforms.examples.celsius:to_celsius", events)
    assert result.dead_letters == []
    assert result.outputs == [
        {"sensor_id": "a", "celsius": [0.0, 100.0], "mean": 50.0, "max": 100.0},
        {"sensor_id": "b", "celsius": [-40.0], "mean": -40.0, "max": -40.0},
    ]


def test_bad_records_are_dead_letters_with_a_reason() -> None:
    records = [b"not json", {"sensor_id": "c"}, {"sensor_id": "d", "values": [50]}]
    result = run("transforms.examples.celsius:to_celsius", records)
    assert [(d.index, d.reason) for d in result.dead_letters] == [
        (0, "invalid_json"),
        (1, "schema"),
    ]
    assert result.outputs == [{"sensor_id": "d", "celsius": [10.0], "mean": 10.0, "max": 10.0}]
