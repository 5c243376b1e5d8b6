"""``ScriptedTransport``: a ``Transport`` that answers from a script, so nothing is patched.

httpx's ``MockTransport`` idea: the client is the real ``TopClient`` and only the
network is replaced, through the seam the client already takes (``transport=``).
"""

from __future__ import annotations

import inspect
import json
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Final, TypeAlias

from attrs import field, frozen

from taobao_ordersync.transport import RawResponse

if TYPE_CHECKING:
    from taobao_ordersync.transport import Transport

__all__ = ["ScriptedRequest", "ScriptedTransport", "json_reply"]

#: Form fields that are secrets: recorded (a test may check them) but never shown.
_SECRET_FIELDS: Final = frozenset({"session"})

#: A scripted reply: answered as is, or raised (what a real transport raises: ``ConnectError``, ``TransportTimeout``).
ScriptedReply: TypeAlias = RawResponse | BaseException
#: A function script: answers each request (plain or async), or raises.
ScriptedAnswer: TypeAlias = Callable[["ScriptedRequest"], RawResponse | Awaitable[RawResponse]]


def _copy_form(form: Mapping[str, str]) -> dict[str, str]:
    return dict(form)


@frozen(repr=False)
class ScriptedRequest:
    """One request a ``ScriptedTransport`` received: the URL and the form exactly as sent.

    ``form`` holds every parameter, the system ones and ``sign`` included. The session
    key is in it too, for a test to check, but ``repr`` hides it.
    """

    url: str
    form: Mapping[str, str] = field(converter=_copy_form)

    @property
    def method(self) -> str:
        """The API method called (``form["method"]``), or ``""`` if the form has none."""
        return self.form.get("method", "")

    def __repr__(self) -> str:
        shown = {name: "<hidden>" if name in _SECRET_FIELDS else value for name, value in self.form.items()}
        return f"ScriptedRequest(url={self.url!r}, form={shown!r})"


class ScriptedTransport:
    """A ``Transport`` that answers from a script instead of the network; pass it as ``TopClient(transport=...)``.

    The script is either a list of replies, one per request in order (an exception in
    the list is raised instead of answering), or a function from ``ScriptedRequest`` to
    ``RawResponse``, plain or async, which may raise too. Every request is appended to
    ``requests`` before it is answered. A request after the list ran out fails with an
    ``AssertionError`` that says which one: the client sent more than the test scripted.

    Args:
        script: the replies in order, or the function answering each request.
    """

    def __init__(
        self,
        script: Iterable[ScriptedReply] | ScriptedAnswer,
    ) -> None:
        self.requests: list[ScriptedRequest] = []
        self.is_closed = False
        self._answer: ScriptedAnswer | None = script if callable(script) else None
        self._replies: deque[ScriptedReply] = deque() if callable(script) else deque(script)
        self._scripted = len(self._replies)

    def __repr__(self) -> str:
        left = "a function" if self._answer is not None else f"{len(self._replies)} of {self._scripted} replies left"
        return f"ScriptedTransport({len(self.requests)} requests, {left})"

    @property
    def remaining(self) -> int:
        """Scripted replies not used yet (always 0 for a function script)."""
        return len(self._replies)

    async def post(self, url: str, form: Mapping[str, str]) -> RawResponse:
        request = ScriptedRequest(url=url, form=form)
        self.requests.append(request)
        if self._answer is not None:
            answer = self._answer(request)
            return await answer if inspect.isawaitable(answer) else answer
        if not self._replies:
            raise AssertionError(
                f"ScriptedTransport: request {len(self.requests)} ({request.method or 'no method'}) "
                f"came after all {self._scripted} scripted replies were used"
            )
        reply = self._replies.popleft()
        if isinstance(reply, BaseException):
            raise reply
        return reply

    async def aclose(self) -> None:
        self.is_closed = True


def json_reply(document: object, *, status: int = 200, date: str | None = None) -> RawResponse:
    """A reply whose body is ``document`` as UTF-8 JSON, e.g. ``json_reply({"time": "2023-11-15 06:13:20"})``.

    ``date`` is the reply's ``Date`` header (the client reads Taobao's clock from it after a code 31).
    """
    return RawResponse(status=status, body=json.dumps(document, ensure_ascii=False).encode(), date=date)


if TYPE_CHECKING:  # mypy proves the fake fits the seam TopClient takes
    _fits: Transport = ScriptedTransport([])
