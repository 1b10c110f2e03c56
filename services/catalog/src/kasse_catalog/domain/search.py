"""Search criteria and relevance.

FerretDB v1 has no `$text` index, so free text is matched with case-insensitive regular expressions
(the shopper's words escaped) over name and description, and the relevance of the matching candidates
is computed here, in Python. At catalogue scale (thousands of products) that is cheap and behaves the
same on FerretDB and MongoDB.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

MAX_TOKENS = 8


class SortOrder(StrEnum):
    RELEVANCE = "relevance"
    PRICE_ASC = "price_asc"
    PRICE_DESC = "price_desc"
    NEWEST = "newest"
    RATING = "rating"
    POPULARITY = "popularity"


@dataclass(frozen=True)
class SearchCriteria:
    query: str = ""
    category: str | None = None
    min_price: int | None = None
    max_price: int | None = None
    in_stock: bool | None = None
    min_rating: float | None = None
    sort: SortOrder = SortOrder.RELEVANCE
    page: int = 1
    page_size: int = 20

    @property
    def tokens(self) -> list[str]:
        return tokenize(self.query)

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size


def tokenize(query: str) -> list[str]:
    """Lower-case words of the query, without duplicates, at most MAX_TOKENS."""
    seen: list[str] = []
    for word in re.findall(r"\w[\w'-]*", query.lower()):
        if word not in seen:
            seen.append(word)
    return seen[:MAX_TOKENS]


def stem(token: str) -> str:
    """What a word must contain to match: a plain plural matches its singular and the other way round
    ("headphones" finds "Headphone Stand", "knife" finds "knifes" but not needlessly "kniv…")."""
    if len(token) > 3 and token.endswith("s") and not token.endswith("ss"):
        return token[:-1]
    return token


def relevance(tokens: list[str], name: str, description: str) -> float:
    """Higher is better. Name beats description, whole words beat fragments, the phrase beats words."""
    if not tokens:
        return 0.0
    name_l, desc_l = name.lower(), description.lower()
    score = 0.0
    in_name = 0
    for token in tokens:
        root = stem(token)
        word = re.compile(rf"\b{re.escape(root)}s?\b")
        if root in name_l:
            in_name += 1
        if word.search(name_l):
            score += 10
            if name_l.startswith(root):
                score += 2
        elif root in name_l:
            score += 6
        if word.search(desc_l):
            score += 3 + min(len(word.findall(desc_l)), 3) * 0.5
        elif root in desc_l:
            score += 1.5
    if len(tokens) > 1 and in_name == len(tokens):
        score += 6  # the name alone says everything the shopper asked for
    phrase = " ".join(tokens)
    if len(tokens) > 1 and phrase in name_l:
        score += 8
    elif len(tokens) > 1 and phrase in desc_l:
        score += 3
    return score
