"""A custom ``CheckpointStore``: one JSON file, with compare-and-set.

What it shows:

- a store is any class with ``load`` and a compare-and-set ``save`` (no base
  class): ``save`` stores the document only if the shop is still at
  ``expected_revision`` (``None``: no document yet) and returns the new revision,
  else raises ``CheckpointConflictError`` and changes nothing;
- the blocking file I/O runs in a worker thread (``asyncio.to_thread``); a lock
  makes check-and-write one step, and each write goes to a temporary file that
  replaces the old one, so a crash never leaves half a file;
- the document is an opaque string: the store keeps it byte for byte;
- a ``Syncer`` uses it like the bundled stores, and a stale save is refused.

This store is for one process: its lock does not reach other processes. For
several workers, let a database do the compare-and-set (see
docs/guides/checkpoint-stores.md), and test any store with
``taobao_ordersync.testing.store_contract.CheckpointStoreContract``.

Run it:

    python examples/custom_checkpoint_store.py

By default it syncs a shop of the built-in TOP emulator, with the JSON file in a
temporary directory. With TAOBAO_ORDERSYNC_APP_KEY, TAOBAO_ORDERSYNC_APP_SECRET and TAOBAO_ORDERSYNC_SESSION set,
it syncs your shop on the real Taobao gateway (id TAOBAO_ORDERSYNC_SHOP_ID, default
"my-shop") with checkpoints in ./checkpoints.json. It keeps no copy of the trades,
it only counts them: run it again and it continues from the checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from taobao_ordersync import (
    CheckpointConflictError,
    CheckpointCorruptError,
    CheckpointError,
    CheckpointStore,
    Shop,
    StoredCheckpoint,
    Syncer,
    TopClient,
)
from taobao_ordersync.testing import Emulator, ShopProfile


class JsonFileStore:
    """Checkpoints in one JSON file: ``{shop_id: {"revision": n, "data": "<document>"}}``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()  # held in the worker thread, around read-check-write

    def __repr__(self) -> str:
        return f"JsonFileStore({str(self.path)!r})"

    async def load(self, shop_id: str) -> StoredCheckpoint | None:
        return await asyncio.to_thread(self._load, shop_id)

    async def save(self, shop_id: str, data: str, *, expected_revision: int | None) -> int:
        return await asyncio.to_thread(self._save, shop_id, data, expected_revision)

    def _load(self, shop_id: str) -> StoredCheckpoint | None:
        with self._lock:
            entry = self._read().get(shop_id)
        return None if entry is None else StoredCheckpoint(data=entry["data"], revision=entry["revision"])

    def _save(self, shop_id: str, data: str, expected: int | None) -> int:
        with self._lock:
            entries = self._read()
            current = entries.get(shop_id)
            revision = None if current is None else current["revision"]
            if revision != expected:
                raise CheckpointConflictError(
                    f"shop {shop_id!r}: checkpoint is at revision {revision}, not {expected}; "
                    "another worker is syncing this shop"
                )
            new_revision = (expected or 0) + 1
            entries[shop_id] = {"revision": new_revision, "data": data}
            self._write(entries)
        return new_revision

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:  # only the library's error tree may reach the syncer's caller
            raise CheckpointError(f"{self.path}: {exc}") from exc
        try:
            entries = json.loads(text)
            if not isinstance(entries, dict) or not all(
                isinstance(e, dict) and isinstance(e.get("data"), str) and type(e.get("revision")) is int
                for e in entries.values()
            ):
                raise ValueError("not a map of {revision, data}")
        except ValueError as exc:
            raise CheckpointCorruptError(f"{self.path}: not a checkpoint file: {exc}") from exc
        return entries

    def _write(self, entries: dict[str, dict[str, Any]]) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        try:
            temporary.write_text(json.dumps(entries, ensure_ascii=False, indent=1), encoding="utf-8")
            temporary.replace(self.path)  # atomic on POSIX and Windows
        except OSError as exc:
            raise CheckpointError(f"{self.path}: {exc}") from exc


@contextlib.asynccontextmanager
async def environment() -> AsyncIterator[tuple[TopClient, Shop, Path, Callable[[], None]]]:
    """A client, the shop, the checkpoint file and a "time passes" step."""
    if key := os.environ.get("TAOBAO_ORDERSYNC_APP_KEY"):
        shop_id = os.environ.get("TAOBAO_ORDERSYNC_SHOP_ID", "my-shop")
        shop = Shop(id=shop_id, session=os.environ["TAOBAO_ORDERSYNC_SESSION"])
        async with TopClient(key, os.environ["TAOBAO_ORDERSYNC_APP_SECRET"]) as client:
            yield client, shop, Path("checkpoints.json"), lambda: None
        return
    with tempfile.TemporaryDirectory() as scratch:
        async with (
            Emulator(profile=ShopProfile(orders_per_day=500, history_days=2), seed=3) as emulator,
            # rate=100 and clock_refresh=0: the emulator needs no pacing, and its clock jumps below.
            TopClient(emulator.app_key, emulator.app_secret, url=emulator.url, rate=100, clock_refresh=0) as client,
        ):
            shop = Shop(id="shop-1", session=emulator.shops[0].session)
            yield client, shop, Path(scratch) / "checkpoints.json", lambda: emulator.advance(300)


async def main() -> None:
    async with environment() as (client, shop, path, time_passes):
        store: CheckpointStore = JsonFileStore(path)  # mypy checks that it fits the protocol
        syncer = Syncer(client, store=store)
        stored = None
        for run in (1, 2):
            delivered = sum([1 async for _ in syncer.increments(shop)])
            stored = await store.load(shop.id)
            checkpoint = await syncer.checkpoint(shop.id)
            if stored is None or checkpoint is None:
                raise RuntimeError("a finished run always leaves a checkpoint")
            print(
                f"run {run}: {delivered} trades delivered; stored revision {stored.revision}, "
                f"cursor {checkpoint.cursor:%Y-%m-%d %H:%M:%S}"
            )
            time_passes()

        if stored is None:
            return
        print(f"{path.name} holds {path.stat().st_size} bytes; the document for {shop.id}:")
        print(f"  {stored.data}")
        try:  # a second worker still holding the revision before the last save
            await store.save(shop.id, stored.data, expected_revision=stored.revision - 1)
        except CheckpointConflictError as exc:
            print(f"a stale save is refused: {exc}")


if __name__ == "__main__":
    asyncio.run(main())
