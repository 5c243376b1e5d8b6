"""TOP request signatures (pure).

Sort the non-empty parameters by name, concatenate ``name + value`` with no
separators, then digest: ``md5`` wraps the string in the secret on both sides,
``hmac`` and ``hmac-sha256`` key an HMAC with the secret. Output is upper-case hex.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Final, Literal

SignMethod = Literal["md5", "hmac", "hmac-sha256"]
SIGN_METHODS: Final[tuple[SignMethod, ...]] = ("md5", "hmac", "hmac-sha256")


def canonical_string(params: Mapping[str, str]) -> str:
    """The string TOP signs: sorted ``name+value`` pairs, ``sign`` and empties left out."""
    return "".join(f"{name}{params[name]}" for name in sorted(params) if name != "sign" and params[name] != "")


def sign(params: Mapping[str, str], secret: str, method: SignMethod) -> str:
    """Sign ``params`` (which must include ``sign_method``) with ``secret``."""
    text = canonical_string(params).encode()
    key = secret.encode()
    if method == "md5":
        # TOP's protocol mandates MD5 here; it is a keyed checksum, not our choice.
        return hashlib.md5(key + text + key).hexdigest().upper()  # noqa: S324
    if method == "hmac":
        return hmac.new(key, text, hashlib.md5).hexdigest().upper()
    if method == "hmac-sha256":
        return hmac.new(key, text, hashlib.sha256).hexdigest().upper()
    raise ValueError(f"unknown sign_method {method!r}; use one of {', '.join(SIGN_METHODS)}")
