"""The emulator's TMC: permit, consume, confirm, redelivery, chaos and ground truth."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.conftest import client_for

from taobao_ordersync import AuthenticationError, InvalidRequestError
from taobao_ordersync._wire import unwrap_list
from taobao_ordersync.testing import ShopProfile, TmcChaos

BUSY = ShopProfile(orders_per_day=86_400 * 2, history_days=0.01)  # about two new trades a second


async def _consume(client: Any, quantity: int = 200, **params: Any) -> list[dict[str, Any]]:
    reply = await client.call("taobao.tmc.messages.consume", {"quantity": quantity, **params})
    return unwrap_list(reply.get("messages"))


async def test_permit_consume_confirm_and_redelivery(make_emulator: Any) -> None:
    """Only a permitted seller's changes are published, in TOP's shape; unconfirmed ones come back."""
    async with make_emulator(shops=2, profile=BUSY, seed=3, tmc=TmcChaos(redeliver_after=5)) as emu:
        async with client_for(emu) as client:
            assert [] == await _consume(client)  # nobody permitted yet: no messages
            reply = await client.call("taobao.tmc.user.permit", {}, session="session-1")
            assert reply["is_success"] is True
            emu.advance(20)
            messages = await _consume(client)
            assert messages
            first = messages[0]
            assert {"id", "topic", "content", "pub_time", "pub_app_key", "user_id", "user_nick"} <= set(first)
            content = json.loads(first["content"])
            assert {"tid", "oid", "seller_nick", "buyer_nick", "status", "type", "payment"} <= set(content)
            assert first["user_nick"] == emu.shop("shop-1").nick == content["seller_nick"]
            assert all(m["user_nick"] == emu.shop("shop-1").nick for m in messages)  # shop-2 not permitted
            assert all(m["topic"].startswith("taobao_trade_") for m in messages)
            assert content["tid"] in emu.shop("shop-1").trades
            truth = [c for c in emu.tmc.changes if c.published]
            assert len(messages) == min(200, len(truth))

            keep = [m["id"] for m in messages[: len(messages) // 2]]
            await client.call("taobao.tmc.messages.confirm", {"s_message_ids": ",".join(map(str, keep))})
            emu.pause_activity()
            assert [] == await _consume(client)  # the rest are held, not yet timed out
            emu.advance(6)
            again = await _consume(client)
            assert {m["id"] for m in messages} - set(keep) == {m["id"] for m in again}


async def test_tmc_validation(make_emulator: Any) -> None:
    """Quantity 10-200, at most 200 ids to confirm, known topics, and a session to permit."""
    async with make_emulator(shops=1, seed=3) as emu:
        async with client_for(emu) as client:
            for quantity in (9, 201):
                with pytest.raises(InvalidRequestError) as bad:
                    await _consume(client, quantity)
                assert 41 == bad.value.code
            with pytest.raises(InvalidRequestError) as missing:
                await client.call("taobao.tmc.messages.confirm", {})
            assert 40 == missing.value.code
            with pytest.raises(InvalidRequestError):
                await client.call("taobao.tmc.messages.confirm", {"s_message_ids": ",".join(["1"] * 201)})
            with pytest.raises(InvalidRequestError):
                await client.call("taobao.tmc.user.permit", {"topics": "taobao_trade_Nonsense"}, session="session-1")
            with pytest.raises(AuthenticationError):
                await client.call("taobao.tmc.user.permit", {})
            await client.call("taobao.tmc.user.permit", {"topics": "taobao_trade_TradeCreate"}, session="session-1")


async def test_chaos_drops_duplicates_and_delays(make_emulator: Any) -> None:
    """Dropped changes are in the ground truth but never published; duplicates carry new ids."""
    chaos = TmcChaos(drop_rate=0.2, duplicate_rate=0.3, max_delay=3.0, reorder=True)
    async with make_emulator(shops=1, profile=BUSY, seed=5, tmc=chaos) as emu:
        async with client_for(emu) as client:
            await client.call("taobao.tmc.user.permit", {}, session="session-1")
            emu.advance(60)
            emu.pause_activity()
            emu.advance(5)  # every delay has passed
            seen: list[dict[str, Any]] = []
            while batch := await _consume(client):
                seen.extend(batch)
                await client.call(
                    "taobao.tmc.messages.confirm", {"s_message_ids": ",".join(str(m["id"]) for m in batch)}
                )
    changes = emu.tmc.changes
    dropped = [c for c in changes if not c.published]
    assert 0.1 < len(dropped) / len(changes) < 0.3
    assert len({m["id"] for m in seen}) == len(seen)
    announced = {(json.loads(m["content"])["tid"], m["topic"]) for m in seen}
    assert len(seen) > len(announced)  # duplicates of one change under other ids
    assert {(c.tid, c.topic) for c in changes if c.published} <= announced
