"""Deterministic stream outputs: sizes, chunking, reproducibility, per-block uniqueness, speed."""

from __future__ import annotations

import hashlib
import time

import pytest

from airflow_provider_cfworkflows.emulator.streams import (
    BLOCK_SIZE,
    iter_stream_bytes,
    stream_block,
    stream_digest,
)

MIB = 1024 * 1024


def test_sizes_and_chunks():
    size = 3 * MIB + 17
    chunks = list(iter_stream_bytes(size, seed=5))
    data = b"".join(chunks)
    assert len(data) == size
    assert [len(c) for c in chunks] == [MIB, MIB, MIB, 17]
    assert hashlib.sha256(data).hexdigest() == stream_digest(size, 5)
    small = list(iter_stream_bytes(size, seed=5, chunk_size=300_000))
    assert max(len(c) for c in small) == 300_000
    assert b"".join(small) == data
    assert b"".join(iter_stream_bytes(1000, 5, chunk_size=7)) == data[:1000]
    assert list(iter_stream_bytes(0, 5)) == []
    with pytest.raises(ValueError, match="size"):
        list(iter_stream_bytes(-1, 5))


def test_deterministic_and_seed_dependent():
    assert stream_digest(MIB + 1, 5) == stream_digest(MIB + 1, 5)
    assert stream_digest(1000, 5) != stream_digest(1000, 6)
    assert stream_block(5, 0) == stream_block(5, 0)
    assert len(stream_block(5, 7)) == BLOCK_SIZE


def test_blocks_differ_so_repeated_or_dropped_blocks_are_detected():
    blocks = [stream_block(9, i) for i in range(4)]
    assert len(set(blocks)) == 4
    right = hashlib.sha256(b"".join(blocks)).hexdigest()
    repeated = hashlib.sha256(b"".join([blocks[0], blocks[0], blocks[2], blocks[3]])).hexdigest()
    assert right == stream_digest(4 * MIB, 9)
    assert repeated != right


def test_generating_is_cheap():
    list(iter_stream_bytes(MIB, seed=77))  # the base block of a seed is computed once
    started = time.perf_counter()
    total = sum(len(chunk) for chunk in iter_stream_bytes(256 * MIB, seed=77))
    elapsed = time.perf_counter() - started
    assert total == 256 * MIB
    assert elapsed < 2.0, f"generating 256 MiB took {elapsed:.2f} s"
