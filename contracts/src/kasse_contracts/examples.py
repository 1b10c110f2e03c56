"""One realistic, valid example payload per event.

Data only. Used by the generator (JSON Schema `examples`, AsyncAPI message `examples`) and by
the tests; subscribers may use them as fixtures (`EXAMPLES[OrderPlaced]`). Importing this module
validates every example against its model, so an example can never drift from its contract.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from kasse_contracts.base import Channel, Event, Money
from kasse_contracts.events import (
    ALL_EVENTS,
    Address,
    CancellationReason,
    CancellationRefused,
    CartAbandoned,
    CartAction,
    CartUpdated,
    CheckoutStarted,
    DiscountLine,
    ExperimentChanged,
    ExperimentExposed,
    ExperimentMetric,
    ExperimentParameter,
    ExperimentStatus,
    GuardrailMetric,
    ItemCondition,
    LineItem,
    MethodKind,
    OrderCancelled,
    OrderPlaced,
    PaymentCaptured,
    PaymentFailed,
    PaymentRefunded,
    PriceBand,
    ProductChanged,
    ProductChangeKind,
    ProductSearched,
    ProductViewed,
    RejectedLine,
    ReturnLine,
    ReturnReason,
    ReturnReceived,
    ReturnRequested,
    ReviewSubmitted,
    SearchFilters,
    ShipmentCancelled,
    ShipmentCreated,
    ShipmentDelivered,
    ShipmentDispatched,
    ShippingMethod,
    ShippingMethodsPublished,
    ShippingRate,
    ShippingSelection,
    StockLine,
    StockRejected,
    StockReserved,
    Variant,
    WebhookEndpointDisabled,
    WebhookEndpointEnabled,
)
from kasse_contracts.events.common import VatRateLine
from kasse_contracts.events.payments import CreditNoteIssued, InvoiceIssued, InvoiceTotals


def _t(day: int, hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, second, tzinfo=UTC)


def _eur(amount: int) -> Money:
    return Money(amount=amount, currency="EUR")


SESSION = "sess_8f3a2c91"
CUSTOMER = "cus_10482"
CART = "cart_5d7e0b"
ORDER = "ord_2026_000318"
PAYMENT_INTENT = "pi_3QxY7dLkdIwHu7ix0d2Uo1A3"

_MUG = LineItem(
    product_id="prod_mug_stoneware",
    sku="MUG-STN-350-GRY",
    name="Stoneware mug 350 ml, grey",
    category="kitchen/mugs",
    quantity=2,
    unit_price=_eur(1490),
    line_total=_eur(2980),
)
_TEAPOT = LineItem(
    product_id="prod_teapot_cast_iron",
    sku="TPT-CI-900-BLK",
    name="Cast-iron teapot 0.9 l",
    category="kitchen/teapots",
    quantity=1,
    unit_price=_eur(4900),
    line_total=_eur(4900),
)
_COUPON = DiscountLine(code="WINTER10", description="10% off kitchen", amount=_eur(788), applies_to="items")
_STANDARD = ShippingSelection(
    method_id="dhl-standard",
    name="Standard delivery",
    carrier="DHL",
    price=_eur(495),
    promised_from=date(2026, 11, 24),
    promised_to=date(2026, 11, 26),
)

_EXAMPLES: tuple[Event, ...] = (
    ProductViewed(
        occurred_at=_t(20, 9, 14, 3),
        session_id=SESSION,
        customer_id=CUSTOMER,
        product_id="prod_teapot_cast_iron",
        sku="TPT-CI-900-BLK",
        category="kitchen/teapots",
        price=_eur(4900),
        channel=Channel.CAMPAIGN,
        campaign="winter-tea-2026",
        referrer="https://newsletter.example.com/",
    ),
    ProductSearched(
        occurred_at=_t(20, 9, 12, 40),
        session_id=SESSION,
        customer_id=CUSTOMER,
        query="teapot",
        filters=SearchFilters(category="kitchen/teapots", max_price=6000, in_stock=True, min_rating=4.0),
        sort="relevance",
        page=1,
        result_count=14,
        product_ids=["prod_teapot_cast_iron", "prod_teapot_glass", "prod_teapot_porcelain"],
        channel=Channel.SEARCH,
    ),
    ProductChanged(
        occurred_at=_t(19, 16, 0),
        product_id="prod_teapot_cast_iron",
        sku="TPT-CI-900-BLK",
        name="Cast-iron teapot 0.9 l",
        category="kitchen/teapots",
        image_url="https://cdn.example.com/img/TPT-CI-900-BLK.jpg",
        price=_eur(4900),
        compare_at_price=_eur(5900),
        stock_available=37,
        active=True,
        changes=[ProductChangeKind.PRICE],
        revision=12,
    ),
    ReviewSubmitted(
        occurred_at=_t(21, 18, 30),
        product_id="prod_mug_stoneware",
        review_id="rev_77120",
        rating=5,
        verified_purchase=True,
        customer_id=CUSTOMER,
        session_id="sess_a01b44",
        rating_average=4.6,
        rating_count=128,
    ),
    StockReserved(
        occurred_at=_t(20, 9, 31, 2),
        session_id=SESSION,
        customer_id=CUSTOMER,
        order_id=ORDER,
        lines=[
            StockLine(product_id="prod_mug_stoneware", sku="MUG-STN-350-GRY", quantity=2),
            StockLine(product_id="prod_teapot_cast_iron", sku="TPT-CI-900-BLK", quantity=1),
        ],
    ),
    StockRejected(
        occurred_at=_t(20, 9, 31, 2),
        session_id=SESSION,
        customer_id=CUSTOMER,
        order_id="ord_2026_000319",
        rejected_lines=[
            RejectedLine(product_id="prod_teapot_cast_iron", sku="TPT-CI-900-BLK", requested=3, available=1)
        ],
    ),
    CartUpdated(
        occurred_at=_t(20, 9, 15, 21),
        session_id=SESSION,
        customer_id=CUSTOMER,
        cart_id=CART,
        action=CartAction.ADDED,
        line=_TEAPOT,
        quantity_delta=1,
        items=[_MUG, _TEAPOT],
        coupon_codes=["WINTER10"],
        subtotal=_eur(7880),
        discounts=[_COUPON],
        total=_eur(7092),
    ),
    CartAbandoned(
        occurred_at=_t(21, 9, 15, 21),
        session_id="sess_c4d19e",
        cart_id="cart_91aa3f",
        item_count=1,
        subtotal=_eur(1490),
        last_activity_at=_t(20, 9, 15, 21),
    ),
    CheckoutStarted(
        occurred_at=_t(20, 9, 27, 5),
        session_id=SESSION,
        customer_id=CUSTOMER,
        cart_id=CART,
        items=[_MUG, _TEAPOT],
        coupon_codes=["WINTER10"],
        subtotal=_eur(7880),
        total=_eur(7092),
    ),
    OrderPlaced(
        occurred_at=_t(20, 9, 31, 0),
        session_id=SESSION,
        customer_id=CUSTOMER,
        order_id=ORDER,
        cart_id=CART,
        email="mara.schulz@example.com",
        lines=[_MUG, _TEAPOT],
        discounts=[_COUPON],
        coupon_codes=["WINTER10"],
        shipping=_STANDARD,
        shipping_address=Address(
            name="Mara Schulz",
            line1="Lindenstraße 12",
            postal_code="10969",
            city="Berlin",
            country="DE",
        ),
        billing_country="DE",
        subtotal=_eur(7880),
        discount_total=_eur(788),
        shipping_total=_eur(495),
        total=_eur(7587),
        channel=Channel.CAMPAIGN,
        client_ip="203.0.113.24",
    ),
    OrderCancelled(
        occurred_at=_t(20, 9, 33, 40),
        session_id=SESSION,
        customer_id=CUSTOMER,
        order_id="ord_2026_000319",
        reason=CancellationReason.STOCK_REJECTED,
        detail="TPT-CI-900-BLK: 3 requested, 1 available",
        was_paid=False,
        total=_eur(15192),
    ),
    PaymentCaptured(
        occurred_at=_t(20, 9, 31, 48),
        session_id=SESSION,
        customer_id=CUSTOMER,
        order_id=ORDER,
        payment_intent_id=PAYMENT_INTENT,
        amount=_eur(7587),
    ),
    PaymentFailed(
        occurred_at=_t(20, 11, 2, 10),
        session_id="sess_e2f871",
        order_id="ord_2026_000322",
        payment_intent_id="pi_3QxZ1aLkdIwHu7ix1b9Qm4Rt",
        reason="card_declined",
        decline_code="insufficient_funds",
        message="Your card has insufficient funds.",
        amount=_eur(2980),
    ),
    PaymentRefunded(
        occurred_at=_t(27, 14, 5, 0),
        session_id=SESSION,
        customer_id=CUSTOMER,
        order_id=ORDER,
        refund_id="re_3QyA2bLkdIwHu7ix0c1Lp9Xz",
        payment_intent_id=PAYMENT_INTENT,
        amount=_eur(1341),
        total_refunded=_eur(1341),
        full=False,
        reason="return",
    ),
    ShippingMethodsPublished(
        occurred_at=_t(1, 6, 0),
        rate_table_id="default",
        revision=7,
        origin_country="DE",
        origin_timezone="Europe/Berlin",
        cutoff_local_time="14:00",
        holidays=[date(2026, 12, 25), date(2026, 12, 26), date(2027, 1, 1)],
        methods=[
            ShippingMethod(
                method_id="dhl-standard",
                name="Standard delivery",
                kind=MethodKind.STANDARD,
                carrier="DHL",
                rates=[
                    ShippingRate(
                        zone="domestic",
                        countries=["DE"],
                        currency="EUR",
                        price_bands=[PriceBand(min_subtotal=0, price=495), PriceBand(min_subtotal=5000, price=0)],
                        per_kg=0,
                        free_shipping_threshold=5000,
                        min_business_days=1,
                        max_business_days=3,
                    ),
                    ShippingRate(
                        zone="eu",
                        countries=["AT", "FR", "NL"],
                        currency="EUR",
                        price_bands=[PriceBand(min_subtotal=0, price=995)],
                        per_kg=150,
                        min_business_days=3,
                        max_business_days=6,
                    ),
                ],
            ),
            ShippingMethod(
                method_id="ups-express",
                name="Express delivery",
                kind=MethodKind.EXPRESS,
                carrier="UPS",
                rates=[
                    ShippingRate(
                        zone="domestic",
                        countries=["DE"],
                        currency="EUR",
                        price_bands=[PriceBand(min_subtotal=0, price=1490)],
                        min_business_days=1,
                        max_business_days=1,
                    )
                ],
            ),
        ],
    ),
    ShipmentCreated(
        occurred_at=_t(20, 10, 2, 0),
        session_id=SESSION,
        customer_id=CUSTOMER,
        order_id=ORDER,
        shipment_id="shp_40017",
        method_id="dhl-standard",
        carrier="DHL",
        tracking_number="00340434161094042557",
        tracking_url="https://www.dhl.de/en/privatkunden/pakete-empfangen/verfolgen.html?piececode=00340434161094042557",
        promised_delivery_date=date(2026, 11, 25),
    ),
    ShipmentDispatched(
        occurred_at=_t(20, 15, 40, 0),
        session_id=SESSION,
        customer_id=CUSTOMER,
        order_id=ORDER,
        shipment_id="shp_40017",
        carrier="DHL",
        tracking_number="00340434161094042557",
        dispatched_at=_t(20, 15, 38, 12),
    ),
    ShipmentDelivered(
        occurred_at=_t(23, 11, 5, 0),
        session_id=SESSION,
        customer_id=CUSTOMER,
        order_id=ORDER,
        shipment_id="shp_40017",
        delivered_at=_t(23, 11, 2, 47),
    ),
    ReturnRequested(
        occurred_at=_t(24, 19, 20, 0),
        session_id="sess_f0a233",
        customer_id=CUSTOMER,
        order_id=ORDER,
        return_id="ret_5521",
        lines=[
            ReturnLine(product_id="prod_mug_stoneware", sku="MUG-STN-350-GRY", quantity=1, refund_amount=_eur(1341))
        ],
        reason=ReturnReason.DAMAGED,
        comment="Handle chipped on arrival",
        label_reference="DHL-RET-7781920",
        refund_amount=_eur(1341),
    ),
    ReturnReceived(
        occurred_at=_t(27, 14, 0, 0),
        session_id="sess_f0a233",
        customer_id=CUSTOMER,
        order_id=ORDER,
        return_id="ret_5521",
        lines=[
            ReturnLine(
                product_id="prod_mug_stoneware",
                sku="MUG-STN-350-GRY",
                quantity=1,
                refund_amount=_eur(1341),
                condition=ItemCondition.RESELLABLE,
            )
        ],
        refund_amount=_eur(1341),
    ),
    ShipmentCancelled(
        occurred_at=_t(22, 18, 2, 0),
        session_id=SESSION,
        customer_id=CUSTOMER,
        order_id="ord_7f3a9c5511",
        shipment_id="shp_40018",
        reason="customer_request",
    ),
    CancellationRefused(
        occurred_at=_t(23, 9, 30, 0),
        session_id=SESSION,
        customer_id=CUSTOMER,
        order_id=ORDER,
        shipment_id="shp_40017",
        reason="already_dispatched",
        dispatched_at=_t(23, 8, 15, 0),
    ),
    ExperimentChanged(
        occurred_at=_t(20, 9, 0),
        experiment_id="exp_free_shipping_35",
        revision=2,
        name="Free shipping from 35 EUR",
        hypothesis="A lower free-shipping threshold turns more carts into paid orders",
        parameter=ExperimentParameter.FREE_SHIPPING_THRESHOLD,
        variants=[Variant(name="control", weight=50, value="5000"), Variant(name="low", weight=50, value="3500")],
        primary_metric=ExperimentMetric.CONVERSION_RATE,
        guardrails=[GuardrailMetric.PAYMENT_FAILURE_RATE, GuardrailMetric.REFUND_RATE],
        status=ExperimentStatus.RUNNING,
        baseline=0.1,
        minimum_detectable_effect=0.2,
        started_at=_t(20, 9, 0),
    ),
    ExperimentExposed(
        occurred_at=_t(20, 9, 30, 12),
        session_id="sess_f0a233",
        customer_id=CUSTOMER,
        experiment_id="exp_free_shipping_35",
        revision=2,
        variant="low",
        parameter=ExperimentParameter.FREE_SHIPPING_THRESHOLD,
    ),
    InvoiceIssued(
        occurred_at=_t(20, 11, 2, 30),
        order_id=ORDER,
        invoice_number="RE-2026-000318",
        issued_on=date(2026, 11, 20),
        delivery_from=date(2026, 11, 23),
        delivery_to=date(2026, 11, 24),
        country="DE",
        totals=InvoiceTotals(
            rates=[
                VatRateLine(
                    rate_basis_points=1900,
                    goods_gross=_eur(2980),
                    discount=_eur(0),
                    shipping=_eur(495),
                    gross=_eur(3475),
                    net=_eur(2920),
                    vat=_eur(555),
                )
            ],
            net_total=_eur(2920),
            vat_total=_eur(555),
            gross_total=_eur(3475),
        ),
    ),
    CreditNoteIssued(
        occurred_at=_t(27, 14, 5, 30),
        order_id=ORDER,
        credit_note_number="GS-2026-000012",
        invoice_number="RE-2026-000318",
        refund_id="re_3QyA2bLkdIwHu7ix0c1Lp9Xz",
        issued_on=date(2026, 11, 27),
        totals=InvoiceTotals(
            rates=[
                VatRateLine(
                    rate_basis_points=1900,
                    goods_gross=_eur(1341),
                    discount=_eur(0),
                    shipping=_eur(0),
                    gross=_eur(1341),
                    net=_eur(1127),
                    vat=_eur(214),
                )
            ],
            net_total=_eur(1127),
            vat_total=_eur(214),
            gross_total=_eur(1341),
        ),
    ),
    WebhookEndpointDisabled(
        occurred_at=_t(24, 7, 41, 3),
        endpoint_id="whe_3c9d1f0a7b",
        url_host="erp.example.com",
        reason="delivery dlv_8e21 (io.kasse.cart.OrderPlaced.v1) failed 11 times over 22:30:00; last: 503",
        delivery_id="dlv_8e21",
        failed_event_type="io.kasse.cart.OrderPlaced.v1",
        attempts=11,
        last_status_code=503,
        failing_since=_t(23, 9, 11, 2),
    ),
    WebhookEndpointEnabled(
        occurred_at=_t(24, 9, 15, 0),
        endpoint_id="whe_3c9d1f0a7b",
        url_host="erp.example.com",
        disabled_at=_t(24, 7, 41, 3),
    ),
)

EXAMPLES: dict[type[Event], Event] = {type(e): e for e in _EXAMPLES}
"""One example per event class, in `ALL_EVENTS` order."""

EXAMPLES = {cls: EXAMPLES[cls] for cls in ALL_EVENTS}  # KeyError here = an event without an example
