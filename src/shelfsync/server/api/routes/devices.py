"""The six device endpoints under /api/v1/sync/devices (protocol section 5)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from shelfsync.protocol.devices import (
    Device,
    DeviceCreate,
    DeviceList,
    DeviceRegistered,
    DeviceToken,
    DeviceUpdate,
)
from shelfsync.server.api.dependencies import CurrentPrincipal, Services, ServicesDep
from shelfsync.server.api.responses import problems
from shelfsync.server.api.wire import (
    conflict_policy_in,
    conflict_policy_of,
    device_out,
    device_type_in,
    sync_filter_in,
)
from shelfsync.server.services.devices import DeviceChanges, DeviceStatus

__all__ = ["router"]

router = APIRouter(tags=["sync"])


def _out(services: Services, status: DeviceStatus) -> Device:
    return device_out(status, acked_cursor=services.feed.acked_cursor(status.device))


DeviceId = Annotated[str, Path(alias="id", max_length=64, description="Device ID")]


@router.get(
    "/devices",
    summary="List user's sync devices",
    response_model=DeviceList,
    responses={200: {"description": "List of devices"}, **problems(400, 401, 403, 503)},
)
def list_devices(principal: CurrentPrincipal, services: ServicesDep) -> DeviceList:
    return DeviceList(devices=[_out(services, s) for s in services.devices.list(principal)])


@router.post(
    "/devices",
    summary="Register a new sync device",
    response_model=DeviceRegistered,
    responses={200: {"description": "Device registered"}, **problems(400, 401, 403, 503)},
)
def register_device(
    body: DeviceCreate, principal: CurrentPrincipal, services: ServicesDep
) -> DeviceRegistered:
    status, token = services.devices.register(
        principal,
        name=body.name,
        device_type=device_type_in(body.device_type),
        os=body.os,
        client_version=body.client_version,
        sync_filter=sync_filter_in(body.sync_filter),
        conflict_policy=conflict_policy_of(body.conflict_policy),
    )
    return DeviceRegistered(device=_out(services, status), token=token)


@router.get(
    "/devices/{id}",
    summary="Get device details",
    response_model=Device,
    responses={200: {"description": "Device details"}, **problems(400, 401, 403, 404, 503)},
)
def get_device(device_id: DeviceId, principal: CurrentPrincipal, services: ServicesDep) -> Device:
    return _out(services, services.devices.get(principal, device_id))


@router.put(
    "/devices/{id}",
    summary="Update a device",
    response_model=Device,
    responses={200: {"description": "Device updated"}, **problems(400, 401, 403, 404, 503)},
)
def update_device(
    device_id: DeviceId, body: DeviceUpdate, principal: CurrentPrincipal, services: ServicesDep
) -> Device:
    changes = DeviceChanges(
        name=body.name,
        enabled=body.enabled,
        os=body.os,
        client_version=body.client_version,
        sync_filter=sync_filter_in(body.sync_filter),
        conflict_policy=conflict_policy_in(body.conflict_policy),
    )
    return _out(services, services.devices.update(principal, device_id, changes))


@router.delete(
    "/devices/{id}",
    summary="Delete a device",
    status_code=204,
    response_class=Response,
    responses={204: {"description": "Device deleted"}, **problems(400, 401, 403, 404, 503)},
)
def delete_device(
    device_id: DeviceId, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    services.devices.delete(principal, device_id)
    return Response(status_code=204)


@router.post(
    "/devices/{id}/token",
    summary="Regenerate device token",
    response_model=DeviceToken,
    responses={200: {"description": "Token regenerated"}, **problems(400, 401, 403, 404, 503)},
)
def rotate_device_token(
    device_id: DeviceId, principal: CurrentPrincipal, services: ServicesDep
) -> DeviceToken:
    token = services.devices.rotate_token(principal, device_id)
    return DeviceToken(device_id=device_id, token=token)
