"""The benchmark's yardstick: a bare FastAPI route rendering one static Jinja2 template (no services)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from jinja2 import Environment

TEMPLATE = Environment(autoescape=True).from_string(
    "<!doctype html><html lang=de><head><title>{{ title }}</title></head><body><main><h1>{{ title }}</h1>"
    "{% for i in range(20) %}<p>{{ text }}</p>{% endfor %}</main></body></html>"
)
app = FastAPI()


@app.get("/", response_class=HTMLResponse)
async def page() -> str:
    return TEMPLATE.render(title="Kasse", text="A static paragraph of the bare route.")
