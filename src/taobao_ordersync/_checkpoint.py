"""The old, private home of ``Checkpoint`` (now ``taobao_ordersync.checkpoint``).

Kept while modules written against it (``postgres``, ``audit``, ``testing.emulator``) still
import it from here; it holds nothing of its own.
"""

from taobao_ordersync.checkpoint import FORMAT, MAX_BOUNDARY, Checkpoint, Key

__all__ = ["FORMAT", "MAX_BOUNDARY", "Checkpoint", "Key"]
