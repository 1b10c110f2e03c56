"""The storefront's composition root: pooled clients to the services, pages, session and headers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib import resources

import httpx
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from starlette.middleware.gzip import GZipMiddleware
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
from kasse_storefront.entrypoints.web import Assets, Renderer, Visit, build_environments
from kasse_storefront.settings import StorefrontSettings

log = logging.getLogger(__name__)


def content_security_policy(stripe_origin: str | None, style_hash: str = "") -> str:
    """No inline script anywhere; the one inline style sheet only by its hash; Stripe's script and frames
    (from `stripe_origin`, js.stripe.com unless a stand-in is configured) only on the payment page that
    uses them."""
    script = "'self'" + (f" {stripe_origin}" if stripe_origin else "")
    frames = f"{stripe_origin} https://hooks.stripe.com" if stripe_origin else "'none'"
    connect = "'self'" + (f" https://api.stripe.com {stripe_origin}" if stripe_origin else "")
    style = f"'self' {style_hash}".strip()
    return (
        f"default-src 'self'; script-src {script}; style-src {style}; img-src 'self' data:; font-src 'self'; "
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
        cache_ttl_s=settings.cache_ttl_s,
        cache_max_entries=settings.cache_max_entries,
    )
    assets = Assets()
    render = Renderer(build_environments(assets), test_payments=settings.test_payments)
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
            categories=shop.nav.peek("categories") or [],
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
        h["Content-Security-Policy"] = content_security_policy(
            settings.stripe_js_origin if stripe else None, assets.style_hash
        )
        h["X-Content-Type-Options"] = "nosniff"
        h["Referrer-Policy"] = "strict-origin-when-cross-origin"
        h["X-Frame-Options"] = "DENY"
        h["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
        if settings.behind_tls:
            h["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
        if response.headers.get("content-type", "").startswith("text/html"):
            h["Cache-Control"] = "no-store"  # pages carry the shopper's cart and CSRF token
        elif request.url.path.startswith("/static/") and response.status_code == 200:
            # Pages link fingerprinted URLs (?v=<content hash>): those never change. Others briefly.
            current = assets.is_current(request.url.path.removeprefix("/static/"), request.query_params.get("v"))
            h["Cache-Control"] = "public, max-age=31536000, immutable" if current else "public, max-age=300"
        return response

    # Pages, style and script compressed for the shopper's (often mobile) connection; images are SVG
    # text too. Level 6: most of the gain for a fraction of level 9's CPU.
    app.add_middleware(GZipMiddleware, minimum_size=800, compresslevel=6)

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


def app_with_experiments(settings: StorefrontSettings) -> FastAPI:
    if not settings.experiments_enabled:
        return create_app(settings)
    # Experiments on the shop's layout, as the cart runs its own: definitions from ExperimentChanged
    # into the storefront's `experiments` collection, exposures recorded once per session (outbox).
    runtime = ServiceRuntime(settings, configure_logs=False)
    book = ExperimentBook(runtime.db["experiments"], runtime.encode, runtime.standalone_events.add)
    runtime.consumer.on(ExperimentChanged, book.apply)
    runtime.produces(ExperimentExposed)
    return create_app(settings, experiments=book, runtime=runtime)


def worker_app() -> FastAPI:
    """Each uvicorn worker process's app (KASSE_STOREFRONT_WORKERS > 1): settings, logging and runtime of
    its own — to the experiments it is one more replica (the book is read from the store)."""
    settings = StorefrontSettings()
    configure_logging(settings.service_name, settings.log_level, settings.log_json)
    return app_with_experiments(settings)


def run() -> None:
    settings = StorefrontSettings()
    configure_logging(settings.service_name, settings.log_level, settings.log_json)
    if settings.workers == 1:
        serve(app_with_experiments(settings), settings)
        return
    # Rendering is CPU work: several processes share the port where there are cores for them. As the
    # kit's serve(): uvicorn's proxy-header handling off (the app applies KASSE_TRUSTED_PROXIES).
    uvicorn.run(
        "kasse_storefront.main:worker_app",
        factory=True,
        workers=settings.workers,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        proxy_headers=False,
        forwarded_allow_ips="",
    )
