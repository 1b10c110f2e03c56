"""Which channel brought the shopper: an explicit parameter wins, else the UTM fields decide."""

from __future__ import annotations

from kasse_contracts.base import Channel

_SOCIAL_SOURCES = {
    "facebook", "instagram", "twitter", "x", "tiktok", "pinterest", "linkedin", "youtube", "reddit", "snapchat",
    "mastodon", "threads", "bluesky",
}  # fmt: skip
_SEARCH_SOURCES = {"google", "bing", "duckduckgo", "ecosia", "yahoo", "qwant", "baidu", "yandex"}
_PAID_MEDIUMS = {"cpc", "ppc", "paid", "paidsearch", "paid_search", "display", "banner", "affiliate", "cpm", "campaign"}


def resolve_channel(
    explicit: Channel | None,
    utm_source: str | None = None,
    utm_medium: str | None = None,
    utm_campaign: str | None = None,
) -> Channel:
    if explicit is not None:
        return explicit
    source = (utm_source or "").strip().lower()
    medium = (utm_medium or "").strip().lower()
    if medium in ("email", "e-mail", "newsletter") or source in ("newsletter", "email"):
        return Channel.EMAIL
    if medium in ("recommendation", "recommendations", "reco"):
        return Channel.RECOMMENDATION
    if medium in _PAID_MEDIUMS or (utm_campaign or "").strip():
        return Channel.CAMPAIGN
    if medium in ("social", "social-network", "social_media", "sm") or source in _SOCIAL_SOURCES:
        return Channel.SOCIAL
    if medium in ("organic", "search") or source in _SEARCH_SOURCES:
        return Channel.SEARCH
    return Channel.DIRECT
