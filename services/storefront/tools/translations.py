"""The shop's message catalogues, written as .po files (src/kasse_storefront/locales/<lang>/messages.po).

    uv run python services/storefront/tools/translations.py

Message ids are English text, or a key (status_placed) where the words depend on a value; English
needs entries only for the keys. Translators may edit the .po files directly; this script is how they
were first made and how a new message is added to both.
"""

from __future__ import annotations

from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.pofile import write_po

OUT = Path(__file__).resolve().parents[1] / "src" / "kasse_storefront" / "locales"

# msgid -> (German, English or None when the id is the English text)
MESSAGES: dict[str, tuple[str, str | None]] = {
    "%(amount)s more for free shipping.": ("Noch %(amount)s bis zum kostenlosen Versand.", None),
    "%(avg)s of 5 stars": ("%(avg)s von 5 Sternen", None),
    "%(n)s stars and more": ("ab %(n)s Sternen", None),
    "%(name)s is no longer available in this quantity.": ("%(name)s ist in dieser Menge nicht mehr verfügbar.", None),
    "%(pct)s percent": ("%(pct)s Prozent", None),
    "About your order %(id)s: marked as a verified purchase.": (
        "Zu Ihrer Bestellung %(id)s: wird als verifizierter Kauf markiert.",
        None,
    ),
    "Add to cart": ("In den Warenkorb", None),
    "Added to your cart.": ("In den Warenkorb gelegt.", None),
    "Address line 2": ("Adresszusatz", None),
    "All": ("Alle", None),
    "All products": ("Alle Produkte", None),
    "Any": ("Alle", None),
    "Apply": ("Anwenden", None),
    "Back to the shop": ("Zurück zum Shop", None),
    "Bought together": ("Wird oft zusammen gekauft", None),
    "Browse the shop": ("Im Shop stöbern", None),
    "Cancel order": ("Bestellung stornieren", None),
    "Cart": ("Warenkorb", None),
    "Categories": ("Kategorien", None),
    "Category": ("Kategorie", None),
    "Checkout": ("Kasse", None),
    "Choose 1 to 5 stars.": ("Bitte 1 bis 5 Sterne wählen.", None),
    "Choose at least one item and a reason.": ("Bitte mindestens einen Artikel und einen Grund wählen.", None),
    "City": ("Ort", None),
    "Comment (optional)": ("Kommentar (optional)", None),
    "Contact": ("Kontakt", None),
    "Country": ("Land", None),
    "Coupon": ("Gutschein", None),
    "Coupon %(code)s applied.": ("Gutschein %(code)s eingelöst.", None),
    "Coupon applied.": ("Gutschein eingelöst.", None),
    "Coupon code": ("Gutscheincode", None),
    "Coupon removed.": ("Gutschein entfernt.", None),
    "Delivered by %(day)s": ("Geliefert bis %(day)s", None),
    "Delivered on %(day)s.": ("Zugestellt am %(day)s.", None),
    "Delivery": ("Lieferung", None),
    "Delivery address": ("Lieferadresse", None),
    "Delivery method": ("Versandart", None),
    "Delivery options": ("Versandoptionen", None),
    "Delivery options cannot be shown right now.": ("Die Versandoptionen können gerade nicht angezeigt werden.", None),
    "Description": ("Beschreibung", None),
    "E-mail": ("E-Mail", None),
    "Enter a coupon code.": ("Bitte einen Gutscheincode eingeben.", None),
    "Filters": ("Filter", None),
    "Full name": ("Vor- und Nachname", None),
    "Go to checkout": ("Zur Kasse", None),
    "History": ("Verlauf", None),
    "In stock": ("Auf Lager", None),
    "In stock only": ("Nur lieferbare", None),
    "Items": ("Artikel", None),
    "Items in your cart": ("Artikel im Warenkorb", None),
    "Kasse demo shop. Prices include VAT.": ("Kasse-Demoshop. Alle Preise inkl. MwSt.", None),
    "Kasse: kitchen, home, audio, outdoor, books and apparel, delivered fast.": (
        "Kasse: Küche, Wohnen, Audio, Outdoor, Bücher und Kleidung, schnell geliefert.",
        None,
    ),
    "Language": ("Sprache", None),
    "More pictures": ("Weitere Bilder", None),
    "Next": ("Weiter", None),
    "No longer available in this quantity": ("In dieser Menge nicht mehr verfügbar", None),
    "No money moves. This plays Stripe's signed webhook for the order.": (
        "Es fließt kein Geld. Dies spielt Stripes signierten Webhook für die Bestellung nach.",
        None,
    ),
    "No reviews yet.": ("Noch keine Bewertungen.", None),
    "Not shipped yet.": ("Noch nicht versandt.", None),
    "Nothing found. Try fewer filters or other words.": (
        "Nichts gefunden. Weniger Filter oder andere Wörter versuchen.",
        None,
    ),
    "Now": ("Jetzt", None),
    "On sale now": ("Jetzt im Angebot", None),
    "Only a few left": ("Nur noch wenige", None),
    "Order %(id)s": ("Bestellung %(id)s", None),
    "Order %(id)s, total %(total)s.": ("Bestellung %(id)s, Gesamtbetrag %(total)s.", None),
    "Order progress": ("Bestellfortschritt", None),
    "Page %(page)s of %(pages)s": ("Seite %(page)s von %(pages)s", None),
    "Pages": ("Seiten", None),
    "Pay now": ("Jetzt bezahlen", None),
    "Payment": ("Zahlung", None),
    "Place order and pay": ("zahlungspflichtig bestellen", None),
    "Please check the marked fields.": ("Bitte die markierten Felder prüfen.", None),
    "Please fill in this field.": ("Bitte dieses Feld ausfüllen.", None),
    "Postal code": ("PLZ", None),
    "Previous": ("Zurück", None),
    "Price": ("Preis", None),
    "Price from (€)": ("Preis ab (€)", None),
    "Price to (€)": ("Preis bis (€)", None),
    "Product": ("Produkt", None),
    "Progress toward free shipping": ("Fortschritt zum kostenlosen Versand", None),
    "Quantity": ("Menge", None),
    "Quantity of %(name)s": ("Menge von %(name)s", None),
    "Rating": ("Bewertung", None),
    "Rating distribution": ("Verteilung der Bewertungen", None),
    "Reason": ("Grund", None),
    "Refresh": ("Aktualisieren", None),
    "Remove": ("Entfernen", None),
    "Remove coupon": ("Gutschein entfernen", None),
    "Removed from your cart.": ("Aus dem Warenkorb entfernt.", None),
    "Request return": ("Rücksendung anmelden", None),
    "Results for “%(q)s”": ("Ergebnisse für „%(q)s“", None),
    "Return %(id)s": ("Rücksendung %(id)s", None),
    "Return how many of %(name)s?": ("Wie viele von %(name)s zurücksenden?", None),
    "Return items": ("Artikel zurücksenden", None),
    "Return requested.": ("Rücksendung angemeldet.", None),
    "Returns": ("Rücksendungen", None),
    "Returns are possible until %(day)s.": ("Rücksendungen sind bis %(day)s möglich.", None),
    "Reviews": ("Bewertungen", None),
    "Reviews cannot be shown right now.": ("Die Bewertungen können gerade nicht angezeigt werden.", None),
    "Reviews of delivered orders are marked as verified purchases.": (
        "Bewertungen zu zugestellten Bestellungen werden als verifizierter Kauf markiert.",
        None,
    ),
    "Search": ("Suchen", None),
    "Search products": ("Produkte suchen", None),
    "Search: %(q)s": ("Suche: %(q)s", None),
    "Send review": ("Bewertung senden", None),
    "Shipping": ("Versand", None),
    "Shop": ("Shop", None),
    "Skip to content": ("Zum Inhalt springen", None),
    "Sold out": ("Ausverkauft", None),
    "Sort by": ("Sortieren nach", None),
    "Status": ("Status", None),
    "Street and number": ("Straße und Hausnummer", None),
    "Subtotal": ("Zwischensumme", None),
    "Summary": ("Übersicht", None),
    "TEST PAYMENT (development only)": ("TESTZAHLUNG (nur Entwicklung)", None),
    "Test payment: decline": ("Testzahlung: ablehnen", None),
    "Test payment: succeed": ("Testzahlung: erfolgreich", None),
    "Thank you for your review.": ("Danke für Ihre Bewertung.", None),
    "The coupon was not accepted.": ("Der Gutschein wurde nicht angenommen.", None),
    "The form expired or was not sent from this shop; reload the page and try again.": (
        "Das Formular ist abgelaufen oder kam nicht aus diesem Shop; bitte Seite neu laden.",
        None,
    ),
    "The payment is not ready yet; try again in a moment.": (
        "Die Zahlung ist noch nicht bereit; gleich noch einmal versuchen.",
        None,
    ),
    "The price of %(name)s changed from %(old)s to %(new)s.": (
        "Der Preis von %(name)s hat sich von %(old)s auf %(new)s geändert.",
        None,
    ),
    "The test payment could not be delivered.": ("Die Testzahlung konnte nicht zugestellt werden.", None),
    "This order was cancelled.": ("Diese Bestellung wurde storniert.", None),
    "Title": ("Titel", None),
    "Top sellers": ("Bestseller", None),
    "Total": ("Gesamt", None),
    "Update": ("Aktualisieren", None),
    "Verified purchase": ("Verifizierter Kauf", None),
    "View your order": ("Bestellung ansehen", None),
    "Viewed together": ("Wird oft zusammen angesehen", None),
    "Welcome to Kasse": ("Willkommen bei Kasse", None),
    "Write a review": ("Bewertung schreiben", None),
    "Your cart": ("Ihr Warenkorb", None),
    "Your cart is empty.": ("Ihr Warenkorb ist leer.", None),
    "Your name": ("Ihr Name", None),
    "Your order ships free.": ("Ihre Bestellung wird kostenlos versandt.", None),
    "Your order was cancelled.": ("Ihre Bestellung wurde storniert.", None),
    "Your payment is being prepared …": ("Ihre Zahlung wird vorbereitet …", None),
    "Your rating": ("Ihre Bewertung", None),
    "Your review": ("Ihre Bewertung", None),
    "delivered %(from)s – %(to)s": ("Lieferung %(from)s – %(to)s", None),  # noqa: RUF001 (a typographic dash)
    "done": ("erledigt", None),
    "free": ("kostenlos", None),
    "incl. VAT, plus shipping": ("inkl. MwSt., zzgl. Versand", None),
    "instead of": ("statt", None),
    "label": ("Etikett", None),
    "plus shipping as chosen": ("zzgl. gewähltem Versand", None),
    "refunded": ("erstattet", None),
    "tracking number": ("Sendungsnummer", None),
    "Enter a valid e-mail address.": ("Bitte eine gültige E-Mail-Adresse eingeben.", None),
    "Enter the recipient's name.": ("Bitte den Namen des Empfängers eingeben.", None),
    "Enter the street and number.": ("Bitte Straße und Hausnummer eingeben.", None),
    "Enter the postal code.": ("Bitte die Postleitzahl eingeben.", None),
    "Enter the city.": ("Bitte den Ort eingeben.", None),
    "Choose a country we deliver to.": ("Bitte ein Land wählen, in das wir liefern.", None),
    "Choose a delivery method.": ("Bitte eine Versandart wählen.", None),
    "Please check this field.": ("Bitte dieses Feld prüfen.", None),
    "Some items are no longer in stock in this quantity. Please change your cart.": (
        "Einige Artikel sind in dieser Menge nicht mehr vorrätig. Bitte den Warenkorb anpassen.",
        None,
    ),
    "VAT": ("MwSt.", None),
    "no VAT (export)": ("keine MwSt. (Ausfuhr)", None),
    "incl. %(rate)s VAT": ("inkl. %(rate)s MwSt.", None),
    "Net": ("Netto", None),
    "Export outside the EU: no VAT charged.": ("Ausfuhr außerhalb der EU: keine MwSt. berechnet.", None),
    "incl. VAT": ("inkl. MwSt.", None),
    "after discount %(amount)s": ("nach Rabatt %(amount)s", None),
    "instead of %(amount)s": ("statt %(amount)s", None),
    "We are waiting for the payment's confirmation …": ("Wir warten auf die Bestätigung der Zahlung …", None),
    "Pay again": ("Erneut bezahlen", None),
    (
        "The payment did not go through, so this order was cancelled and nothing was charged. "
        "You can order the same items again and pay with another payment method."
    ): (
        "Die Zahlung ist nicht durchgegangen. Diese Bestellung wurde deshalb storniert, abgebucht wurde nichts. "
        "Sie können dieselben Artikel noch einmal bestellen und mit einer anderen Zahlungsart bezahlen.",
        None,
    ),
    "Order the same items again": ("Dieselben Artikel erneut bestellen", None),
    "Invoices": ("Rechnungen", None),
    "Invoice %(number)s": ("Rechnung %(number)s", None),
    "Credit note %(number)s": ("Gutschrift %(number)s", None),
    "Invoices cannot be shown right now.": ("Die Rechnungen können gerade nicht angezeigt werden.", None),
    "Some items could not be added again: they are not available in this quantity.": (
        "Einige Artikel konnten nicht erneut in den Warenkorb gelegt werden: Sie sind in dieser Menge nicht verfügbar.",
        None,
    ),
    "Thank you! Your payment was received; the order shows as paid as soon as it is confirmed.": (
        "Vielen Dank! Ihre Zahlung ist eingegangen; die Bestellung erscheint als bezahlt, sobald sie bestätigt ist.",
        None,
    ),
    "Your payment is being processed; the order shows as paid as soon as it is confirmed.": (
        "Ihre Zahlung wird bearbeitet; die Bestellung erscheint als bezahlt, sobald sie bestätigt ist.",
        None,
    ),
    "The payment did not go through. Please try again with another payment method.": (
        "Die Zahlung ist nicht durchgegangen. Bitte mit einer anderen Zahlungsart erneut versuchen.",
        None,
    ),
    "Step 1 of 2: your details. You check everything on the next page before you order.": (
        "Schritt 1 von 2: Ihre Angaben. Auf der nächsten Seite prüfen Sie alles, bevor Sie bestellen.",
        None,
    ),
    "Continue to review": ("Weiter zur Übersicht", None),
    "Review your order": ("Bestellung prüfen", None),
    "Step 2 of 2: check your order, then place it.": ("Schritt 2 von 2: Bestellung prüfen und abschicken.", None),
    "Change": ("Ändern", None),
    # categories (the catalog's slugs, capitalised)
    "Kitchen": ("Küche", None),
    "Home": ("Wohnen", None),
    "Audio": ("Audio", None),
    "Outdoor": ("Outdoor", None),
    "Books": ("Bücher", None),
    "Apparel": ("Kleidung", None),
    # keys
    "sort_relevance": ("Relevanz", "Relevance"),
    "sort_popularity": ("Beliebtheit", "Popularity"),
    "sort_price_asc": ("Preis aufsteigend", "Price, low to high"),
    "sort_price_desc": ("Preis absteigend", "Price, high to low"),
    "sort_rating": ("Bewertung", "Rating"),
    "sort_newest": ("Neueste", "Newest"),
    "status_placed": ("Bestellt", "Placed"),
    "status_stock_reserved": ("Bestellt", "Placed"),
    "status_paid": ("Bezahlt", "Paid"),
    "status_shipped": ("Versandt", "Shipped"),
    "status_delivered": ("Zugestellt", "Delivered"),
    "status_partially_refunded": ("Teilweise erstattet", "Partially refunded"),
    "status_refunded": ("Erstattet", "Refunded"),
    "status_cancelled": ("Storniert", "Cancelled"),
    "reason_stock_rejected": ("nicht mehr vorrätig", "out of stock"),
    "reason_payment_failed": ("Zahlung fehlgeschlagen", "payment failed"),
    "reason_payment_timeout": ("Zahlung nicht rechtzeitig", "payment not made in time"),
    "reason_fraud_suspected": ("Zahlung abgelehnt", "payment refused"),
    "reason_customer_request": ("auf Ihren Wunsch", "at your request"),
    "return_requested": ("angemeldet", "requested"),
    "return_received": ("eingegangen", "received"),
    "return_reason_changed_mind": ("Gefällt mir nicht mehr", "Changed my mind"),
    "return_reason_damaged": ("Beschädigt", "Damaged"),
    "return_reason_wrong_item": ("Falscher Artikel", "Wrong item"),
    "return_reason_not_as_described": ("Nicht wie beschrieben", "Not as described"),
    "return_reason_other": ("Anderer Grund", "Other"),
    "country_DE": ("Deutschland", "Germany"),
    "country_AT": ("Österreich", "Austria"),
    "country_NL": ("Niederlande", "Netherlands"),
    "country_FR": ("Frankreich", "France"),
    "country_BE": ("Belgien", "Belgium"),
    "country_DK": ("Dänemark", "Denmark"),
    "country_PL": ("Polen", "Poland"),
    "country_CH": ("Schweiz", "Switzerland"),
    "unknown_code": ("Diesen Gutscheincode gibt es nicht.", "There is no such coupon code."),
    "coupon_not_applicable": (
        "Der Gutschein gilt für diesen Warenkorb nicht.",
        "The coupon does not apply to this cart.",
    ),
    "refused": ("Der Gutschein wurde abgelehnt.", "The coupon was refused."),
    "error_not_found": ("Seite nicht gefunden", "Page not found"),
    "error_text_not_found": ("Diese Seite gibt es nicht (mehr).", "This page does not exist (any more)."),
    "error_forbidden": ("Formular abgelaufen", "Form expired"),
    "error_text_forbidden": (
        "Das Formular ist abgelaufen oder kam nicht aus diesem Shop. Bitte Seite neu laden und erneut versuchen.",
        "The form expired or was not sent from this shop. Reload the page and try again.",
    ),
    "error_bad_request": ("Ungültige Eingabe", "Invalid input"),
    "error_text_bad_request": ("Bitte die Eingabe prüfen.", "Please check what you entered."),
    "error_unavailable": ("Gerade nicht erreichbar", "Temporarily unavailable"),
    "error_text_unavailable": (
        "Ein Teil des Shops antwortet gerade nicht. Bitte gleich noch einmal versuchen.",
        "Part of the shop is not answering right now. Please try again in a moment.",
    ),
}

PLURALS: dict[tuple[str, str], tuple[str, str]] = {
    ("%(num)s product", "%(num)s products"): ("%(num)s Produkt", "%(num)s Produkte"),
    ("%(num)s star", "%(num)s stars"): ("%(num)s Stern", "%(num)s Sterne"),
    ("(%(num)s item)", "(%(num)s items)"): ("(%(num)s Artikel)", "(%(num)s Artikel)"),
    ("(%(num)s review)", "(%(num)s reviews)"): ("(%(num)s Bewertung)", "(%(num)s Bewertungen)"),
    ("Only %(num)s left in stock", "Only %(num)s left in stock"): (
        "Nur noch %(num)s auf Lager",
        "Nur noch %(num)s auf Lager",
    ),
    ("Within %(num)s day of delivery.", "Within %(num)s days of delivery."): (
        "Innerhalb von %(num)s Tag nach Zustellung.",
        "Innerhalb von %(num)s Tagen nach Zustellung.",
    ),
}


def main() -> None:
    for lang in ("de", "en"):
        catalog = Catalog(locale=lang, project="kasse-storefront", fuzzy=False)
        for msgid, (german, english) in MESSAGES.items():
            if lang == "de":
                catalog.add(msgid, german)
            elif english is not None:
                catalog.add(msgid, english)
        if lang == "de":
            for ids, forms in PLURALS.items():
                catalog.add(ids, forms)
        path = OUT / lang / "messages.po"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as out:
            write_po(out, catalog, omit_header=False, width=120)
        print(path, len(catalog))


if __name__ == "__main__":
    main()
