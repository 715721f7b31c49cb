import asyncio
import time

from airflow_provider_cfworkflows.deadlines import calls_end_by, current_deadline, seconds_left


def test_no_deadline_by_default():
    assert current_deadline() is None
    assert seconds_left() is None


def test_nested_blocks_keep_the_earlier_deadline_and_restore_the_outer_one():
    with calls_end_by(100.0):
        assert current_deadline() == 100.0
        with calls_end_by(200.0):
            assert current_deadline() == 100.0
        with calls_end_by(50.0):
            assert current_deadline() == 50.0
        with calls_end_by(None):
            assert current_deadline() == 100.0
        assert seconds_left(now=40.0) == 60.0
        assert seconds_left(now=140.0) == 0.0
    assert current_deadline() is None


async def test_each_asyncio_task_sees_its_own_deadline():
    seen: dict[str, float | None] = {}

    async def look(name: str, deadline: float) -> None:
        with calls_end_by(deadline):
            await asyncio.sleep(0)
            seen[name] = current_deadline()

    await asyncio.gather(look("a", time.time() + 10), look("b", time.time() + 20))
    assert seen["a"] is not None
    assert seen["b"] is not None
    assert seen["b"] - seen["a"] > 5
    assert current_deadline() is None
