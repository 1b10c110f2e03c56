"""HTTP routes: translate the request, call a use case, translate the answer. Nothing else."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator

from kasse_catalog.application.discovery import Discovery, Shopper
from kasse_catalog.application.ports import RecommendationStrategy, RelationKind
from kasse_catalog.application.products import ProductCatalog
from kasse_catalog.application.reviews import OrderProof, ReviewDraft, Reviews
from kasse_catalog.domain.channel import resolve_channel
from kasse_catalog.domain.review import ReviewSort
from kasse_catalog.domain.search import SearchCriteria, SortOrder
from kasse_catalog.entrypoints.schemas import (
    AdminProductOut,
    BulkImport,
    CategoriesOut,
    CategoryOut,
    ImportResultOut,
    ProductIn,
    ProductOut,
    ProductPatch,
    ProductSummaryOut,
    RatingOut,
    RecommendationOut,
    RecommendationsOut,
    ReviewIn,
    ReviewOut,
    ReviewPageOut,
    SearchResultOut,
    StockAdjustment,
    SubmittedReviewOut,
)
from kasse_catalog.settings import CatalogSettings
from kasse_common.errors import Unprocessable
from kasse_common.http import bearer_guard, problem_responses
from kasse_common.identity import CUSTOMER_TOKEN, CustomerVerifier, customer_of
from kasse_contracts.base import Channel, closed_enum, known_value

SESSION_HEADER = "X-Session-Id"
MAX_AMOUNT = 10**12  # minor units; larger numbers cannot be stored (BSON int64) and mean nothing here


@dataclass(frozen=True)
class CatalogServices:
    """What the routes call; built once by main.create_app."""

    settings: CatalogSettings
    catalog: ProductCatalog
    discovery: Discovery
    reviews: Reviews
    identity: CustomerVerifier
    review_limit: Callable[[Request], None]  # kasse_common.ratelimit, per client IP


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    return problem_responses(*codes, descriptions={404: "Unknown product"})


def with_session(status_code: int, responses: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    """Documents the X-Session-Id response header of the storefront calls that may mint it."""
    header = {"description": "The shopper's session: the one sent, or a new one when none was sent"}
    return {status_code: {"headers": {SESSION_HEADER: {**header, "schema": {"type": "string"}}}}, **responses}


def services(request: Request) -> CatalogServices:
    return request.app.state.catalog  # type: ignore[no-any-return]


Services = Annotated[CatalogServices, Depends(services)]


def review_limit(request: Request) -> None:
    services(request).review_limit(request)


_bearer = HTTPBearer(auto_error=False, description="KASSE_CATALOG_ADMIN_TOKEN")


async def require_admin(
    svc: Services, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    # The token lives in the app's settings, so the kit's guard is built per request (it is cheap).
    await bearer_guard(svc.settings.admin_token, setting="KASSE_CATALOG_ADMIN_TOKEN")(credentials)


SessionHeader = Annotated[str | None, Header(min_length=1, max_length=200, pattern=r"^[\w.:-]+$")]


async def shopper(
    response: Response,
    svc: Services,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(CUSTOMER_TOKEN)],
    x_session_id: SessionHeader = None,
) -> Shopper:
    """The shopper's session from `X-Session-Id` (minted and returned in the header when absent); the
    customer only when proven by a verified customer token (kasse_common.identity), else a guest."""
    session_id = x_session_id or uuid.uuid4().hex
    response.headers[SESSION_HEADER] = session_id
    return Shopper(session_id=session_id, customer_id=await customer_of(svc.identity, credentials))


ShopperDep = Annotated[Shopper, Depends(shopper)]
# Readers keep unknown channels; we publish known ones (and the OpenAPI lists them).
KnownChannel = Annotated[Channel, AfterValidator(known_value), closed_enum(Channel)]
ChannelQuery = Annotated[
    KnownChannel | None,
    Query(description="How the shopper arrived; when omitted it is derived from the utm_* fields"),
]
Utm = Annotated[str | None, Query(max_length=200)]

storefront = APIRouter(prefix="/v1", tags=["storefront"])
admin = APIRouter(
    prefix="/v1/admin", tags=["admin"], dependencies=[Depends(require_admin)], responses=problems(401, 403)
)


@storefront.get(
    "/products",
    response_model=SearchResultOut,
    summary="Search and browse products",
    description=(
        "Free text over name and description (every word must match; case-insensitive), filters, sorting "
        "and pagination in a stable order (ties broken by sku). Publishes ProductSearched."
    ),
    responses=with_session(200, problems(422)),
)
async def search_products(
    svc: Services,
    who: ShopperDep,
    q: Annotated[str, Query(max_length=200, description="Words to find")] = "",
    category: Annotated[str | None, Query(max_length=50)] = None,
    min_price: Annotated[int | None, Query(ge=0, le=MAX_AMOUNT, description="Minor units")] = None,
    max_price: Annotated[int | None, Query(ge=0, le=MAX_AMOUNT, description="Minor units")] = None,
    in_stock: Annotated[bool | None, Query(description="Only products that can be bought now")] = None,
    min_rating: Annotated[float | None, Query(ge=0, le=5)] = None,
    sort: SortOrder = SortOrder.RELEVANCE,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
    channel: ChannelQuery = None,
    utm_source: Utm = None,
    utm_medium: Utm = None,
    utm_campaign: Utm = None,
) -> SearchResultOut:
    if min_price is not None and max_price is not None and min_price > max_price:
        raise Unprocessable(
            "min_price must not be above max_price",
            errors=[{"field": "min_price", "message": "must not be above max_price", "type": "value_error"}],
        )
    criteria = SearchCriteria(
        query=q.strip(),
        category=category,
        min_price=min_price,
        max_price=max_price,
        in_stock=in_stock,
        min_rating=min_rating,
        sort=sort,
        page=page,
        page_size=page_size,
    )
    found = await svc.discovery.search(criteria, who, resolve_channel(channel, utm_source, utm_medium, utm_campaign))
    low = svc.settings.low_stock_threshold
    return SearchResultOut(
        items=[ProductSummaryOut.of(p, low) for p in found.items],
        total=found.total,
        page=page,
        page_size=page_size,
        sort=sort.value,
        query=criteria.query,
    )


@storefront.get("/categories", response_model=CategoriesOut, summary="The categories shoppers can browse")
async def list_categories(svc: Services) -> CategoriesOut:
    found = await svc.discovery.categories()
    return CategoriesOut(items=[CategoryOut(category=name, products=count) for name, count in found])


@storefront.get(
    "/products/{product_ref}",
    response_model=ProductOut,
    summary="A product's detail page (by id or slug)",
    description="Publishes ProductViewed with the session and the channel (explicit `channel` or the utm_* fields).",
    responses=with_session(200, problems(404, 422)),
)
async def view_product(
    svc: Services,
    who: ShopperDep,
    product_ref: str,
    channel: ChannelQuery = None,
    utm_source: Utm = None,
    utm_medium: Utm = None,
    utm_campaign: Utm = None,
    referer: Annotated[str | None, Header(max_length=2000)] = None,
) -> ProductOut:
    product = await svc.discovery.view(
        product_ref,
        who,
        resolve_channel(channel, utm_source, utm_medium, utm_campaign),
        campaign=utm_campaign,
        referrer=referer,
    )
    return ProductOut.of(product, svc.settings.low_stock_threshold)


@storefront.get(
    "/products/{product_ref}/recommendations",
    response_model=RecommendationsOut,
    summary="Products to show with this one",
    description=(
        "Bought together (from orders) and viewed together (from sessions), learned from the event stream; "
        "filled up with popular products of the category."
    ),
    responses=problems(404, 422),
)
async def product_recommendations(
    svc: Services,
    product_ref: str,
    kind: RelationKind | None = None,
    limit: Annotated[int, Query(ge=1, le=50)] = 6,
    x_session_id: SessionHeader = None,
) -> RecommendationsOut:
    # Without an explicit kind the session's strategy decides (an experiment on recommendation_strategy);
    # no session is minted here: a call without one gets the default strategy and no exposure.
    strategy = RecommendationStrategy.BLENDED
    if kind is None and x_session_id:
        strategy = await svc.discovery.strategy(Shopper(session_id=x_session_id))
    found = await svc.discovery.for_product(product_ref, kind, limit, strategy)
    low = svc.settings.low_stock_threshold
    used = kind.value if kind else strategy.value
    return RecommendationsOut(strategy=used, items=[RecommendationOut.of(r, low) for r in found])


@storefront.get(
    "/recommendations",
    response_model=RecommendationsOut,
    summary="Recommendations for the shopper's session (X-Session-Id), from its recent views",
    responses=with_session(200, problems(422)),
)
async def session_recommendations(
    svc: Services, who: ShopperDep, limit: Annotated[int, Query(ge=1, le=50)] = 6
) -> RecommendationsOut:
    strategy = await svc.discovery.strategy(who)
    found = await svc.discovery.for_session(who.session_id, limit, strategy)
    low = svc.settings.low_stock_threshold
    return RecommendationsOut(strategy=strategy.value, items=[RecommendationOut.of(r, low) for r in found])


@storefront.get(
    "/products/{product_ref}/reviews",
    response_model=ReviewPageOut,
    summary="A product's reviews, newest or best first",
    responses=problems(404, 422),
)
async def list_reviews(
    svc: Services,
    product_ref: str,
    sort: ReviewSort = ReviewSort.NEWEST,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=100)] = 10,
) -> ReviewPageOut:
    product, found = await svc.reviews.for_product(product_ref, sort, page, page_size)
    return ReviewPageOut(
        items=[ReviewOut.of(r) for r in found.items],
        total=found.total,
        page=page,
        page_size=page_size,
        sort=sort.value,
        rating=RatingOut(average=product.rating_average, count=product.rating_count),
    )


OrderTokenHeader = Annotated[
    str | None,
    Header(
        min_length=1,
        max_length=200,
        description="The order token cart gave when the order was placed; with `order_id` in the body: the proof",
    ),
]


@storefront.post(
    "/products/{product_ref}/reviews",
    response_model=SubmittedReviewOut,
    status_code=status.HTTP_201_CREATED,
    summary="Submit a review",
    description=(
        "Verified purchase when the order is proven: either `order_id` in the body with its order token in "
        "`X-Order-Token` (a guest's proof: the order must hold the product and be delivered, else 403 or 409 "
        "and nothing is stored), or a delivered order with the product belongs to the customer proven by the "
        "customer token (`Authorization: Bearer <OIDC JWT>`). Without either the review is not verified. "
        "Publishes ReviewSubmitted; the product's rating is updated."
    ),
    responses=with_session(201, problems(401, 403, 404, 409, 413, 422, 429)),
    dependencies=[Depends(review_limit)],
)
async def submit_review(
    svc: Services, who: ShopperDep, product_ref: str, body: ReviewIn, x_order_token: OrderTokenHeader = None
) -> SubmittedReviewOut:
    if (body.order_id is None) != (x_order_token is None):
        field = "header.x-order-token" if x_order_token is None else "order_id"
        message = "an order is proven by its id and its order token together"
        raise Unprocessable(f"{field}: {message}", errors=[{"field": field, "message": message, "type": "missing"}])
    proof = OrderProof(body.order_id, x_order_token) if body.order_id and x_order_token else None
    review, product = await svc.reviews.submit(
        product_ref,
        ReviewDraft(rating=body.rating, title=body.title, text=body.text, author_name=body.author_name),
        customer_id=who.customer_id,
        session_id=who.session_id,
        order=proof,
    )
    return SubmittedReviewOut(
        **ReviewOut.of(review).model_dump(),
        product_rating=RatingOut(average=product.rating_average, count=product.rating_count),
    )


@admin.post(
    "/products",
    response_model=AdminProductOut,
    status_code=status.HTTP_201_CREATED,
    summary="Create a product",
    responses=problems(409, 413, 422),
)
async def create_product(svc: Services, body: ProductIn) -> AdminProductOut:
    product = await svc.catalog.create(body.to_details())
    return AdminProductOut.of(product, svc.settings.low_stock_threshold)


@admin.post(
    "/products/import",
    response_model=ImportResultOut,
    summary="Bulk import (upsert by sku); importing the same data twice changes nothing",
    responses=problems(409, 413, 422),
)
async def import_products(svc: Services, body: BulkImport) -> ImportResultOut:
    result = await svc.catalog.import_products([p.to_details() for p in body.products])
    return ImportResultOut(created=result.created, updated=result.updated, unchanged=result.unchanged)


@admin.get(
    "/products/{product_id}",
    response_model=AdminProductOut,
    summary="A product with its stock",
    responses=problems(404),
)
async def admin_get_product(svc: Services, product_id: str) -> AdminProductOut:
    return AdminProductOut.of(await svc.catalog.get(product_id), svc.settings.low_stock_threshold)


@admin.patch(
    "/products/{product_id}",
    response_model=AdminProductOut,
    summary="Change a product's details, price or availability",
    responses=problems(404, 409, 413, 422),
)
async def update_product(svc: Services, product_id: str, body: ProductPatch) -> AdminProductOut:
    product = await svc.catalog.update(product_id, body.changes())
    return AdminProductOut.of(product, svc.settings.low_stock_threshold)


@admin.post(
    "/products/{product_id}/deactivate",
    response_model=AdminProductOut,
    summary="Take a product off sale",
    responses=problems(404),
)
async def deactivate_product(svc: Services, product_id: str) -> AdminProductOut:
    return AdminProductOut.of(await svc.catalog.deactivate(product_id), svc.settings.low_stock_threshold)


@admin.post(
    "/products/{product_id}/stock",
    response_model=AdminProductOut,
    summary="Adjust stock on hand: a delta (delivery, write-off) or a count",
    responses=problems(404, 409, 422),
)
async def adjust_stock(svc: Services, product_id: str, body: StockAdjustment) -> AdminProductOut:
    product = await svc.catalog.adjust_stock(product_id, delta=body.delta, on_hand=body.on_hand)
    return AdminProductOut.of(product, svc.settings.low_stock_threshold)


routers = [storefront, admin]
