"""Atomic writes of step outputs: local files, and S3 (moto's server, reached like R2 with endpoint_url)."""

from __future__ import annotations

import hashlib
import os
import random

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_cfworkflows.exceptions import CloudflareWorkflowsConfigurationError
from airflow_provider_cfworkflows.output_storage import (
    PIPELINE_BUFFERS,
    WRITE_BLOCK_SIZE,
    ChunksReader,
    OutputSizeMismatchError,
    to_object_storage_path,
    write_object,
)
from tests.conftest import s3_keys

MIB = 1024 * 1024


class Interrupted(Exception):
    pass


def chunks_of(data: bytes, *, seed: int = 1, fail_after: int | None = None):
    """``data`` in chunks of random sizes (as a network delivers it), optionally failing midway."""
    rng = random.Random(seed)
    position = 0
    while position < len(data):
        if fail_after is not None and position >= fail_after:
            raise Interrupted("connection dropped")
        size = rng.randint(1, 300_000)
        yield data[position : position + size]
        position += size


def payload(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def read_all(reader, size: int) -> list[bytes]:
    reads = []
    buffer = bytearray(size)
    while count := reader.readinto(memoryview(buffer)):
        reads.append(bytes(buffer[:count]))
    return reads


def test_chunks_reader_fills_every_buffer_until_the_end():
    data = payload(1000)
    reads = read_all(ChunksReader(chunks_of(data)), 64)

    assert b"".join(reads) == data
    assert {len(read) for read in reads[:-1]} == {64}
    assert 0 < len(reads[-1]) <= 64
    assert read_all(ChunksReader([]), 64) == []
    assert read_all(ChunksReader([b"", b"ab", b""]), 64) == [b"ab"]
    assert read_all(ChunksReader([b"abc", bytearray(b"de"), memoryview(b"fgh")]), 3) == [
        b"abc",
        b"def",
        b"gh",
    ]


class ReadIntoBody:
    """A ReadableBody that records the buffers it was given."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.buffers: set[int] = set()

    def readinto(self, buffer: memoryview, /) -> int:
        self.buffers.add(id(buffer.obj))
        count = min(len(buffer), len(self.data))
        buffer[:count] = self.data[:count]
        self.data = self.data[count:]
        return count


def test_readinto_body_is_read_into_a_few_reused_buffers(tmp_path):
    data = payload(20 * 64 * 1024 + 5)
    body = ReadIntoBody(data)

    written = write_object(ObjectStoragePath(f"file://{tmp_path}/out.bin"), body, block_size=64 * 1024)

    assert (tmp_path / "out.bin").read_bytes() == data
    assert written.sha256 == hashlib.sha256(data).hexdigest()
    assert len(body.buffers) <= PIPELINE_BUFFERS  # 21 blocks went through at most 3 buffers


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "output_path is empty"),
        ("s3://conn@bucket/prefix/", "must name an object"),
        ("s3://bucket", "must name an object"),
        (3.5, "must be a URL string"),
        (None, "must be a URL string"),
    ],
)
def test_to_object_storage_path_rejects(value, message):
    with pytest.raises(CloudflareWorkflowsConfigurationError, match=message):
        to_object_storage_path(value)


def test_to_object_storage_path_accepts_urls_paths_and_objects(tmp_path):
    assert str(to_object_storage_path(f"file://{tmp_path}/a.json")) == f"file://{tmp_path}/a.json"
    assert to_object_storage_path(tmp_path / "b.bin").path == f"{tmp_path}/b.bin"
    existing = ObjectStoragePath(f"file://{tmp_path}/c")
    assert to_object_storage_path(existing) is existing


# --- local files ---------------------------------------------------------------------------------


def test_local_write_creates_dirs_and_reports_size_and_digest(tmp_path):
    data = payload(3 * MIB + 17)
    target = ObjectStoragePath(f"file://{tmp_path}/a/b/out.bin")

    written = write_object(target, chunks_of(data), expected_size=len(data), block_size=MIB)

    assert (tmp_path / "a/b/out.bin").read_bytes() == data
    assert written.path == f"file://{tmp_path}/a/b/out.bin"
    assert written.size_bytes == len(data)
    assert written.sha256 == hashlib.sha256(data).hexdigest()
    assert os.listdir(tmp_path / "a/b") == ["out.bin"]


def test_local_failure_keeps_the_previous_object_and_leaves_no_temporary(tmp_path):
    target_file = tmp_path / "out.bin"
    target_file.write_bytes(b"previous complete output")

    with pytest.raises(Interrupted):
        write_object(
            ObjectStoragePath(f"file://{tmp_path}/out.bin"), chunks_of(payload(MIB), fail_after=500_000)
        )

    assert target_file.read_bytes() == b"previous complete output"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_local_failure_on_a_new_object_leaves_nothing(tmp_path):
    with pytest.raises(Interrupted):
        write_object(
            ObjectStoragePath(f"file://{tmp_path}/new/out.bin"), chunks_of(payload(MIB), fail_after=1)
        )

    assert os.listdir(tmp_path / "new") == []


def test_storage_write_error_stops_the_transfer_and_leaves_nothing(tmp_path, monkeypatch):
    from fsspec.implementations.local import LocalFileOpener

    real_write = LocalFileOpener.write
    writes: list[int] = []

    def failing_write(self, data):
        writes.append(len(data))
        if len(writes) == 2:
            raise OSError(28, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(LocalFileOpener, "write", failing_write)
    received: list[int] = []

    def chunks():
        for _ in range(50):
            received.append(MIB)
            yield b"x" * MIB

    with pytest.raises(OSError, match="No space left on device"):
        write_object(ObjectStoragePath(f"file://{tmp_path}/out.bin"), chunks(), block_size=MIB)

    assert os.listdir(tmp_path) == []
    assert len(received) < 10  # the download stops soon after the storage fails


@pytest.mark.parametrize("expected", [999, 1001])
def test_size_mismatch_aborts(tmp_path, expected):
    with pytest.raises(
        OutputSizeMismatchError, match=f"Received 1000 bytes but the response announced {expected}"
    ):
        write_object(ObjectStoragePath(f"file://{tmp_path}/x"), [b"a" * 1000], expected_size=expected)

    assert os.listdir(tmp_path) == []


def test_empty_output_is_a_valid_object(tmp_path):
    written = write_object(ObjectStoragePath(f"file://{tmp_path}/empty"), [], expected_size=0)

    assert (tmp_path / "empty").read_bytes() == b""
    assert written.sha256 == hashlib.sha256(b"").hexdigest()


# --- S3 (moto server) ----------------------------------------------------------------------------


def pending_uploads(client, bucket_name):
    return client.list_multipart_uploads(Bucket=bucket_name).get("Uploads", [])


@pytest.mark.integration
def test_s3_multipart_write_moves_into_place(s3_bucket):
    client, name = s3_bucket
    data = payload(2 * WRITE_BLOCK_SIZE + 12345)  # three parts

    written = write_object(
        ObjectStoragePath(f"s3://aws_test@{name}/deep/prefix/out.bin"),
        chunks_of(data),
        expected_size=len(data),
    )

    body = client.get_object(Bucket=name, Key="deep/prefix/out.bin")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == written.sha256 == hashlib.sha256(data).hexdigest()
    assert written.path == f"s3://aws_test@{name}/deep/prefix/out.bin"
    assert s3_keys(client, name) == ["deep/prefix/out.bin"]
    assert pending_uploads(client, name) == []


@pytest.mark.integration
@pytest.mark.parametrize("fail_after", [100, WRITE_BLOCK_SIZE + 100])  # before / after the first part
def test_s3_interrupted_write_leaves_no_object_and_no_upload(s3_bucket, fail_after):
    client, name = s3_bucket
    client.put_object(Bucket=name, Key="out.bin", Body=b"previous complete output")

    with pytest.raises(Interrupted):
        write_object(
            ObjectStoragePath(f"s3://aws_test@{name}/out.bin"),
            chunks_of(payload(3 * WRITE_BLOCK_SIZE), fail_after=fail_after),
        )

    assert s3_keys(client, name) == ["out.bin"]
    assert client.get_object(Bucket=name, Key="out.bin")["Body"].read() == b"previous complete output"
    assert pending_uploads(client, name) == []  # the multipart upload was aborted, not completed


@pytest.mark.integration
def test_s3_missing_bucket_is_an_error_not_created(s3_bucket):
    client, name = s3_bucket

    with pytest.raises(FileNotFoundError, match="bucket does not exist"):
        write_object(ObjectStoragePath(f"s3://aws_test@{name}-missing/out.json"), [b"{}"])

    assert f"{name}-missing" not in [b["Name"] for b in client.list_buckets()["Buckets"]]
