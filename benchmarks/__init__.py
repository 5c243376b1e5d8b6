"""Benchmarks for taobao-ordersync: ``python -m benchmarks`` (``make bench``).

Scenarios run the real ``TopClient`` and ``Syncer`` over loopback against the TOP
emulator and check every run against its ground truth. See ``docs/benchmarks.md``.
"""
