from fastapi.testclient import TestClient

from tests.api.conftest import Account


def test_registered_device_is_listed(client: TestClient, alice: Account) -> None:
    created = client.post("/api/v1/sync/devices", json={"name": "laptop"}, headers=alice.headers)
    assert created.status_code == 200, created.text
    listed = client.get("/api/sync/devices", headers=alice.headers)
    assert [d["name"] for d in listed.json()["devices"]] == ["laptop"]
