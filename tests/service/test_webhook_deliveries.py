"""Announcements reaching a real receiver through the stack's sender: every
one, signed per Standard Webhooks, in order per customer while the receiver
fails for a while; every attempt listed; replays, test events, rotation."""

from __future__ import annotations

import time
from collections import defaultdict

from tests.conftest import Tenant, eventually
from tests.service.payments_helpers import PaymentsDb
from tests.service.webhook_helpers import announce, deliveries, endpoint
from tests.webhook_receiver import Receiver


async def test_every_announcement_arrives_signed_and_in_order_per_customer_while_the_receiver_fails(
    tenant: Tenant, payments_db: PaymentsDb
):
    org, h = tenant.organization_id, tenant.http
    async with Receiver(fail_first=7) as receiver:
        created = await endpoint(tenant, receiver.url)
        receiver.secrets = [created["secret"]]
        customers = ("cus_a", "cus_b", "cus_c")
        for n in range(6):
            for customer in customers:
                await announce(payments_db, org, "invoice.paid", customer, invoice={"customer": customer, "n": n})

        async def all_succeeded():
            listed = await deliveries(tenant, created["id"], page_size=100)
            assert len(listed) == 18
            assert {d["status"] for d in listed} == {"succeeded"}
            return listed

        listed = await eventually(all_succeeded, timeout=30)
        assert receiver.verified(created["secret"])
        assert len(receiver.received) >= 18 + 7
        arrived: dict[str, list[int]] = defaultdict(list)
        for request in receiver.received:
            data = request.json["data"]["invoice"]
            arrived[data["customer"]].append(data["n"])
            assert request.json["type"] == "invoice.paid"
            assert request.headers["content-type"] == "application/json"
            assert request.headers["user-agent"].startswith("bxb-webhooks/")
        for customer in customers:  # a customer's events never overtake each other, retries included
            assert arrived[customer] == sorted(arrived[customer]), arrived[customer]
            assert sorted(set(arrived[customer])) == list(range(6))
        assert {d["event_id"] for d in listed} == set(receiver.ids())
        retried = [d for d in listed if d["attempt_count"] > 1]
        assert retried and sum(d["attempt_count"] for d in listed) == len(receiver.received)
        one = (await h.get(f"/v1/webhook_endpoints/{created['id']}/deliveries/{retried[0]['id']}")).json()
        codes = [a["status_code"] for a in one["attempts"]]
        assert codes[-1] == 200 and set(codes[:-1]) == {500}
        assert [a["succeeded"] for a in one["attempts"]] == [False] * (len(codes) - 1) + [True]
        assert one["attempts"][0]["error"] == "the receiver answered 500"
        assert all(a["response_snippet"] == "thanks" and a["latency_ms"] >= 0 for a in one["attempts"])
        times = [a["attempt_time"] for a in one["attempts"]]
        assert times == sorted(times)
        bodies = {r.id: r.body.decode() for r in receiver.received}
        assert one["payload"] == bodies[one["event_id"]]
        assert not retried[0].get("payload") and not retried[0].get("attempts")
        assert (one["last_status_code"], one["event_type"]) == (200, "invoice.paid")
        assert one.get("next_attempt_time") is None
        endpoint_after = (await h.get(f"/v1/webhook_endpoints/{created['id']}")).json()
        assert endpoint_after.get("failing_since_time") is None  # the last attempt succeeded


async def test_deliveries_are_filtered_and_paged_newest_first(tenant: Tenant, payments_db: PaymentsDb):
    org = tenant.organization_id
    async with Receiver() as receiver:
        created = await endpoint(tenant, receiver.url, event_types=["invoice.paid", "payment.failed"])
        receiver.secrets = [created["secret"]]
        await announce(payments_db, org, "invoice.paid", "cus_1")
        await announce(payments_db, org, "invoice.voided", "cus_1")  # not subscribed
        await announce(payments_db, org, "payment.failed", "cus_1")
        await announce(payments_db, org, "invoice.paid", "cus_2")

        async def delivered():
            assert len(receiver.received) == 3

        await eventually(delivered)
        newest = await deliveries(tenant, created["id"], page_size=2)
        assert [d["event_type"] for d in newest] == ["invoice.paid", "payment.failed"]
        paid = await deliveries(tenant, created["id"], event_type="invoice.paid")
        assert len(paid) == 2 and {d["event_type"] for d in paid} == {"invoice.paid"}
        assert await deliveries(tenant, created["id"], status="failed") == []
        assert len(await deliveries(tenant, created["id"], status="succeeded")) == 3
        assert [r.json["type"] for r in receiver.received if r.json["type"] != "invoice.paid"] == ["payment.failed"]


async def test_a_replay_sends_the_same_event_id_again_and_a_test_event_reaches_only_its_endpoint(
    tenant: Tenant, payments_db: PaymentsDb
):
    org, h = tenant.organization_id, tenant.http
    async with Receiver() as receiver, Receiver() as bystander:
        created = await endpoint(tenant, receiver.url)
        other = await endpoint(tenant, bystander.url)
        receiver.secrets = [created["secret"]]
        await announce(payments_db, org, "customer.created", "cus_r", customer={"id": "cus_r"})

        async def arrived(count: int):
            assert len(receiver.received) == count

        await eventually(lambda: arrived(1))
        [original] = await deliveries(tenant, created["id"])
        base = f"/v1/webhook_endpoints/{created['id']}/deliveries"
        replayed = await h.post(f"{base}/{original['id']}/replay", json={})
        assert replayed.status_code == 200, replayed.text
        replay = replayed.json()
        assert (replay["replay_of"], replay["event_id"], replay["status"]) == (
            original["id"],
            original["event_id"],
            "pending",
        )
        assert replay["id"] != original["id"]
        await eventually(lambda: arrived(2))
        first, again = receiver.received
        assert first.id == again.id == original["event_id"] and first.body == again.body
        assert first.headers["webhook-signature"] and receiver.verified(created["secret"])
        missing = await h.post(f"{base}/dlv_nope/replay", json={})
        assert (missing.status_code, missing.json()["error"]["field"]) == (404, "id")
        assert (await h.get(f"{base}/dlv_nope")).status_code == 404

        tested = await h.post(f"/v1/webhook_endpoints/{created['id']}/test", json={})
        assert tested.status_code == 200, tested.text
        assert (tested.json()["event_type"], tested.json()["status"]) == ("webhook.test", "pending")
        await eventually(lambda: arrived(3))
        test_event = receiver.received[2]
        assert test_event.json["type"] == "webhook.test"
        assert test_event.json["data"] == {"webhook_endpoint_id": created["id"]}
        assert test_event.id == tested.json()["event_id"]
        await eventually(lambda: arrived(3))
        assert [r.json["type"] for r in bystander.received] == ["customer.created"]  # not the test event
        assert other["id"] != created["id"]

        await h.patch(f"/v1/webhook_endpoints/{created['id']}", json={"enabled": False})
        for refused in (
            await h.post(f"/v1/webhook_endpoints/{created['id']}/test", json={}),
            await h.post(f"{base}/{original['id']}/replay", json={}),
        ):
            assert (refused.status_code, refused.json()["error"]["reason"]) == (409, "ENDPOINT_DISABLED")


async def test_during_a_rotations_overlap_both_secrets_verify_then_only_the_new_one(
    tenant: Tenant, payments_db: PaymentsDb
):
    org, h = tenant.organization_id, tenant.http
    async with Receiver() as receiver:
        created = await endpoint(tenant, receiver.url)
        old = created["secret"]
        rotated = await h.post(f"/v1/webhook_endpoints/{created['id']}/rotate_secret", json={})
        assert rotated.status_code == 200, rotated.text
        new = rotated.json()["secret"]
        assert new.startswith("whsec_") and new != old
        assert rotated.json()["previous_secret_expire_time"]
        assert not (await h.get(f"/v1/webhook_endpoints/{created['id']}")).json().get("secret")
        receiver.secrets = [old, new]
        await announce(payments_db, org, "invoice.finalized", "cus_x")

        async def arrived(count: int):
            assert len(receiver.received) == count

        await eventually(lambda: arrived(1))
        during = receiver.received[0]
        assert during.verified == {old: True, new: True}  # a receiver with either secret verifies
        assert len(during.headers["webhook-signature"].split(" ")) == 2

        ended = await h.post(f"/v1/webhook_endpoints/{created['id']}/rotate_secret", json={"overlap_seconds": 0})
        newest = ended.json()["secret"]
        assert ended.json().get("previous_secret_expire_time") is None
        receiver.secrets = [new, newest]
        await announce(payments_db, org, "invoice.finalized", "cus_x")
        await eventually(lambda: arrived(2))
        after = receiver.received[1]
        assert after.verified == {new: False, newest: True}
        assert len(after.headers["webhook-signature"].split(" ")) == 1


async def test_a_410_gone_fails_the_delivery_at_once_and_a_large_answer_is_cut(tenant: Tenant, payments_db: PaymentsDb):
    org = tenant.organization_id
    async with Receiver(fail_first=1, status=410, answer=b"x" * 9000) as receiver:
        created = await endpoint(tenant, receiver.url)
        await announce(payments_db, org, "invoice.voided", "cus_g")

        async def failed():
            [delivery] = await deliveries(tenant, created["id"])
            assert delivery["status"] == "failed"
            return delivery

        delivery = await eventually(failed)
        one = (await tenant.http.get(f"/v1/webhook_endpoints/{created['id']}/deliveries/{delivery['id']}")).json()
        [attempt] = one["attempts"]
        assert (attempt["status_code"], attempt["response_snippet"]) == (410, "x" * 500)
        assert len(receiver.received) == 1
        assert (await tenant.http.get(f"/v1/webhook_endpoints/{created['id']}")).json()["failing_since_time"]


async def test_an_endpoint_answering_500_fails_once_the_schedule_is_spent(tenant: Tenant, payments_db: PaymentsDb):
    org = tenant.organization_id
    async with Receiver(fail_first=1000) as receiver:
        created = await endpoint(tenant, receiver.url)
        start = time.monotonic()
        await announce(payments_db, org, "payment.failed", "cus_f")

        async def failed():
            [delivery] = await deliveries(tenant, created["id"])
            assert delivery["status"] == "failed"
            return delivery

        delivery = await eventually(failed, timeout=30)
        # One attempt and one per retry of the stack's schedule (0.2, 0.4, 0.8, 1.6, 3.2 s, jittered).
        assert delivery["attempt_count"] == 6 == len(receiver.received)
        assert time.monotonic() - start >= 0.8 * 6.2
        assert delivery["last_status_code"] == 500
        assert len({r.id for r in receiver.received}) == 1
