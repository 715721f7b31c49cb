"""Write step outputs to object storage without ever leaving a partial object at the target.

The bytes go to a temporary object next to the target (``<name>.<uuid>.partial``), which is moved
into place only once every byte arrived and the count matched. On any failure the temporary object
is discarded, so the target either holds the complete output or is untouched.

- ``file://`` (and other stores with real directories): parent directories are created; the move is
  a ``rename(2)`` within one directory, which is atomic.
- Object stores (``s3://``, R2 through ``s3://``, GCS, Azure): the upload is a multipart upload that
  is aborted on failure (nothing becomes visible), and the move is a server-side copy, which makes the
  target appear whole or not at all, followed by a delete of the temporary object. No directories or
  buckets are created: a missing bucket is an error, not something to create implicitly.

Memory stays at a few 8 MiB blocks whatever the size. Writing and SHA-256 hashing run in two threads
(both release the GIL), overlapping with receiving the next block.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import ObjectStoragePath
from airflow.sdk.io import has_fs
from fsspec.implementations.local import LocalFileSystem

from airflow_provider_cfworkflows.exceptions import CloudflareWorkflowsConfigurationError

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

log = logging.getLogger(__name__)

# Bytes per write, and the multipart part size of object stores. All parts but the last have exactly
# this size: Cloudflare R2 rejects multipart uploads with parts of different sizes. S3 parts must be
# >= 5 MiB; 8 MiB keeps memory low (about 3 blocks in flight) and allows objects up to 80 GiB.
WRITE_BLOCK_SIZE = 8 * 1024 * 1024
PARTIAL_SUFFIX = ".partial"
# Flat object stores: "directories" are key prefixes, and fsspec's makedirs would create a missing bucket.
OBJECT_STORE_PROTOCOLS = frozenset({"s3", "s3a", "s3n", "gs", "gcs", "abfs", "abfss", "az", "adl", "oss"})
LOCAL_PROTOCOLS = frozenset({"file", "local"})


@dataclass(frozen=True)
class WrittenObject:
    """
    What landed at the target.

    :param path: the target as a string (``s3://conn@bucket/key``, ``file:///dir/name``).
    :param size_bytes: number of bytes written.
    :param sha256: hex SHA-256 of the bytes written.
    """

    path: str
    size_bytes: int
    sha256: str


def to_object_storage_path(value: Any, what: str = "output_path") -> ObjectStoragePath:
    """
    An :class:`~airflow.sdk.ObjectStoragePath` for a URL string or path (built at run time only).

    :param value: ``s3://conn_id@bucket/key``, ``file:///abs/path``, an absolute local path, a
        :class:`os.PathLike`, or an ``ObjectStoragePath``.
    :param what: the parameter name for error messages.
    """
    if isinstance(value, ObjectStoragePath):
        path = value
    elif isinstance(value, str | os.PathLike):
        text = os.fspath(value).strip()
        if not text:
            raise CloudflareWorkflowsConfigurationError(f"{what} is empty (did its template render to ''?).")
        if text.endswith("/"):  # ObjectStoragePath drops a trailing slash: check the text
            raise CloudflareWorkflowsConfigurationError(
                f"{what} must name an object, not a directory or bucket: {text!r}."
            )
        path = ObjectStoragePath(text)
    else:
        raise CloudflareWorkflowsConfigurationError(
            f"{what} must be a URL string such as 's3://aws_conn@bucket/key.json' or 'file:///tmp/out.bin', "
            f"or an ObjectStoragePath; got {type(value).__name__}: {value!r}."
        )
    if not path.name or str(path).endswith("/"):
        raise CloudflareWorkflowsConfigurationError(
            f"{what} must name an object, not a directory or bucket: {str(path)!r}."
        )
    return path


def checked_output_target(value: Any, what: str = "output_path") -> ObjectStoragePath:
    """
    :func:`to_object_storage_path`, plus what can be checked before anything is fetched or written,
    without network calls: a scheme Airflow has a filesystem for (``file``, and those of the installed
    providers, e.g. ``s3`` from the Amazon provider), a bucket for object stores (``ObjectStoragePath``
    refuses a URL without one), and on a local filesystem a target that is not a directory and whose
    nearest existing parent is one.

    A bucket's existence is not checked: that needs a call to the store and permissions a writer may
    not have (a missing bucket fails the write, which then leaves nothing behind).

    :raises CloudflareWorkflowsConfigurationError: what is wrong and what is expected.
    """
    try:
        target = to_object_storage_path(value, what)
    except ValueError as error:  # an unknown scheme, no bucket (not CloudflareWorkflowsConfigurationError)
        raise CloudflareWorkflowsConfigurationError(
            f"{what} {value!r} cannot be used: {error}. Use file:///..., s3://<aws_conn_id>@<bucket>/<key> "
            "(R2 too), or another scheme of an installed provider."
        ) from None
    scheme = target.protocol or "file"
    if not has_fs(scheme):
        raise CloudflareWorkflowsConfigurationError(
            f"{what} {str(target)!r} uses {scheme}://, for which Airflow has no filesystem here: install the "
            "provider that brings it (s3:// comes with apache-airflow-providers-amazon), or use file:// "
            "or s3://."
        )
    if scheme in LOCAL_PROTOCOLS:
        _check_local_target(Path(target.path), what)
    return target


def _check_local_target(path: Path, what: str) -> None:
    if path.is_dir():
        raise CloudflareWorkflowsConfigurationError(
            f"{what} {str(path)!r} is an existing directory; give the path of a file in it."
        )
    parent = next((parent for parent in path.parents if parent.exists()), None)
    if parent is not None and not parent.is_dir():
        raise CloudflareWorkflowsConfigurationError(
            f"{what} {str(path)!r} cannot be created: {str(parent)!r} is a file, not a directory."
        )


def write_object(
    target: ObjectStoragePath,
    chunks: Iterable[bytes],
    *,
    expected_size: int | None = None,
    block_size: int = WRITE_BLOCK_SIZE,
) -> WrittenObject:
    """
    Stream ``chunks`` to ``target`` atomically, holding at most a few blocks in memory.

    :param target: where the object must end up (an existing object is replaced).
    :param chunks: the bytes, in order; an exception raised while iterating aborts the write.
    :param expected_size: the announced size (``Content-Length``); a different count aborts the write.
    :param block_size: bytes per write and per multipart part.
    :raises OutputSizeMismatchError: fewer or more bytes than ``expected_size`` arrived.
    """
    fs = target.fs
    final = target.path
    if target.protocol not in OBJECT_STORE_PROTOCOLS:
        if fs.isdir(final):
            raise CloudflareWorkflowsConfigurationError(
                f"output_path {str(target)!r} is an existing directory; give the path of a file in it."
            )
        fs.makedirs(target.parent.path, exist_ok=True)
    temporary = f"{final}.{uuid.uuid4().hex}{PARTIAL_SUFFIX}"
    digest = hashlib.sha256()
    size = 0
    handle = fs.open(temporary, "wb", block_size=block_size)
    workers = (_Worker(handle.write, "cfwf-output-write"), _Worker(digest.update, "cfwf-output-sha256"))
    try:
        for block in fixed_size_blocks(chunks, block_size):
            for worker in workers:
                worker.put(block)
            size += len(block)
        for worker in workers:
            worker.finish()
        if expected_size is not None and size != expected_size:
            raise OutputSizeMismatchError(
                f"Received {size} bytes but the response announced {expected_size} (Content-Length)."
            )
    except BaseException:
        for worker in workers:
            worker.stop()
        _abandon(handle)
        _remove_quietly(fs, temporary)
        raise
    try:
        handle.close()
        _move_into_place(fs, temporary, final)
    except BaseException:
        _remove_quietly(fs, temporary)
        raise
    _report_lineage(target)
    return WrittenObject(path=str(target), size_bytes=size, sha256=digest.hexdigest())


class OutputSizeMismatchError(OSError):
    """The byte count differs from the announced ``Content-Length`` (the transfer was cut short)."""


def fixed_size_blocks(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Re-cut ``chunks`` into blocks of exactly ``size`` bytes (the last one may be shorter)."""
    buffer = bytearray()
    for chunk in chunks:
        if not buffer and len(chunk) == size:
            yield chunk  # the usual case when reads are already block-sized: no copy
            continue
        buffer += chunk
        while len(buffer) >= size:
            with memoryview(buffer) as view:  # one copy per block, no intermediate bytearray
                block = bytes(view[:size])
            del buffer[:size]
            yield block
    if buffer:
        yield bytes(buffer)


class _Worker:
    """
    Feeds blocks to ``consume`` in a thread: writing and hashing release the GIL, so they overlap with
    each other and with receiving the next block.

    At most ``depth`` blocks wait in the queue. An error of ``consume`` is re-raised by the next
    ``put`` or by ``finish``; after an error the thread keeps draining, so the producer never blocks.
    """

    def __init__(self, consume: Callable[[bytes], Any], name: str, depth: int = 1) -> None:
        self._consume = consume
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (block := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._consume(block)
                except BaseException as error:
                    self._error = error

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, block: bytes) -> None:
        self._raise_error()
        self._queue.put(block)

    def finish(self) -> None:
        """Wait until every block is consumed; raise the first error."""
        self.stop()
        self._raise_error()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


def _abandon(handle: Any) -> None:
    """Close a half-written file without committing it (``close()`` alone would upload the partial data)."""
    discard = getattr(handle, "discard", None)
    if callable(discard):
        try:
            discard()  # s3fs: aborts the multipart upload; local files refuse (autocommit) and are removed
        except Exception:
            log.debug("discard() failed on %r", handle, exc_info=True)
    try:
        handle.close()
    except Exception:
        # After discard() s3fs has no buffer left to flush; close() then fails, and uploads nothing.
        log.debug("close() failed on an abandoned upload %r", handle, exc_info=True)


def _remove_quietly(fs: AbstractFileSystem, path: str) -> None:
    # No exists() first: on S3 it may need the ListBucket permission; deleting a missing key is a no-op.
    try:
        fs.rm_file(path)
    except FileNotFoundError:
        pass
    except Exception:
        log.warning("Could not delete the temporary object %s; delete it by hand.", path, exc_info=True)


def _move_into_place(fs: AbstractFileSystem, temporary: str, final: str) -> None:
    if isinstance(fs, LocalFileSystem):
        fs.mv(temporary, final)  # rename(2) within one directory: atomic, replaces an existing file
        return
    # Object stores have no rename: fs.mv is copy + delete. Done in two steps so that a failed delete
    # of the temporary object (the output is already complete at `final`) only warns.
    fs.cp_file(temporary, final)
    try:
        fs.rm_file(temporary)
    except Exception:
        log.warning("The output is in place, but the temporary object %s could not be deleted.", temporary)


def _report_lineage(target: ObjectStoragePath) -> None:
    """Report the written object as hook-level lineage, as ``ObjectStoragePath.open('wb')`` would."""
    try:
        from airflow.sdk.lineage import get_hook_lineage_collector

        get_hook_lineage_collector().add_output_asset(context=target, uri=str(target))
    except Exception:
        log.debug("Could not report lineage for %s", target, exc_info=True)
