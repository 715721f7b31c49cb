"""Write step outputs to object storage without ever leaving a partial object at the target.

The bytes go to a temporary object next to the target (``<name>[.<owner tag>].<uuid>.partial``),
which is moved into place only once every byte arrived and the count matched. On any failure the
temporary object is discarded, so the target either holds the complete output or is untouched.

- ``file://`` (and other stores with real directories): parent directories are created; the move is
  a ``rename(2)`` within one directory, which is atomic and replaces a file (a symlink itself, not its
  target) or fails, never moving the output into a directory that appeared at the target meanwhile. A
  replaced file is a new file: its mode comes from the umask, not from the file it replaced.
- Object stores (``s3://``, R2 through ``s3://``, GCS, Azure): the upload is a multipart upload that
  is aborted on failure (nothing becomes visible), and the move is a server-side copy, which makes the
  target appear whole or not at all, followed by a delete of the temporary object. On S3 a large
  object is copied in parts, as a multipart upload to the target that is aborted if a part fails. No
  directories or buckets are created: a missing bucket is an error, not something to create implicitly.

A killed process cannot clean up: the owner tag in the temporary's name (derived from the task, the
same for every try) lets the next try find and remove what earlier tries left
(:func:`remove_stale_temporaries`).

Memory stays at a few 8 MiB buffers whatever the size: the body is read straight into reused buffers,
and writing and SHA-256 hashing run in two threads (both release the GIL), overlapping with receiving
the next block.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import re
import stat
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from airflow.sdk import ObjectStoragePath
from airflow.sdk.io import has_fs
from fsspec.implementations.local import LocalFileSystem

from airflow_provider_cfworkflows.exceptions import CloudflareWorkflowsConfigurationError

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

log = logging.getLogger(__name__)

# Bytes per write, and the multipart part size of object stores. All parts but the last have exactly
# this size: Cloudflare R2 rejects multipart uploads with parts of different sizes. S3 parts must be
# >= 5 MiB; 8 MiB keeps memory low and allows objects up to 80 GiB.
WRITE_BLOCK_SIZE = 8 * 1024 * 1024
# Buffers of WRITE_BLOCK_SIZE in the pipeline: one being received, one being written and hashed, one
# ready, so that receiving never waits while the consumers keep up.
PIPELINE_BUFFERS = 3
LOCAL_WRITE_SIZE = 64 * 1024  # bytes per write(2) to a local file, see _in_slices
PARTIAL_SUFFIX = ".partial"
OWNER_TAG_LENGTH = 12
_OWNER_TAG = re.compile(r"[0-9a-z]{1,32}")
_UUID_HEX = "[0-9a-f]{32}"
# Flat object stores: "directories" are key prefixes, and fsspec's makedirs would create a missing bucket.
OBJECT_STORE_PROTOCOLS = frozenset({"s3", "s3a", "s3n", "gs", "gcs", "abfs", "abfss", "az", "adl", "oss"})
S3_PROTOCOLS = frozenset({"s3", "s3a", "s3n"})
LOCAL_PROTOCOLS = frozenset({"file", "local"})
# Larger outputs are copied into place on S3 in parts of this size, by this module: s3fs copies objects
# over 150 MiB in parts too, but leaves the multipart upload on the target key when a part fails.
S3_COPY_PART_SIZE = 128 * 1024 * 1024


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


def owner_tag_for(*, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
    """
    A short tag naming one task of one DAG run, the same for all its tries (for temporary names).

    :param dag_id: the DAG's id.
    :param run_id: the DAG run's id.
    :param task_id: the task's id.
    :param map_index: the mapped task's index (-1 when not mapped).
    """
    identity = "\x1f".join((dag_id, run_id, task_id, str(map_index)))
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()[:OWNER_TAG_LENGTH]


def remove_stale_temporaries(target: ObjectStoragePath, owner_tag: str) -> list[str]:
    """
    Remove what earlier, killed tries with ``owner_tag`` left next to ``target``.

    That is every temporary ``<name>.<owner_tag>.<uuid>.partial``: files (and, on object stores,
    objects), and on S3 also the unfinished multipart uploads to such keys. Other tasks' temporaries
    and the target itself are left alone. Call it before :func:`write_object`, never concurrently
    with a write of the same task.

    Only S3 (and S3-compatible stores such as R2) can list unfinished uploads; GCS resumable uploads
    and Azure uncommitted blocks expire by themselves after a week.

    :param target: the object the task writes.
    :param owner_tag: the task's tag (see :func:`owner_tag_for`).
    :returns: the temporary paths (and ``<key> (multipart upload <id>)``) that were removed.
    """
    _check_owner_tag(owner_tag)
    fs = target.fs
    pattern = re.compile(re.escape(f"{target.path}.{owner_tag}.") + _UUID_HEX + re.escape(PARTIAL_SUFFIX))
    removed: list[str] = []
    for path in _siblings(target, f"{target.name}.{owner_tag}."):
        if pattern.fullmatch(str(fs._strip_protocol(path))):
            _remove_quietly(fs, path)
            removed.append(path)
    if target.protocol in S3_PROTOCOLS:
        removed.extend(_abort_stale_uploads(fs, target.path, owner_tag, pattern))
    if removed:
        log.info("Removed %d temporaries left by earlier tries: %s", len(removed), ", ".join(removed))
    return removed


def _siblings(target: ObjectStoragePath, name_prefix: str) -> list[str]:
    """Paths next to ``target`` (S3: only keys starting with ``name_prefix``, listed by the server)."""
    fs = target.fs
    try:
        if target.protocol in S3_PROTOCOLS:
            return list(fs.find(target.parent.path, maxdepth=1, prefix=name_prefix))
        return list(fs.ls(target.parent.path, detail=False, refresh=True))
    except FileNotFoundError:
        return []


def _abort_stale_uploads(fs: Any, path: str, owner_tag: str, pattern: re.Pattern[str]) -> list[str]:
    bucket, _, key = path.partition("/")
    prefix = f"{key}.{owner_tag}."
    aborted: list[str] = []
    markers: dict[str, str] = {}
    while True:
        page = fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=prefix, **markers)
        for upload in page.get("Uploads", []):
            if pattern.fullmatch(f"{bucket}/{upload['Key']}"):
                fs.call_s3(
                    "abort_multipart_upload", Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
                aborted.append(f"{bucket}/{upload['Key']} (multipart upload {upload['UploadId']})")
        if not page.get("IsTruncated"):
            return aborted
        markers = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}


def _check_owner_tag(owner_tag: str) -> str:
    if not _OWNER_TAG.fullmatch(owner_tag):
        raise CloudflareWorkflowsConfigurationError(
            "owner_tag must be 1-32 characters of [0-9a-z] (see owner_tag_for); it names temporary objects."
        )
    return owner_tag


def _temporary_name(final: str, owner_tag: str | None) -> str:
    owner = "" if owner_tag is None else f"{_check_owner_tag(owner_tag)}."
    return f"{final}.{owner}{uuid.uuid4().hex}{PARTIAL_SUFFIX}"


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
    body: ReadableBody | Iterable[bytes],
    *,
    expected_size: int | None = None,
    block_size: int = WRITE_BLOCK_SIZE,
    owner_tag: str | None = None,
) -> WrittenObject:
    """
    Stream ``body`` to ``target`` atomically, holding at most a few blocks in memory.

    :param target: where the object must end up (an existing object is replaced).
    :param body: the bytes: something with ``readinto`` (read straight into reused buffers, see
        :class:`ReadableBody`), or an iterable of chunks. An exception raised while reading aborts the write.
    :param expected_size: the announced size (``Content-Length``); a different count aborts the write.
    :param block_size: bytes per write and per multipart part.
    :param owner_tag: names the temporary object ``<name>.<owner_tag>.<uuid>.partial``, so that
        :func:`remove_stale_temporaries` can find what an earlier, killed try of the same task left.
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
    temporary = _temporary_name(final, owner_tag)
    reader = body if isinstance(body, ReadableBody) else ChunksReader(body)
    digest = hashlib.sha256()
    handle = fs.open(temporary, "wb", block_size=block_size)
    try:
        write = handle.write if target.protocol in OBJECT_STORE_PROTOCOLS else _in_slices(handle.write)
        size = _pump(reader, (write, digest.update), block_size)
        if expected_size is not None and size != expected_size:
            raise OutputSizeMismatchError(
                f"Received {size} bytes but the response announced {expected_size} (Content-Length)."
            )
    except BaseException:
        _abandon(handle)
        _remove_quietly(fs, temporary)
        raise
    try:
        handle.close()
        _move_into_place(target, fs, temporary, size)
    except BaseException:
        _remove_quietly(fs, temporary)
        raise
    _report_lineage(target)
    return WrittenObject(path=str(target), size_bytes=size, sha256=digest.hexdigest())


def _in_slices(write: Callable[[memoryview], Any]) -> Callable[[memoryview], None]:
    """
    ``write`` a block to a local file in :data:`LOCAL_WRITE_SIZE` slices.

    Linux sizes page-cache folios by the write: an 8 MiB write gets large folios, and filling them
    cost 2-6 times more system CPU than 64 KiB writes on the benchmark machine (ext4, Linux 6.18, a
    VM; 0.35-0.5 s per GiB with 64 KiB writes, 0.3-3.7 s with 8 MiB ones, 1-2.3 s with 256 KiB-1 MiB).
    ``curl`` writes 16 KiB at a time.
    """

    def write_in_slices(data: memoryview) -> None:
        for offset in range(0, len(data), LOCAL_WRITE_SIZE):
            write(data[offset : offset + LOCAL_WRITE_SIZE])

    write_in_slices.__name__ = "write"
    return write_in_slices


class OutputSizeMismatchError(OSError):
    """The byte count differs from the announced ``Content-Length`` (the transfer was cut short)."""


@runtime_checkable
class ReadableBody(Protocol):
    """A byte source that fills a caller's buffer (as ``io.RawIOBase.readinto``, but completely)."""

    def readinto(self, buffer: memoryview, /) -> int:
        """Fill ``buffer``; return fewer bytes only at the end of the data, 0 after it."""
        ...


class ChunksReader:
    """
    :class:`ReadableBody` over an iterable of chunks of any sizes (one copy into the caller's buffer).

    :param chunks: the bytes, in order.
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._pending = memoryview(b"")

    def readinto(self, buffer: memoryview, /) -> int:
        filled = 0
        while filled < len(buffer):
            if not self._pending:
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._pending = memoryview(chunk).cast("B")
            count = min(len(self._pending), len(buffer) - filled)
            buffer[filled : filled + count] = self._pending[:count]
            self._pending = self._pending[count:]
            filled += count
        return filled


def _pump(reader: ReadableBody, consumers: Sequence[Callable[[memoryview], Any]], block_size: int) -> int:
    """
    Read ``reader`` block by block into a few reused buffers, and hand every block to each consumer.

    Each consumer runs in its own thread (file writes, uploads and ``hashlib`` release the GIL), so
    writing, hashing and receiving the next block overlap. A buffer goes back to the pool once every
    consumer is done with it: ``write`` (as ``io`` defines it) and ``update`` keep no reference to
    their argument. Returns the number of bytes read.
    """
    pool: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
    for _ in range(PIPELINE_BUFFERS):
        pool.put(bytearray(block_size))
    workers = [_Worker(consume) for consume in consumers]
    size = 0
    try:
        while True:
            buffer = pool.get()
            for worker in workers:
                worker.raise_error()
            with memoryview(buffer) as whole:
                count = reader.readinto(whole)
            if not count:
                break
            size += count
            block = _Block(buffer, count, users=len(workers), pool=pool)
            for worker in workers:
                worker.put(block)
        for worker in workers:
            worker.finish()
    finally:
        for worker in workers:
            worker.stop()
    return size


class _Block:
    """A filled pool buffer; it returns to the pool when its last user releases it."""

    def __init__(
        self, buffer: bytearray, length: int, *, users: int, pool: queue.SimpleQueue[bytearray]
    ) -> None:
        self.buffer = buffer
        self.length = length
        self._users = users
        self._pool = pool
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            last = self._users == 0
        if last:
            self._pool.put(self.buffer)


class _Worker:
    """
    Feeds blocks to ``consume`` in a thread. An error of ``consume`` is re-raised by
    :meth:`raise_error` or :meth:`finish`; after an error (or :meth:`stop`) blocks are only released,
    so the reader never waits for a buffer that will not come back.
    """

    def __init__(self, consume: Callable[[memoryview], Any]) -> None:
        self._consume = consume
        self._queue: queue.SimpleQueue[_Block | None] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._stopped = False
        name = f"cfwf-output-{getattr(consume, '__name__', 'consume')}"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (block := self._queue.get()) is not None:
            try:
                if self._error is None and not self._stopped:
                    with memoryview(block.buffer) as whole, whole[: block.length] as data:
                        self._consume(data)
            except BaseException as error:
                self._error = error
            finally:
                block.release()

    def raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, block: _Block) -> None:
        self._queue.put(block)

    def finish(self) -> None:
        """Wait until every block is consumed; raise the first error."""
        self._queue.put(None)
        self._thread.join()
        self.raise_error()

    def stop(self) -> None:
        """Skip the blocks still queued and end the thread."""
        self._stopped = True
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


def _move_into_place(target: ObjectStoragePath, fs: AbstractFileSystem, temporary: str, size: int) -> None:
    final = target.path
    if isinstance(fs, LocalFileSystem):
        _replace_local_file(temporary, final)
        return
    # Object stores have no rename: fs.mv is copy + delete. Done in two steps so that a failed delete
    # of the temporary object (the output is already complete at `final`) only warns.
    if target.protocol in S3_PROTOCOLS and size > S3_COPY_PART_SIZE:
        _copy_s3_in_parts(fs, temporary, final, size)
    else:
        fs.cp_file(temporary, final)
    try:
        fs.rm_file(temporary)
    except Exception:
        log.warning("The output is in place, but the temporary object %s could not be deleted.", temporary)


class OutputTargetChangedError(OSError):
    """The target changed while the output was written (a directory or another file appeared there)."""


def _replace_local_file(temporary: str, final: str) -> None:
    """
    Rename the temporary file to ``final`` (``rename(2)`` within one directory: atomic): it replaces a
    file, or a symlink itself (never what the link points to), and fails on a directory, where
    ``shutil.move`` (fsspec's ``mv``) would move the file *into* it. Then check that ``final`` is the
    file written.

    :raises OutputTargetChangedError: a directory appeared at ``final``, or something replaced the file.
    """
    written = os.stat(temporary)
    try:
        os.replace(temporary, final)
    except IsADirectoryError:
        raise OutputTargetChangedError(
            f"{final} became a directory while the output was written; the output was not put there"
        ) from None
    landed = os.lstat(final)
    if not stat.S_ISREG(landed.st_mode) or (landed.st_dev, landed.st_ino) != (written.st_dev, written.st_ino):
        raise OutputTargetChangedError(
            f"{final} was replaced by something else right after the output was moved there"
        )


def _copy_s3_in_parts(fs: Any, temporary: str, final: str, size: int) -> None:
    """
    Copy ``temporary`` to ``final`` within S3 as a multipart upload of ``S3_COPY_PART_SIZE`` parts copied
    on the server; any failure aborts the upload, so nothing is left at ``final`` (s3fs's own copy of a
    large object leaves its upload behind).
    """
    bucket, _, key = final.partition("/")
    upload_id = fs.call_s3("create_multipart_upload", Bucket=bucket, Key=key)["UploadId"]
    try:
        parts = []
        for number, start in enumerate(range(0, size, S3_COPY_PART_SIZE), start=1):
            end = min(start + S3_COPY_PART_SIZE, size) - 1
            answer = fs.call_s3(
                "upload_part_copy",
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                CopySource=temporary,
                CopySourceRange=f"bytes={start}-{end}",
            )
            parts.append({"PartNumber": number, "ETag": answer["CopyPartResult"]["ETag"]})
        fs.call_s3(
            "complete_multipart_upload",
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},
        )
    except BaseException:
        try:
            fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id)
        except Exception:
            log.warning(
                "Could not abort the multipart upload %s to %s; abort it by hand (or let a bucket "
                "lifecycle rule for incomplete multipart uploads remove it).",
                upload_id,
                final,
                exc_info=True,
            )
        raise
    finally:
        fs.invalidate_cache(final)


def _report_lineage(target: ObjectStoragePath) -> None:
    """Report the written object as hook-level lineage, as ``ObjectStoragePath.open('wb')`` would."""
    try:
        from airflow.sdk.lineage import get_hook_lineage_collector

        get_hook_lineage_collector().add_output_asset(context=target, uri=str(target))
    except Exception:
        log.debug("Could not report lineage for %s", target, exc_info=True)
