"""``leaf_error``: the one error a task group's failures come down to."""

from __future__ import annotations

from taobao_ordersync.errors import AuthenticationError, ServerError, leaf_error


def test_a_plain_error_is_itself() -> None:
    error = ServerError(code=15, msg="busy")

    assert error is leaf_error(error)


def test_the_first_leaf_of_nested_groups_unless_one_is_preferred() -> None:
    busy = ServerError(code=15, msg="busy")
    expired = AuthenticationError(code=27, msg="Invalid session")
    group = BaseExceptionGroup("fetches", [ExceptionGroup("inner", [busy]), expired])

    assert busy is leaf_error(group)
    assert expired is leaf_error(group, prefer=lambda exc: isinstance(exc, AuthenticationError))
    assert busy is leaf_error(group, prefer=lambda exc: False)
