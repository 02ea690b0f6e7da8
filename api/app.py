"""The FastAPI application: routers, problem+json errors, request ids, security headers, CORS;
/docs and /redoc served with their assets from this app (fastapi-offline: no CDN)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline

from api import errors, openapi
from api.audit import AuditMiddleware
from api.deps import Services
from api.forms import FormBodies
from api.headers import DOCS_PATHS, SecurityHeadersMiddleware, docs_headers, security_headers
from api.limits import BodyLimits
from api.routers import config, history, jobs, live, ops, projects, results, tokens, users, webhooks
from api.urls import BaseUrls


def _routers() -> tuple[APIRouter, ...]:
    """Every router, in the order the OpenAPI document lists them."""
    return (
        tokens.router,
        users.users,
        users.profiles,
        projects.router,
        history.router,
        history.tickets,
        jobs.router,
        results.router,
        config.settings_router,
        config.agents_router,
        config.providers_router,
        ops.router,
        live.router,
        webhooks.router,
    )


def _add_layers(
    app: FastAPI, services: Services, cors_origins: list[str] | None, max_body_bytes: int, public_url: str | None
) -> None:
    """The pure ASGI layers, innermost first (the last added is the outermost): form bodies
    become JSON inside the body limit, which still counts every byte of them."""
    app.add_middleware(FormBodies, max_bytes=max_body_bytes)
    app.add_middleware(BodyLimits, max_body_bytes=max_body_bytes, max_upload_bytes=services.max_upload_bytes)
    app.add_middleware(BaseUrls, public_url=public_url, trusted=services.login_guard.trusted)
    app.add_middleware(AuditMiddleware)
    app.add_middleware(ops.RequestMetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(errors.RequestIdMiddleware)
    app.add_middleware(errors.UnhandledErrorMiddleware)
    headers = security_headers(public_url)
    docs = {path: docs_headers(headers) for path in DOCS_PATHS}
    app.add_middleware(SecurityHeadersMiddleware, headers=headers, pages=docs)
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=cors_origins,
            allow_credentials=True,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["Aiorch-Position", "X-Request-ID", "Location"],
        )


def create_app(
    services: Services,
    *,
    cors_origins: list[str] | None = None,
    max_body_bytes: int = 1024 * 1024,
    public_url: str | None = None,
) -> FastAPI:
    """Build the API around ``services`` (built by the composition root in ``infra``);
    request bodies other than uploads are limited to ``max_body_bytes``; absolute URLs in
    answers start with ``public_url`` (default ``services.public_url``) when there is one
    (see api.urls)."""
    public_url = public_url or services.public_url

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if services.hub is not None:
            services.hub.stop()

    app = FastAPIOffline(
        lifespan=lifespan,
        title="aiorch",
        version="0.1.0",
        description="Event-sourced orchestration of AI media jobs (STT, TTS and more). "
        "Log in at POST /api/token/ and send `Authorization: Bearer <access>`.",
        dependencies=[Depends(errors.clean_parameters)],
        # Swagger UI would otherwise send the spec to validator.swagger.io for its badge
        swagger_ui_parameters={"validatorUrl": None},
        generate_unique_id_function=openapi.operation_id,
    )
    app.state.services = services
    app.state.metrics = ops.Metrics(services)
    app.state.metrics.registry.register(webhooks.WebhookCollector(services))
    _add_layers(app, services, cors_origins, max_body_bytes, public_url)
    errors.install(app)
    for router in _routers():
        app.include_router(router)
    openapi.install(app)
    return app
