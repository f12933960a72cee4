"""Handing the GIL over during long encodings (rigatoni_s3._gil), with a fake clock."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest

from rigatoni_s3 import ChangeEvent, Compression, KeyGenerationStrategy, SerializationFormat
from rigatoni_s3 import _gil as gil_module
from rigatoni_s3._encoder import Encoder
from rigatoni_s3._gil import CHECK_EVERY, HAND_OVER_AFTER
from rigatoni_s3.compression import codec_for
from rigatoni_s3.formats import serializer_for
from rigatoni_s3.formats._envelope import ENVELOPE_COLUMNS
from rigatoni_s3.formats._json import DUMPS_CHUNK
from tests.helpers import ALL_FORMATS, BASE_TIME

JSON, PARQUET = SerializationFormat.JSON, SerializationFormat.PARQUET


def _encoder_and_large_batch(fmt: SerializationFormat) -> tuple[Encoder, list[ChangeEvent]]:
    encoder = Encoder(
        serializer_for(fmt, Compression.NONE),
        codec_for(Compression.NONE),
        KeyGenerationStrategy.FLAT,
    )
    batch = [
        ChangeEvent("insert", "shop", "users", {"_id": n}, {"_id": n}, None, BASE_TIME)
        for n in range(2 * DUMPS_CHUNK)
    ]
    return encoder, batch


def _fake_clock(monkeypatch: pytest.MonkeyPatch, step: float) -> list[float]:
    """Gives the encoders a clock that moves ``step`` per reading; returns their sleeps.

    Only the encoders' view of the time module changes: other threads keep the real one.
    """
    sleeps: list[float] = []
    readings = itertools.count(1.0, step)
    fake = SimpleNamespace(sleep=sleeps.append, perf_counter=lambda: next(readings))
    monkeypatch.setattr(gil_module, "time", fake)
    return sleeps


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_slow_encoding_hands_the_gil_over_regularly(
    fmt: SerializationFormat, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When every look at the clock finds HAND_OVER_AFTER gone, both steps hand the GIL
    over every CHECK_EVERY events (and per orjson call, per Parquet column)."""
    sleeps = _fake_clock(monkeypatch, 2 * HAND_OVER_AFTER)
    encoder, batch = _encoder_and_large_batch(fmt)
    (part,) = encoder.prepare(batch, BASE_TIME).partitions.values()
    assert len(sleeps) >= 2 * len(batch) // CHECK_EVERY  # reading the events, then encoding
    assert set(sleeps) == {0}
    sleeps.clear()
    encoder.encode(part.rows, 0)
    if fmt is not JSON:  # JSON Lines joins its rows in one short C call
        assert len(sleeps) >= (
            len(ENVELOPE_COLUMNS) if fmt is PARQUET else len(batch) // CHECK_EVERY
        )


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_fast_encoding_keeps_the_gil(
    fmt: SerializationFormat, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hand-over sleeps (about 60 µs on Linux), so work that takes less than
    HAND_OVER_AFTER in all is never cut: with a clock that barely moves, nothing sleeps."""
    sleeps = _fake_clock(monkeypatch, HAND_OVER_AFTER / 10_000)
    encoder, batch = _encoder_and_large_batch(fmt)
    (part,) = encoder.prepare(batch, BASE_TIME).partitions.values()
    encoder.encode(part.rows, 0)
    assert sleeps == []
