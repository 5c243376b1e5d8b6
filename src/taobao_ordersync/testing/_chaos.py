"""The emulator's chaos: the knobs (``Chaos``) and the seeded draws that apply them (``Dice``).

Every random choice the fake gateway makes comes from one generator seeded by the
emulator's seed, in the order a request makes them, so a seed replays a run's faults.
The draws are cheap and skipped when their knob is off, so a calm emulator draws
only each request's id.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from enum import Enum
from typing import TypeVar

from attrs import frozen

__all__ = ["Chaos", "Dice", "Fault"]

_Row = TypeVar("_Row")


@frozen(kw_only=True)
class Chaos:
    """Seeded fault injection. Every rate is a probability per request.

    Args:
        error_rate: transient failures: ``isp.*`` errors, HTTP 502 pages, truncated
            bodies and dropped connections, in equal shares.
        ban_rate: code-7 bans for the whole app.
        ban_seconds: how long each injected ban lasts (stated in ``sub_msg`` like Taobao does).
        rate_limit: calls per second per app before a 1-second code-7 ban (None: unlimited).
        move_while_paging: chance that a list page request first modifies a few trades
            of the window being read (a seller editing orders while we page).
        slow_rate: responses delayed by ``slow_seconds``.
        slow_seconds: the delay of a slow response.
        shuffle_ties: return the trades that share a second in a fresh random order on
            every list request (TOP documents no tie-break; backends reorder ties per
            ``LIMIT``/``OFFSET``), so offset paging may split such a second unsafely.
        refuse_later_pages: chance that a list request for page 2 or later is refused as too
            big (``isp.top-remote-connection-timeout``) although its page 1 was listed, as an
            overloaded Taobao does under 11.11 load.
        always_has_next: every ``use_has_next`` reply says ``has_next=true`` (a broken proxy or
            gateway): a reader that trusts it never stops.
    """

    error_rate: float = 0.0
    ban_rate: float = 0.0
    ban_seconds: int = 1
    rate_limit: float | None = None
    move_while_paging: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 0.5
    shuffle_ties: bool = False
    refuse_later_pages: float = 0.0
    always_has_next: bool = False


class Fault(Enum):
    """What a request gets instead of (or before) its answer."""

    SLOW = "slow"  # answered, ``slow_seconds`` late
    ISP_ERROR = "isp"  # an ``isp.*`` error_response
    BAD_GATEWAY = "502"  # an HTML page with HTTP 502
    TRUNCATED = "truncated"  # HTTP 200 with the start of a JSON body
    DROP = "drop"  # the connection closed without an answer


_ERRORS = (Fault.ISP_ERROR, Fault.BAD_GATEWAY, Fault.TRUNCATED, Fault.DROP)


class Dice:
    """The seeded draws: which fault a request gets, whether it is banned, what moves or reshuffles.

    ``chaos`` may be replaced at any time (``Emulator.chaos = ...``); each draw reads the current knobs.
    """

    def __init__(self, chaos: Chaos, *, seed: int) -> None:
        self.chaos = chaos
        self._rng = random.Random(f"chaos:{seed}")

    def request_id(self, request_no: int) -> str:
        """A ``request_id`` like TOP's: unique (it starts with the request's number), not guessable."""
        return f"{request_no:x}{self._rng.getrandbits(40):010x}"

    def session_key_suffix(self) -> str:
        """A fresh suffix for a renewed session key."""
        return f"{self._rng.getrandbits(32):08x}"

    def fault(self) -> Fault | None:
        """A slow reply (``slow_rate``), else one of the transient failures (``error_rate``), else None."""
        chaos = self.chaos
        rng = self._rng
        if chaos.slow_rate and rng.random() < chaos.slow_rate:
            return Fault.SLOW
        if chaos.error_rate and rng.random() < chaos.error_rate:
            return rng.choice(_ERRORS)
        return None

    def bans(self) -> bool:
        """Whether this request starts a chaos ban (``ban_rate``)."""
        return bool(self.chaos.ban_rate) and self._rng.random() < self.chaos.ban_rate

    def refuses_page(self, page_no: int) -> bool:
        """Whether a list request for ``page_no`` is refused as too big although page 1 was listed."""
        rate = self.chaos.refuse_later_pages
        return page_no > 1 and bool(rate) and self._rng.random() < rate

    def moves_trades(self, page_no: int) -> bool:
        """Whether the seller edits a few trades of the window before ``page_no`` (2 or later) is read."""
        rate = self.chaos.move_while_paging
        return page_no > 1 and bool(rate) and self._rng.random() < rate

    def trades_to_move(self, candidates: Sequence[int]) -> list[int]:
        """One to three of ``candidates`` (fewer if there are fewer)."""
        return self._rng.sample(candidates, min(len(candidates), self._rng.randint(1, 3)))

    def shuffle_ties(self, rows: Sequence[_Row], same_second: Callable[[_Row, _Row], bool]) -> list[_Row]:
        """``rows`` with each run of neighbours that ``same_second`` ties in a fresh random order."""
        shuffled: list[_Row] = []
        run: list[_Row] = []
        for row in rows:
            if run and not same_second(run[-1], row):
                self._rng.shuffle(run)
                shuffled.extend(run)
                run = []
            run.append(row)
        self._rng.shuffle(run)
        shuffled.extend(run)
        return shuffled
