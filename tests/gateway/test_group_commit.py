"""`GroupCommit`: concurrent items of one key run together once the key's group in flight ends;
a lone item runs at once; every item gets its own outcome; keys never mix."""

from __future__ import annotations

import asyncio

import pytest

from services.gateway.domain.group_commit import GroupCommit


class Runner:
    """A group runner that records its groups and holds each until released."""

    def __init__(self) -> None:
        self.groups: list[list[str]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.started = asyncio.Event()
        self.fail_items: set[str] = set()
        self.down = False

    async def __call__(self, items: list[str]) -> list[str | BaseException]:
        self.groups.append(list(items))
        self.started.set()
        await self.release.wait()
        if self.down:
            raise ConnectionError("the store is down")
        return [ValueError(item) if item in self.fail_items else item.upper() for item in items]


async def _until(condition: object, timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.001)


async def test_a_lone_item_runs_at_once_in_a_group_of_its_own() -> None:
    runner = Runner()
    commit: GroupCommit[str, str, str] = GroupCommit(runner, max_items=8)

    assert await commit.submit("k", "a") == "A"
    assert runner.groups == [["a"]]


async def test_items_arriving_while_a_group_runs_go_together_next_each_with_its_own_outcome() -> None:
    runner = Runner()
    runner.release.clear()
    commit: GroupCommit[str, str, str] = GroupCommit(runner, max_items=8)
    runner.fail_items = {"c"}

    first = asyncio.create_task(commit.submit("k", "a"))
    await runner.started.wait()
    later = [asyncio.create_task(commit.submit("k", item)) for item in ("b", "c", "d")]
    await _until(lambda: commit.waiting() == 3)
    runner.release.set()

    assert await first == "A"
    results = await asyncio.gather(*later, return_exceptions=True)
    assert results[0] == "B" and results[2] == "D"
    assert isinstance(results[1], ValueError) and str(results[1]) == "c"
    assert runner.groups == [["a"], ["b", "c", "d"]]
    assert commit.waiting() == 0


async def test_groups_never_exceed_max_items_and_keep_arrival_order() -> None:
    runner = Runner()
    runner.release.clear()
    commit: GroupCommit[str, str, str] = GroupCommit(runner, max_items=2)

    tasks = [asyncio.create_task(commit.submit("k", item)) for item in "abcdef"]
    await runner.started.wait()
    assert commit.waiting() == 4
    runner.release.set()

    assert await asyncio.gather(*tasks) == list("ABCDEF")
    # Submitted in one tick, before the first group started: it takes what fits.
    assert runner.groups == [["a", "b"], ["c", "d"], ["e", "f"]]


async def test_items_of_different_keys_never_share_a_group() -> None:
    runner = Runner()
    runner.release.clear()
    commit: GroupCommit[str, str, str] = GroupCommit(runner, max_items=8)

    tasks = [
        asyncio.create_task(commit.submit(key, item))
        for key, item in [("t1", "a"), ("t2", "b"), ("t1", "c"), ("t2", "d"), ("t1", "e")]
    ]
    await _until(lambda: len(runner.groups) == 2)
    runner.release.set()

    assert await asyncio.gather(*tasks) == ["A", "B", "C", "D", "E"]
    assert sorted(runner.groups) == [["a", "c", "e"], ["b", "d"]]


async def test_a_failing_group_fails_each_of_its_items_and_the_next_group_still_runs() -> None:
    runner = Runner()
    runner.release.clear()
    commit: GroupCommit[str, str, str] = GroupCommit(runner, max_items=8)

    first = asyncio.create_task(commit.submit("k", "a"))
    await runner.started.wait()
    runner.down = True
    second = [asyncio.create_task(commit.submit("k", item)) for item in ("b", "c")]
    await _until(lambda: commit.waiting() == 2)
    runner.release.set()

    with pytest.raises(ConnectionError):
        await first
    for task in second:
        with pytest.raises(ConnectionError):
            await task
    runner.down = False
    assert await commit.submit("k", "z") == "Z"  # the key is not left stuck


async def test_an_item_whose_request_went_away_before_its_group_started_is_left_out() -> None:
    runner = Runner()
    runner.release.clear()
    commit: GroupCommit[str, str, str] = GroupCommit(runner, max_items=8)

    first = asyncio.create_task(commit.submit("k", "a"))
    await runner.started.wait()
    gone = asyncio.create_task(commit.submit("k", "gone"))
    kept = asyncio.create_task(commit.submit("k", "kept"))
    await _until(lambda: commit.waiting() == 2)
    gone.cancel()
    runner.release.set()

    assert await first == "A"
    assert await kept == "KEPT"
    assert runner.groups == [["a"], ["kept"]]


async def test_under_a_backlog_a_group_lingers_until_it_is_full() -> None:
    runner = Runner()
    commit: GroupCommit[str, str, str] = GroupCommit(
        runner, max_items=3, linger_seconds=30.0, should_linger=lambda: True
    )

    first = asyncio.create_task(commit.submit("k", "a"))
    await asyncio.sleep(0.01)
    assert runner.groups == []  # lingering: the broker has a backlog
    second = asyncio.create_task(commit.submit("k", "b"))
    await asyncio.sleep(0.01)
    assert runner.groups == []
    third = asyncio.create_task(commit.submit("k", "c"))  # the group is full: it goes at once

    assert await asyncio.wait_for(asyncio.gather(first, second, third), 1.0) == ["A", "B", "C"]
    assert runner.groups == [["a", "b", "c"]]


async def test_under_a_backlog_a_group_goes_when_its_linger_is_over() -> None:
    runner = Runner()
    commit: GroupCommit[str, str, str] = GroupCommit(
        runner, max_items=8, linger_seconds=0.05, should_linger=lambda: True
    )
    loop = asyncio.get_running_loop()

    started = loop.time()
    assert await commit.submit("k", "a") == "A"

    assert 0.04 <= loop.time() - started < 1.0
    assert runner.groups == [["a"]]


async def test_without_a_backlog_nothing_lingers() -> None:
    runner = Runner()
    commit: GroupCommit[str, str, str] = GroupCommit(
        runner, max_items=8, linger_seconds=30.0, should_linger=lambda: False
    )

    assert await asyncio.wait_for(commit.submit("k", "a"), 1.0) == "A"
