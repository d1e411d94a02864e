from tests.helpers.api import create_sale


async def test_buy_once(client):
    await create_sale(client, "s1", stock=2)
    resp = await client.post("/api/v1/sales/s1/orders", headers={"X-User-Id": "u1"})
    assert resp.status == 202
    body = await resp.json()
    assert body["status"] == "queued"
    assert resp.headers["Location"] == f"/api/v1/orders/{body['order_id']}"
