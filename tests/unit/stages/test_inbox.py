"""Inbox: records handed by the fetch loop, taken by one stage's agent in batches."""

from __future__ import annotations

import asyncio

from app.stages.inbox import Inbox


async def test_records_are_taken_in_order_all_at_once_when_the_first_arrives():
    inbox = Inbox(app=None)
    taking = asyncio.ensure_future(inbox.take())
    await asyncio.sleep(0)
    assert not taking.done()
    inbox.put("a")
    inbox.put("b")
    assert await asyncio.wait_for(taking, 1) == ["a", "b"]
    assert len(inbox) == 0


async def test_a_full_inbox_has_room_again_once_its_records_are_taken():
    inbox = Inbox(app=None, maxsize=2)
    assert inbox.put("a") is True
    assert inbox.put("b") is False
    waiting = asyncio.ensure_future(inbox.room())
    await asyncio.sleep(0)
    assert not waiting.done()
    assert await inbox.take() == ["a", "b"]
    await asyncio.wait_for(waiting, 1)


async def test_clearing_drops_what_was_not_taken_counts_it_and_makes_room():
    inbox = Inbox(app=None, maxsize=2)
    inbox.put("a")
    inbox.put("b")
    inbox.clear()
    await asyncio.wait_for(inbox.room(), 1)
    assert len(inbox) == 0 and inbox.cleared == 2
    inbox.put("c")
    assert await inbox.take() == ["c"]
