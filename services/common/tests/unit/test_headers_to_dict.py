"""`headers_to_dict`: the fast path for a client's list of (str, bytes) gives what the general loop gives."""

from kasse_common.envelope import headers_to_dict


def test_a_clients_header_list_decodes_to_text() -> None:
    headers = [("ce_id", b"e-1"), ("ce_type", b"ProductViewed"), ("x", b"\xc3\xa9")]
    assert headers_to_dict(headers) == {"ce_id": "e-1", "ce_type": "ProductViewed", "x": "é"}


def test_none_values_are_dropped_and_bad_utf8_is_replaced_as_before() -> None:
    assert headers_to_dict([("a", b"1"), ("b", None), ("c", b"\xff")]) == {"a": "1", "c": "\ufffd"}
    assert headers_to_dict((("a", "text"), ("b", bytearray(b"2")))) == {"a": "text", "b": "2"}
    assert headers_to_dict({"a": b"1", "b": None, "c": 3}) == {"a": "1", "c": "3"}
    assert headers_to_dict([]) == {}
