"""POST /api/v1/auth/login, /refresh, /device (protocol section 2)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from shelfsync.protocol.auth import (
    DeviceAuthRequest,
    DeviceTokenResponse,
    LoginRequest,
    RefreshRequest,
    TokenResponse,
)
from shelfsync.server.api.dependencies import ServicesDep, client_ip
from shelfsync.server.api.responses import problems

__all__ = ["router"]

router = APIRouter(tags=["auth"])


@router.post(
    "/login",
    summary="Log in with username and password",
    response_model=TokenResponse,
    responses={200: {"description": "Logged in"}, **problems(400, 401, 429, 503)},
)
def login(body: LoginRequest, request: Request, services: ServicesDep) -> TokenResponse:
    pair = services.auth.login(
        username=body.username, password=body.password, client_ip=client_ip(request)
    )
    return TokenResponse(
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        expires_in=pair.expires_in_s,
    )


@router.post(
    "/refresh",
    summary="Exchange a refresh token for new tokens (rotating)",
    response_model=TokenResponse,
    responses={200: {"description": "New tokens"}, **problems(400, 401, 503)},
)
def refresh(body: RefreshRequest, services: ServicesDep) -> TokenResponse:
    pair = services.auth.refresh(refresh_token=body.refresh_token)
    return TokenResponse(
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        expires_in=pair.expires_in_s,
    )


@router.post(
    "/device",
    summary="Exchange a device token for a device-bound access token",
    response_model=DeviceTokenResponse,
    responses={200: {"description": "Device access token"}, **problems(400, 401, 503)},
)
def device(body: DeviceAuthRequest, services: ServicesDep) -> DeviceTokenResponse:
    grant = services.auth.device_login(device_token=body.device_token)
    return DeviceTokenResponse(
        access_token=grant.access_token, expires_in=grant.expires_in_s, device_id=grant.device_id
    )
