"""The storefront's composition root: pooled clients to the services, pages, session and headers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib import resources

import httpx
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from starlette.middleware.sessions import SessionMiddleware

from kasse_common.experiments import ExperimentBook
from kasse_common.http import trust_proxies
from kasse_common.logs import configure_logging
from kasse_common.runtime import ServiceRuntime, serve
from kasse_contracts.events import ExperimentChanged, ExperimentExposed
from kasse_storefront.adapters.backends import Backends
from kasse_storefront.adapters.experiments import Assigner, Layouts
from kasse_storefront.application.storefront import Storefront
from kasse_storefront.entrypoints.pages import build_router
from kasse_storefront.entrypoints.web import Renderer, Visit, build_environments
from kasse_storefront.settings import StorefrontSettings

log = logging.getLogger(__name__)


def content_security_policy(stripe_origin: str | None) -> str:
    """No inline script anywhere; Stripe's script and frames (from `stripe_origin`, js.stripe.com unless a
    stand-in is configured) only on the payment page that uses them."""
    script = "'self'" + (f" {stripe_origin}" if stripe_origin else "")
    frames = f"{stripe_origin} https://hooks.stripe.com" if stripe_origin else "'none'"
    connect = "'self'" + (f" https://api.stripe.com {stripe_origin}" if stripe_origin else "")
    return (
        f"default-src 'self'; script-src {script}; style-src 'self'; img-src 'self' data:; font-src 'self'; "
        f"connect-src {connect}; frame-src {frames}; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    )


def create_app(
    settings: StorefrontSettings | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    experiments: Assigner | None = None,
    runtime: ServiceRuntime | None = None,
) -> FastAPI:
    """`experiments` assigns layout variants (none: everyone sees the control layout); `runtime` is
    started and stopped with the app (its broker and store serve the experiments)."""
    settings = settings or StorefrontSettings()
    backends = Backends(
        catalog=settings.catalog_url,
        cart=settings.cart_url,
        payment=settings.payment_url,
        shipping=settings.shipping_url,
        timeout_s=settings.backend_timeout_s,
        pool=settings.backend_max_connections,
        transport=transport,
    )
    shop = Storefront(
        backends,
        optional_timeout_s=settings.optional_timeout_s,
        country=settings.default_country,
        page_size=settings.page_size,
    )
    render = Renderer(build_environments(), test_payments=settings.test_payments)
    layouts = Layouts(experiments, settings.experiment_timeout_s)
    registry = CollectorRegistry()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.is_development:
            log.warning(
                "storefront runs in the development profile",
                extra={
                    "test_payments": settings.test_payments,
                    "session_secret_set": settings.session_secret is not None,
                },
            )
        if runtime is not None:
            await runtime.start()
        try:
            yield
        finally:
            if runtime is not None:
                await runtime.stop()
            await backends.close()

    app = FastAPI(title="Kasse storefront", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(build_router(settings, shop, render, layouts))
    trust_proxies(app, settings.trusted_proxy_list)  # the ingress in front of the shop (KASSE_TRUSTED_PROXIES)
    static = resources.files("kasse_storefront") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        reason = {404: "not_found", 403: "forbidden"}.get(exc.status_code, "bad_request")
        if "session" not in request.scope:
            return HTMLResponse(str(exc.detail), status_code=exc.status_code)
        return render.page(
            Visit(request),
            "error.html",
            exc.status_code,
            categories=render.cached_categories() or [],
            reason=reason,
            detail=exc.detail,
        )

    pages_served = Counter(
        "kasse_storefront_responses", "Responses by route and status class", ["route", "status"], registry=registry
    )
    backend_failures = Counter(
        "kasse_storefront_degraded_blocks", "Page blocks shown without their service", registry=registry
    )
    shop.on_degraded = backend_failures.inc

    @app.get("/metrics", include_in_schema=False)
    async def prometheus(request: Request) -> Response:
        # Scraped from inside the cluster, straight at the pod. Through the public ingress (which adds
        # X-Forwarded-For) there is nothing to see: the shop's host routes every path here.
        if "x-forwarded-for" in request.headers or "forwarded" in request.headers:
            raise HTTPException(404, "Not found")
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", extra={"path": request.url.path})
        return HTMLResponse(
            "<!doctype html><html lang=de><title>Kasse</title><h1>Fehler / Error</h1>"
            '<p><a href="/">Kasse</a></p></html>',
            status_code=500,
        )

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        route = request.scope.get("route")
        pages_served.labels(getattr(route, "path", "unmatched"), f"{response.status_code // 100}xx").inc()
        h = response.headers
        stripe = getattr(request.state, "stripe", False)
        h["Content-Security-Policy"] = content_security_policy(settings.stripe_js_origin if stripe else None)
        h["X-Content-Type-Options"] = "nosniff"
        h["Referrer-Policy"] = "strict-origin-when-cross-origin"
        h["X-Frame-Options"] = "DENY"
        h["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
        if settings.behind_tls:
            h["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
        if response.headers.get("content-type", "").startswith("text/html"):
            h["Cache-Control"] = "no-store"  # pages carry the shopper's cart and CSRF token
        return response

    # Outermost: the signed, HttpOnly, SameSite=Lax cookie (Secure behind TLS) the handlers read.
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.effective_session_secret,
        session_cookie="kasse_session",
        max_age=settings.session_max_age_s,
        same_site="lax",
        https_only=settings.behind_tls,
    )
    return app


def run() -> None:
    settings = StorefrontSettings()
    configure_logging(settings.service_name, settings.log_level, settings.log_json)
    if not settings.experiments_enabled:
        serve(create_app(settings), settings)
        return
    # Experiments on the shop's layout, as the cart runs its own: definitions from ExperimentChanged
    # into the storefront's `experiments` collection, exposures recorded once per session (outbox).
    runtime = ServiceRuntime(settings, configure_logs=False)
    book = ExperimentBook(runtime.db["experiments"], runtime.encode, runtime.standalone_events.add)
    runtime.consumer.on(ExperimentChanged, book.apply)
    runtime.produces(ExperimentExposed)
    serve(create_app(settings, experiments=book, runtime=runtime), settings)
