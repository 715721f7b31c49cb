"""Atomic writes of step outputs: local files, and S3 (moto's server, reached like R2 with endpoint_url)."""

from __future__ import annotations

import hashlib
import os
import random
import re
import subprocess
import sys
import time

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_cfworkflows import output_storage
from airflow_provider_cfworkflows.exceptions import CloudflareWorkflowsConfigurationError
from airflow_provider_cfworkflows.output_storage import (
    PARTIAL_SUFFIX,
    PIPELINE_BUFFERS,
    WRITE_BLOCK_SIZE,
    ChunksReader,
    OutputSizeMismatchError,
    owner_tag_for,
    remove_stale_temporaries,
    to_object_storage_path,
    write_object,
)
from tests.helpers import s3_keys

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


# --- temporaries left by killed tries ------------------------------------------------------------

TAG = owner_tag_for(dag_id="exports", run_id="manual__2026-11-28", task_id="fetch", map_index=-1)
OTHER_TAG = owner_tag_for(dag_id="exports", run_id="manual__2026-11-28", task_id="fetch", map_index=0)

# A write that a `kill -9` interrupts: it streams `MIB` bytes per chunk until its stdin closes.
KILLED_WRITER = """
import sys
from airflow.sdk import ObjectStoragePath
from airflow_provider_cfworkflows.output_storage import write_object

def chunks():
    for _ in range(int(sys.argv[3])):
        yield b"x" * 1024 * 1024
    sys.stdin.read()  # blocks until killed

write_object(ObjectStoragePath(sys.argv[1]), chunks(), owner_tag=sys.argv[2])
"""


def wait_for(condition, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return result


def kill_writer_midway(url: str, owner_tag: str, mib: int, started) -> None:
    """Run a write in a child process and SIGKILL it once ``started()`` sees its temporary."""
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, url, owner_tag, str(mib)], stdin=subprocess.PIPE
    )
    try:
        wait_for(lambda: started() or child.poll() is not None, "the child's temporary")
        assert child.poll() is None, f"the writer ended early with {child.returncode}"
    finally:
        child.kill()
        child.wait(timeout=30)


def test_owner_tag_is_short_stable_and_distinct():
    assert owner_tag_for(dag_id="exports", run_id="manual__2026-11-28", task_id="fetch") == TAG
    assert re.fullmatch("[0-9a-f]{12}", TAG)
    assert TAG != OTHER_TAG
    assert owner_tag_for(dag_id="a.b", run_id="c", task_id="d") != owner_tag_for(
        dag_id="a", run_id="b.c", task_id="d"
    )


@pytest.mark.parametrize("bad", ["", "UPPER", "a.b", "../x", "a" * 33])
def test_bad_owner_tag_is_refused_before_anything_is_written(tmp_path, bad):
    target = ObjectStoragePath(f"file://{tmp_path}/out.bin")

    with pytest.raises(CloudflareWorkflowsConfigurationError, match=r"owner_tag must be 1-32 characters"):
        write_object(target, [b"data"], owner_tag=bad)
    with pytest.raises(CloudflareWorkflowsConfigurationError, match=r"owner_tag must be 1-32 characters"):
        remove_stale_temporaries(target, bad)
    assert os.listdir(tmp_path) == []


def test_temporary_is_named_after_the_owner(tmp_path, monkeypatch):
    seen: list[str] = []
    real_move = output_storage._move_into_place

    def spy(target, fs, temporary, size):
        seen.append(os.path.basename(temporary))
        real_move(target, fs, temporary, size)

    monkeypatch.setattr(output_storage, "_move_into_place", spy)

    write_object(ObjectStoragePath(f"file://{tmp_path}/out.bin"), [b"data"], owner_tag=TAG)

    assert re.fullmatch(rf"out\.bin\.{TAG}\.[0-9a-f]{{32}}\.partial", seen[0])
    assert os.listdir(tmp_path) == ["out.bin"]


@pytest.mark.integration
def test_local_temporary_of_a_killed_try_is_removed_by_the_next(tmp_path):
    folder = tmp_path / "exports"
    url = f"file://{folder}/out.bin"

    def partials() -> list[str]:
        return sorted(name for name in os.listdir(folder) if name.endswith(PARTIAL_SUFFIX))

    def first_block_written() -> bool:
        return folder.exists() and any((folder / name).stat().st_size > 0 for name in partials())

    kill_writer_midway(url, TAG, 12, first_block_written)
    [orphan] = partials()
    # What must survive: the target, another task's temporary, and look-alikes that are not temporaries.
    (folder / "out.bin").write_bytes(b"previous complete output")
    others = [
        f"out.bin.{OTHER_TAG}.{'a' * 32}.partial",
        f"other.bin.{TAG}.{'b' * 32}.partial",
        f"out.bin.{TAG}.not-a-uuid.partial",
    ]
    for name in others:
        (folder / name).write_bytes(b"keep")

    removed = remove_stale_temporaries(ObjectStoragePath(url), TAG)

    assert [os.path.basename(path) for path in removed] == [orphan]
    assert sorted(os.listdir(folder)) == sorted(["out.bin", *others])
    written = write_object(ObjectStoragePath(url), [b"new"], owner_tag=TAG)
    assert (folder / "out.bin").read_bytes() == b"new"
    assert written.size_bytes == 3


def test_nothing_to_remove_when_the_folder_does_not_exist(tmp_path):
    assert remove_stale_temporaries(ObjectStoragePath(f"file://{tmp_path}/missing/out.bin"), TAG) == []


@pytest.mark.integration
def test_s3_upload_of_a_killed_try_is_aborted_by_the_next(s3_bucket):
    client, name = s3_bucket
    url = f"s3://aws_test@{name}/exports/out.bin"
    client.put_object(Bucket=name, Key="exports/out.bin", Body=b"previous complete output")

    def first_part_uploaded() -> bool:
        uploads = pending_uploads(client, name)
        return bool(uploads) and bool(
            client.list_parts(Bucket=name, Key=uploads[0]["Key"], UploadId=uploads[0]["UploadId"]).get(
                "Parts"
            )
        )

    # 12 MiB: the first 8 MiB part is uploaded, so the killed try leaves a multipart upload behind.
    kill_writer_midway(url, TAG, 12, first_part_uploaded)
    [orphan] = pending_uploads(client, name)
    assert re.fullmatch(rf"exports/out\.bin\.{TAG}\.[0-9a-f]{{32}}\.partial", orphan["Key"])
    # What must survive: another task's upload, and an upload to a look-alike key.
    kept = [
        client.create_multipart_upload(Bucket=name, Key=key)["UploadId"]
        for key in (
            f"exports/out.bin.{OTHER_TAG}.{'a' * 32}.partial",
            f"exports/other.bin.{TAG}.{'b' * 32}.partial",
        )
    ]
    # A finished temporary, as left by a kill between the copy into place and the delete.
    leftover = f"exports/out.bin.{TAG}.{'c' * 32}.partial"
    client.put_object(Bucket=name, Key=leftover, Body=b"complete temporary")

    removed = remove_stale_temporaries(ObjectStoragePath(url), TAG)

    assert sorted(upload["UploadId"] for upload in pending_uploads(client, name)) == sorted(kept)
    assert s3_keys(client, name) == ["exports/out.bin"]
    assert client.get_object(Bucket=name, Key="exports/out.bin")["Body"].read() == b"previous complete output"
    assert len(removed) == 2
    assert any(orphan["UploadId"] in path for path in removed)


def test_local_files_are_written_in_small_slices(tmp_path, monkeypatch):
    """Large write(2)s make Linux fill large page-cache folios, which cost more CPU (see _in_slices)."""
    from fsspec.implementations.local import LocalFileOpener

    real_write = LocalFileOpener.write
    sizes: list[int] = []

    def recording_write(self, data):
        sizes.append(len(data))
        return real_write(self, data)

    monkeypatch.setattr(LocalFileOpener, "write", recording_write)
    data = payload(3 * MIB + 5)

    write_object(ObjectStoragePath(f"file://{tmp_path}/out.bin"), [data], block_size=MIB)

    assert (tmp_path / "out.bin").read_bytes() == data
    assert max(sizes) == output_storage.LOCAL_WRITE_SIZE
    assert sum(sizes) == len(data)


# --- the target changing during a write ------------------------------------------------------------


def chunks_then(action, data: bytes):
    """``data`` in two chunks, running ``action`` between them (while the write is in progress)."""
    yield data[:10]
    action()
    yield data[10:]


def test_a_directory_that_appears_at_the_target_fails_the_write_and_receives_nothing(tmp_path):
    target = tmp_path / "out.bin"

    with pytest.raises(output_storage.OutputTargetChangedError, match="became a directory"):
        write_object(ObjectStoragePath(f"file://{target}"), chunks_then(target.mkdir, payload(100)))

    assert target.is_dir()
    assert list(target.iterdir()) == []  # the output was not moved into it (as shutil.move would)
    assert os.listdir(tmp_path) == ["out.bin"]  # no temporary left either


def test_a_symlink_that_appears_at_the_target_is_replaced_not_followed(tmp_path):
    target, elsewhere = tmp_path / "out" / "out.bin", tmp_path / "elsewhere"
    target.parent.mkdir()
    elsewhere.mkdir()
    data = payload(100)

    written = write_object(
        ObjectStoragePath(f"file://{target}"), chunks_then(lambda: target.symlink_to(elsewhere), data)
    )

    assert not target.is_symlink()
    assert target.read_bytes() == data
    assert written.sha256 == hashlib.sha256(data).hexdigest()
    assert list(elsewhere.iterdir()) == []  # nothing outside the output folder


def test_a_file_swapped_in_right_after_the_move_is_reported(tmp_path, monkeypatch):
    target = tmp_path / "out.bin"
    real_replace = os.replace

    def replace_then_swap(source, destination):
        real_replace(source, destination)
        (tmp_path / "other").write_bytes(b"someone else's")
        real_replace(tmp_path / "other", destination)

    monkeypatch.setattr(output_storage.os, "replace", replace_then_swap)

    with pytest.raises(output_storage.OutputTargetChangedError, match="replaced by something else"):
        write_object(ObjectStoragePath(f"file://{target}"), [payload(100)])


@pytest.mark.integration
@pytest.mark.parametrize("failing_part", [None, 2])
def test_s3_copy_into_place_in_parts_aborts_its_upload_when_a_part_fails(
    s3_bucket, monkeypatch, failing_part
):
    """s3fs leaves a failed multipart copy on the target key (~300 MiB seen): the provider aborts it."""
    import s3fs
    from botocore.exceptions import ClientError

    client, name = s3_bucket
    client.put_object(Bucket=name, Key="out.bin", Body=b"previous complete output")
    monkeypatch.setattr(output_storage, "S3_COPY_PART_SIZE", 5 * MIB)  # S3's smallest part
    real_call = s3fs.S3FileSystem.call_s3
    copied_parts: list[int] = []

    def call_s3(self, method, *args, **kwargs):
        if method == "upload_part_copy":
            copied_parts.append(kwargs["PartNumber"])
            if kwargs["PartNumber"] == failing_part:  # as the server answered once in a probe
                raise s3fs.errors.translate_boto_error(
                    ClientError({"Error": {"Code": "InvalidPart", "Message": "part lost"}}, method)
                )
        return real_call(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "call_s3", call_s3)
    data = payload(12 * MIB)  # three parts of the copy: 5, 5 and 2 MiB
    target = ObjectStoragePath(f"s3://aws_test@{name}/out.bin")

    if failing_part is None:
        write_object(target, [data], expected_size=len(data))
        assert client.get_object(Bucket=name, Key="out.bin")["Body"].read() == data
        assert copied_parts == [1, 2, 3]
    else:
        with pytest.raises(OSError, match="part lost"):
            write_object(target, [data], expected_size=len(data))
        assert client.get_object(Bucket=name, Key="out.bin")["Body"].read() == b"previous complete output"
    assert pending_uploads(client, name) == []  # neither on the target key nor on the temporary
    assert s3_keys(client, name) == ["out.bin"]
