"""German (default) and English with Babel: gettext catalogues for the words, CLDR for money, dates
and plural rules. The catalogues are shipped as .po files and compiled in memory at start."""

from __future__ import annotations

import io
from datetime import date, datetime
from importlib import resources

from babel import Locale
from babel.dates import format_date, format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal, format_percent
from babel.support import NullTranslations, Translations

LOCALES = ("de", "en")
DEFAULT_LOCALE = "de"
# Babel's locale for each shop language: German of Germany, English of the UK (day-month dates).
CLDR = {"de": "de_DE", "en": "en_GB"}


def load_translations(lang: str) -> NullTranslations:
    """The gettext catalogue of a language; the message ids are English, so English needs none."""
    source = resources.files("kasse_storefront") / "locales" / lang / "messages.po"
    if not source.is_file():
        return NullTranslations()
    with source.open("rb") as po:
        catalog = read_po(po, locale=lang)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(buffer)


class Formats:
    """Per-language formatting for templates."""

    def __init__(self, lang: str) -> None:
        self.lang = lang
        self.locale = Locale.parse(CLDR[lang])

    def money(self, amount: int, currency: str = "EUR") -> str:
        return format_currency(amount / 100, currency, locale=self.locale)

    def day(self, value: date | str) -> str:
        """'Donnerstag, 3. Dezember' / 'Thursday, 3 December'."""
        d = date.fromisoformat(value[:10]) if isinstance(value, str) else value
        return format_date(d, "EEEE, d. MMMM" if self.lang == "de" else "EEEE, d MMMM", locale=self.locale)

    def when(self, value: datetime | str) -> str:
        dt = datetime.fromisoformat(value) if isinstance(value, str) else value
        return format_datetime(dt, "medium", locale=self.locale)

    def number(self, value: float, digits: int = 1) -> str:
        return format_decimal(round(value, digits), locale=self.locale)

    def rate(self, basis_points: int) -> str:
        """A VAT rate from basis points: '19 %', '5,5 %' / '19%', '5.5%' (CLDR's percent pattern)."""
        return format_percent(
            basis_points / 10000, "#,##0.##%" if self.lang == "en" else "#,##0.##\xa0%", locale=self.locale
        )


def negotiate(accept_language: str | None) -> str:
    """The first supported language of an Accept-Language header, else German."""
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()[:2]
        if tag in LOCALES:
            return tag
    return DEFAULT_LOCALE
