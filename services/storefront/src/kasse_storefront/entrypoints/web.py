"""The web plumbing every page shares: the session, CSRF, the shopper, rendering and headers."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from importlib import resources
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from kasse_storefront.adapters.backends import Shopper
from kasse_storefront.adapters.i18n import DEFAULT_LOCALE, LOCALES, Formats, load_translations
from kasse_storefront.domain.attribution import attribution
from kasse_storefront.domain.images import WIDTHS, sized

CSRF_FIELD = "csrf"


class Assets:
    """The shop's static files, fingerprinted: pages link `/static/<name>?v=<hash of the content>`, so a
    browser may keep them for a year (a changed file gets a new URL). The style sheet is small (5 kB) and
    every page needs it before the first paint: it is inlined into the page instead of a render-blocking
    request, allowed by its hash in the Content-Security-Policy (no 'unsafe-inline')."""

    def __init__(self) -> None:
        static = resources.files("kasse_storefront") / "static"
        self.versions = {
            f.name: hashlib.sha256(f.read_bytes()).hexdigest()[:12] for f in static.iterdir() if f.is_file()
        }
        css = (static / "shop.css").read_text(encoding="utf-8")
        self.inline_css = Markup(css)  # our own file, put verbatim between <style> tags
        self.style_hash = "'sha256-" + base64.b64encode(hashlib.sha256(css.encode()).digest()).decode() + "'"

    def url(self, name: str) -> str:
        return f"/static/{name}?v={self.versions[name]}"

    def is_current(self, name: str, version: str | None) -> bool:
        return version is not None and self.versions.get(name) == version


def build_environments(assets: Assets | None = None) -> dict[str, Environment]:
    assets = assets or Assets()
    envs = {}
    for lang in LOCALES:
        env = Environment(
            loader=PackageLoader("kasse_storefront", "templates"),
            autoescape=select_autoescape(["html"]),
            extensions=["jinja2.ext.i18n"],
            trim_blocks=True,
            lstrip_blocks=True,
            # Templates ship with the package and never change while it runs: no file checks per render.
            auto_reload=False,
        )
        env.install_gettext_translations(load_translations(lang), newstyle=True)  # type: ignore[attr-defined]
        fmt = Formats(lang)
        env.globals.update(fmt=fmt, lang=lang, widths=WIDTHS, asset=assets.url, inline_css=assets.inline_css)
        env.filters["sized"] = sized
        envs[lang] = env
    return envs


@dataclass
class Visit:
    """The request's view of the signed session cookie."""

    request: Request

    @property
    def session(self) -> dict[str, Any]:
        return self.request.session

    @property
    def session_id(self) -> str:
        sid = self.session.get("sid")
        if not sid:
            sid = self.session["sid"] = secrets.token_hex(16)
        return str(sid)

    @property
    def shopper(self) -> Shopper:
        # The shopper's address as the server saw it (uvicorn resolves X-Forwarded-For only from the
        # proxies it trusts), forwarded to the services we call on the shopper's behalf.
        client = self.request.client
        return Shopper(self.session_id, client.host if client else None)

    @property
    def lang(self) -> str:
        lang = self.session.get("lang")
        return lang if lang in LOCALES else DEFAULT_LOCALE

    @property
    def csrf(self) -> str:
        token = self.session.get(CSRF_FIELD)
        if not token:
            token = self.session[CSRF_FIELD] = secrets.token_urlsafe(24)
        return str(token)

    def channel(self) -> dict[str, str]:
        """The acquisition channel, decided on the first page of the visit (and on a new UTM landing)."""
        query = dict(self.request.query_params)
        if "chan" not in self.session or any(k.startswith("utm_") for k in query):
            self.session["chan"] = attribution(
                query, self.request.headers.get("referer"), self.request.headers.get("host", "")
            )
        return dict(self.session["chan"])

    # -- cart and orders --------------------------------------------------------------------------
    @property
    def cart(self) -> tuple[str, str] | None:
        value = self.session.get("cart")
        return (value[0], value[1]) if value else None

    def set_cart(self, cart_id: str, token: str) -> None:
        self.session["cart"] = [cart_id, token]
        self.session["order_key"] = secrets.token_hex(16)
        self.session["n"] = 0

    def forget_cart(self) -> None:
        self.session.pop("cart", None)
        self.session.pop("order_key", None)
        self.session["n"] = 0

    def order_token(self, order_id: str) -> str:
        token = (self.session.get("orders") or {}).get(order_id)
        if not token:
            raise HTTPException(404, "unknown order")
        return str(token)

    def known_order(self, order_id: str | None) -> tuple[str, str] | None:
        """(order id, token) when this session placed that order (it holds the token), else None."""
        token = (self.session.get("orders") or {}).get(order_id) if order_id else None
        return (str(order_id), str(token)) if token else None

    def remember_order(self, order_id: str, token: str) -> None:
        orders = dict(self.session.get("orders") or {})
        orders[order_id] = token
        # Bounded: the cookie must stay small; the oldest orders fall out.
        self.session["orders"] = dict(list(orders.items())[-8:])

    def flash(self, kind: str, message: str) -> None:
        self.session["flash"] = [kind, message]

    def take_flash(self) -> tuple[str, str] | None:
        value = self.session.pop("flash", None)
        return (value[0], value[1]) if value else None


async def checked_form(request: Request) -> dict[str, str]:
    """The posted form, after its CSRF token was checked against the session's."""
    form = await request.form()
    sent = form.get(CSRF_FIELD)
    expected = request.session.get(CSRF_FIELD)
    if not isinstance(sent, str) or not expected or not secrets.compare_digest(sent, expected):
        raise HTTPException(403, "The form expired or was not sent from this shop; reload the page and try again.")
    return {k: v for k, v in form.items() if isinstance(v, str)}


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def safe_next(url: str | None) -> str:
    """Only paths of this shop (no `//host`): a redirect target a link can carry."""
    if url and url.startswith("/") and not url.startswith("//") and "\\" not in url:
        return url
    return "/"


class Renderer:
    def __init__(self, envs: dict[str, Environment], test_payments: bool) -> None:
        self.envs = envs
        self.test_payments = test_payments

    def page(
        self, visit: Visit, template: str, status: int = 200, *, categories: list[dict[str, Any]], **context: Any
    ) -> HTMLResponse:
        env = self.envs[visit.lang]
        html = env.get_template(template).render(
            csrf=visit.csrf,
            csrf_field=CSRF_FIELD,
            cart_count=visit.session.get("n", 0),
            categories=categories,
            path=visit.request.url.path,
            full_path=str(visit.request.url.path)
            + (("?" + visit.request.url.query) if visit.request.url.query else ""),
            flash=visit.take_flash(),
            test_payments=self.test_payments,
            **context,
        )
        return HTMLResponse(html, status_code=status)
