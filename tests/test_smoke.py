def test_publish_round_trip(tenant):
    queue = tenant.create_queue("orders")
    assert queue["partition_count"] == 1
    r = tenant.admin.post("/publish", {"topic": "orders", "payload": {"n": 1}, "key": "a"})
    assert r.status_code == 201, r.json
    got = tenant.admin.get(f"/messages/{r.json['message_id']}")
    assert got.status_code == 200, got.json
    assert got.json["payload"] == {"n": 1}
    assert got.json["offset"] == r.json["offset"]
    q = tenant.admin.get("/queues/orders")
    assert q.json["stats"]["length"] == 1, q.json
