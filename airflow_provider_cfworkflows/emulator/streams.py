"""Deterministic byte outputs for ``ReadableStream`` steps, served fast and with constant memory.

A stream of ``size`` bytes and ``seed`` is a sequence of 1 MiB blocks (the last one cut to size).
Every block is the same pseudo-random 1 MiB *base block* of the seed (SHA-256 in counter mode,
computed once per seed and cached) except its first 32 bytes, which are a SHA-256 of the seed and the
block's index. So producing a block costs one hash and one copy, not per-byte Python work, and yet a
client that repeats, drops or reorders whole blocks gets a different digest.

A *text* stream (``text=True``) is the same construction in lowercase hex: each block is the hex of
the first half of the binary block (header included), so it is ASCII (valid UTF-8) and as cheap.

Tests can reproduce any stream with :func:`iter_stream_bytes`; the emulator's control API serves
:func:`stream_digest` without holding the bytes in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from functools import lru_cache
from itertools import islice

BLOCK_SIZE = 1024 * 1024
_HEADER_SIZE = 32


@lru_cache(maxsize=8)
def _base_block(seed: int) -> bytes:
    prefix = b"cfwf-emulator-stream:" + seed.to_bytes(8, "big", signed=True)
    return b"".join(
        hashlib.sha256(prefix + counter.to_bytes(8, "big")).digest()
        for counter in range(BLOCK_SIZE // _HEADER_SIZE)
    )


@lru_cache(maxsize=8)
def _text_base_block(seed: int) -> bytes:
    return _base_block(seed)[: BLOCK_SIZE // 2].hex().encode("ascii")


def stream_block(seed: int, index: int, text: bool = False) -> bytes:
    """Block ``index`` (0-based) of every stream of ``seed``: exactly :data:`BLOCK_SIZE` bytes."""
    header = hashlib.sha256(
        b"cfwf-emulator-block:" + seed.to_bytes(8, "big", signed=True) + index.to_bytes(8, "big")
    ).digest()
    if text:
        hex_header = header.hex().encode("ascii")
        return hex_header + _text_base_block(seed)[len(hex_header) :]
    return header + _base_block(seed)[_HEADER_SIZE:]


def iter_stream_bytes(
    size: int, seed: int, chunk_size: int = BLOCK_SIZE, text: bool = False
) -> Iterator[bytes]:
    """
    Yield the ``size`` bytes of the stream of ``seed``, in chunks of at most ``chunk_size`` bytes.

    Chunks never span two blocks, so ``chunk_size`` above 1 MiB is treated as 1 MiB, and a chunk size
    that does not divide 1 MiB gives a shorter chunk at each block's end.
    """
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    chunk_size = max(1, min(chunk_size, BLOCK_SIZE))
    index, sent = 0, 0
    while sent < size:
        block = stream_block(seed, index, text)
        length = min(BLOCK_SIZE, size - sent)
        if chunk_size == BLOCK_SIZE:
            yield block if length == BLOCK_SIZE else block[:length]
        else:
            view = memoryview(block)
            for offset in range(0, length, chunk_size):
                yield bytes(view[offset : min(offset + chunk_size, length)])
        sent += length
        index += 1


def stream_digest(size: int, seed: int, text: bool = False) -> str:
    """SHA-256 (hex) of a whole stream, computed block by block."""
    digest = hashlib.sha256()
    for chunk in iter_stream_bytes(size, seed, text=text):
        digest.update(chunk)
    return digest.hexdigest()


@lru_cache(maxsize=64)
def stream_head(size: int, seed: int, text: bool, limit: int) -> bytes:
    """The first ``limit`` bytes of a stream (for previews)."""
    return b"".join(islice(iter_stream_bytes(min(size, limit), seed, text=text), 1))
