"""Deterministic byte outputs for ``ReadableStream`` steps, served with constant memory."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

BLOCK_SIZE = 1024 * 1024


def stream_block(seed: int) -> bytes:
    """The 1 MiB block a stream of ``seed`` repeats: SHA-256 in counter mode, so every seed differs."""
    prefix = seed.to_bytes(8, "big", signed=False)
    return b"".join(
        hashlib.sha256(prefix + counter.to_bytes(8, "big")).digest() for counter in range(BLOCK_SIZE // 32)
    )


def iter_stream_bytes(size: int, seed: int, chunk_size: int = BLOCK_SIZE) -> Iterator[bytes]:
    """Yield the ``size`` bytes of a stream output, ``chunk_size`` (at most 1 MiB) at a time."""
    block = stream_block(seed)
    chunk_size = max(1, min(chunk_size, BLOCK_SIZE))
    sent = 0
    while sent < size:
        offset = sent % BLOCK_SIZE
        length = min(chunk_size, BLOCK_SIZE - offset, size - sent)
        yield block[offset : offset + length]
        sent += length


def stream_digest(size: int, seed: int) -> str:
    """SHA-256 of a whole stream output, computed chunk by chunk."""
    digest = hashlib.sha256()
    for chunk in iter_stream_bytes(size, seed):
        digest.update(chunk)
    return digest.hexdigest()
