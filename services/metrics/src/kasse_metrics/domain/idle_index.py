"""Which sessions have been idle since before a time, without looking at every session.

The KPI engine and the experiment analysis both forget ("fold") the sessions idle for a whole conversion
window, every few minutes of event time. Comparing every session's last time with the horizon made each
fold cost all the sessions held; a replay of history folds every few hundred facts, and those scans were
~7 % of the service's CPU at 1.5 M events. This index files each session under the slot of its last event
time, so a fold visits only the slots that may have gone idle.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from heapq import heappop, heappush
from typing import TypeVar

S = TypeVar("S")


class IdleIndex:
    """Session ids by the slot (`slot_ms` of event time) of their last event.

    Lazy: a session that moved on to a later slot also stays in its older ones, and `idle` checks each id's
    current time (`last_ms_of`), so an update costs nothing unless its session changes slot. Unbuilt (after a
    restore replaced the sessions wholesale) it answers by one scan and indexes from then on."""

    def __init__(self, slot_ms: int) -> None:
        self.slot_ms = slot_ms
        self._slots: dict[int, list[str]] | None = {}
        self._heap: list[int] = []  # the slots held, oldest first

    def reset(self) -> None:
        """The sessions were replaced: unbuilt until the next `idle`."""
        self._slots, self._heap = None, []

    def add(self, sid: str, last_ms: int) -> None:
        """A new session, last seen at `last_ms`."""
        slots = self._slots
        if slots is None:
            return
        slot = last_ms // self.slot_ms
        sids = slots.get(slot)
        if sids is None:
            slots[slot] = [sid]
            heappush(self._heap, slot)
        else:
            sids.append(sid)

    def moved(self, sid: str, old_ms: int, new_ms: int) -> None:
        """A session's last time moved from `old_ms` to the later `new_ms`."""
        if new_ms // self.slot_ms != old_ms // self.slot_ms:
            self.add(sid, new_ms)

    def idle(self, horizon: int, sessions: Mapping[str, S], last_ms_of: Callable[[S], int]) -> list[str]:
        """The ids of `sessions` whose last time is before `horizon`, each once: the same ids as a scan of all.
        The caller forgets them (their ids are no longer indexed)."""
        if self._slots is None:
            self._slots, self._heap = {}, []
            idle = []
            for sid, held in sessions.items():
                last = last_ms_of(held)
                if last < horizon:
                    idle.append(sid)
                else:
                    self.add(sid, last)
            return idle
        slots = self._slots
        heap = self._heap
        found: dict[str, None] = {}  # ordered, once each (a session may sit in several slots)
        last_slot = horizon // self.slot_ms  # the one slot that may hold sessions on both sides of the horizon
        while heap and heap[0] <= last_slot:
            slot = heappop(heap)
            kept = []
            for sid in slots.pop(slot):
                session = sessions.get(sid)
                if session is None:
                    continue  # forgotten already
                last = last_ms_of(session)
                if last < horizon:
                    found[sid] = None
                elif last // self.slot_ms == slot:
                    kept.append(sid)  # in the last slot, not idle long enough yet: checked again next time
                # else: it moved on to a later slot, where it is indexed too
            if kept:
                slots[slot] = kept
                heappush(heap, slot)
                break  # the last slot: every later one is after the horizon
        return list(found)
