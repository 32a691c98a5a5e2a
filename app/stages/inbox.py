"""Records handed by the consumer's fetch loop straight to one stage's agent.

faust hands each fetched record to a stream through its conductor, a channel queue and
the stream loop: an ``Event`` per record, a schema decode, sensors, a context variable
and a yield to the event loop per record.  A :class:`~app.stages.stage.BatchedStage`
needs none of it (its handler takes the ``Message`` and acks once its flush is durable),
so the fetch loop (:func:`app.faust_fixes.hand_over_directly`) appends the stage's
records to an :class:`Inbox` and the stage's agent takes them in batches.

Like faust's stream queues, an inbox is cleared whenever faust clears those (a rebalance
begins or ends, a recovery seeks): records not taken yet were never tracked nor acked,
and are fetched again from the committed offset.  A record taken from an older consumer
generation, or while flow is suspended, is skipped the same way (as faust's Cython stream
loop skips it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from time import monotonic

from faust.types import AppT, Message

from app.faust_fixes import hand_over_directly

#: Records an inbox holds before the fetch loop waits for its agent to take them.
INBOX_SIZE = 4_096
#: Records taken between two yields to the event loop.
YIELD_EVERY = 32


def direct_inbox(app: AppT, topics: Iterable[str]) -> Inbox:
    """A new inbox the fetch loop hands the records of ``topics`` to, instead of faust's streams."""
    inbox = Inbox(app)
    hand_over_directly(app, topics, inbox)
    return inbox


class Inbox:
    """Records of some input topics of ``app``, in fetch order; see the module docstring.

    >>> inbox = Inbox(app=None, maxsize=2)
    >>> inbox.put("a"), inbox.put("b")
    (True, False)
    >>> asyncio.run(inbox.take())
    ['a', 'b']
    """

    def __init__(self, app: AppT, maxsize: int = INBOX_SIZE) -> None:
        self.app = app
        self.maxsize = maxsize
        self.cleared = 0  # records dropped by clear(): fetched again
        self.skipped = 0  # records taken during a rebalance or of an older generation: fetched again
        self._messages: list[Message] = []
        self._clears = 0  # a batch taken before a clear is dropped with it
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    def __len__(self) -> int:
        return len(self._messages)

    def put(self, message: Message) -> bool:
        """Append ``message``; ``False`` if the inbox is full now (wait for :meth:`room`)."""
        messages = self._messages
        messages.append(message)
        if len(messages) == 1:
            self._arrived.set()
        if len(messages) >= self.maxsize:
            self._room.clear()
            return False
        return True

    async def room(self) -> None:
        """Wait until the agent has taken what fills the inbox."""
        await self._room.wait()

    async def take(self) -> list[Message]:
        """Every record in the inbox, in order, once there is at least one."""
        while not self._messages:
            self._arrived.clear()
            await self._arrived.wait()
        taken, self._messages = self._messages, []
        self._room.set()
        return taken

    def report(self) -> dict[str, int]:
        return {"waiting": len(self._messages), "skipped": self.skipped, "cleared": self.cleared}

    def clear(self) -> None:
        """Drop the records not taken yet (faust's flow control calls this with its queues)."""
        self.cleared += len(self._messages)
        self._messages = []
        self._clears += 1
        self._room.set()

    async def records(self) -> AsyncIterator[Message]:
        """The records to process, forever, as faust's Cython stream loop gives its events.

        A record of an older consumer generation, taken while flow control is suspended (a
        rebalance is under way), or of a batch taken before the inbox was last cleared (while
        its taker waited, e.g. for a flush), is skipped and counted: never tracked nor acked,
        it is fetched again from the committed offset.  A record given out is tracked
        (``consumer.track_message``: the revoke handler waits for its ack) and marks its
        partition's stream as active for faust's livelock detector.  Other tasks run at least
        every :data:`YIELD_EVERY` records.
        """
        app = self.app
        consumer = app.consumer
        flow_active = app.flow_control.is_active
        track = consumer.track_message
        inbound = app.monitor.stream_inbound_time
        while True:
            taken = await self.take()
            clears, now = self._clears, monotonic()
            for count, message in enumerate(taken, 1):
                if (
                    message.generation_id != app.consumer_generation_id
                    or not flow_active()
                    or clears != self._clears
                ):
                    self.skipped += 1
                    continue
                message.tracked = True
                track(message)
                inbound[message.tp] = now
                yield message
                if count % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
            await asyncio.sleep(0)
