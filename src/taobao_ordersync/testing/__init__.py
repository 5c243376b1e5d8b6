"""Test helpers shipped for users: the TOP emulator, a scripted transport and fakes.

Nothing in the library imports this package; it imports the library.
"""

from taobao_ordersync.testing._fakes import FakeClock
from taobao_ordersync.testing._ledger import MemoryLedger
from taobao_ordersync.testing._push import PushRun, measure_push
from taobao_ordersync.testing._shop import ShopProfile
from taobao_ordersync.testing._tmc import TmcChange, TmcChaos
from taobao_ordersync.testing._transport import ScriptedRequest, ScriptedTransport, json_reply
from taobao_ordersync.testing.emulator import Chaos, Emulator, VerifyReport
from taobao_ordersync.testing.naive import Collector, NaiveSyncer

__all__ = [
    "Chaos",
    "Collector",
    "Emulator",
    "FakeClock",
    "MemoryLedger",
    "NaiveSyncer",
    "PushRun",
    "ScriptedRequest",
    "ScriptedTransport",
    "ShopProfile",
    "TmcChange",
    "TmcChaos",
    "VerifyReport",
    "json_reply",
    "measure_push",
]
