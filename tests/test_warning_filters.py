"""The suite's warning filter: everything is an error except named deprecations inside third-party code."""

from __future__ import annotations

import warnings

import pytest

# What Python 3.14's asyncio.iscoroutinefunction says, attributed to its caller.
ISCOROUTINEFUNCTION = (
    "'asyncio.iscoroutinefunction' is deprecated and slated for removal in Python 3.16; "
    "use inspect.iscoroutinefunction() instead"
)


@pytest.mark.parametrize("module", ["backoff._decorator", "backoff._async"])
def test_backoffs_call_of_iscoroutinefunction_is_ignored(module: str) -> None:
    """backoff 2.2.1 calls it when TopClient decorates a request; on 3.14 that must not fail the suite."""
    warnings.warn_explicit(ISCOROUTINEFUNCTION, DeprecationWarning, f"{module}.py", 1, module=module)


@pytest.mark.parametrize("module", ["taobao_ordersync.client", "tests.test_warning_filters", "backoffice"])
def test_the_same_deprecation_anywhere_else_fails(module: str) -> None:
    """Our own code (or another package) calling the deprecated function still fails."""
    with pytest.raises(DeprecationWarning):
        warnings.warn_explicit(ISCOROUTINEFUNCTION, DeprecationWarning, f"{module}.py", 1, module=module)


def test_other_warnings_from_backoff_fail() -> None:
    """Only that one deprecation is exempt, not everything backoff might warn about."""
    with pytest.raises(DeprecationWarning):
        warnings.warn_explicit(
            "something else is deprecated", DeprecationWarning, "backoff/_async.py", 1, module="backoff._async"
        )
