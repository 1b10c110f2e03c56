"""Where a shopper came from, decided once on landing and passed on with every catalogue call.

UTM parameters win (the catalog derives the channel from them, as for the simulated shoppers). Without
them, a referrer from a search engine or a social network names the channel; anything else is direct.
"""

from __future__ import annotations

from urllib.parse import urlsplit

UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign")
_SEARCH_HOSTS = ("google.", "bing.", "duckduckgo.", "ecosia.", "yahoo.", "qwant.", "baidu.", "yandex.")
_SOCIAL_HOSTS = (
    "facebook.", "instagram.", "twitter.", "x.com", "t.co", "tiktok.", "pinterest.", "linkedin.", "youtube.",
    "reddit.", "mastodon.", "threads.net", "bsky.",
)  # fmt: skip


def attribution(query: dict[str, str], referrer: str | None, own_host: str) -> dict[str, str]:
    """The catalog query fields that carry the acquisition channel (utm_* or an explicit channel)."""
    utm = {k: query[k][:200] for k in UTM_FIELDS if query.get(k)}
    if utm:
        return utm
    host = (urlsplit(referrer).hostname or "").lower() if referrer else ""
    if not host or host == own_host.split(":")[0].lower():
        return {"channel": "direct"}
    bare = host.removeprefix("www.").removeprefix("m.")
    if any(bare.startswith(h) or bare == h.rstrip(".") for h in _SEARCH_HOSTS):
        return {"channel": "search"}
    if any(bare.startswith(h) or bare == h for h in _SOCIAL_HOSTS):
        return {"channel": "social"}
    return {"channel": "direct"}
