"""Response helpers of kyoukai.util."""

from __future__ import annotations

import json

import pytest
from werkzeug.wrappers import Response

from kyoukai.protocol.fields import HUGE_LENGTH, content_length
from kyoukai.util import SERVER_TOKEN, InvalidReturnValue, as_html, as_json, as_plaintext, wrap_response
from kyoukai.version import __version__


class CustomResponse(Response):
    pass


class TestAsHelpers:
    def test_as_html(self) -> None:
        response = as_html("<p>hi</p>", 201, {"X-A": "1"})
        assert response.status_code == 201
        assert response.mimetype == "text/html"
        assert response.get_data() == b"<p>hi</p>"
        assert response.headers["X-A"] == "1"

    def test_as_plaintext(self) -> None:
        response = as_plaintext("héllo")
        assert response.status_code == 200
        assert response.mimetype == "text/plain"
        assert response.mimetype_params["charset"] == "utf-8"
        assert response.get_data() == "héllo".encode()

    def test_as_json(self) -> None:
        response = as_json({"a": [1, 2], "b": None}, 202, {"X-B": "2"})
        assert response.status_code == 202
        assert response.headers["Content-Type"] == "application/json"
        assert response.is_json
        assert json.loads(response.get_data()) == {"a": [1, 2], "b": None}
        assert response.headers["X-B"] == "2"

    def test_as_json_with_encoder(self) -> None:
        class SetEncoder(json.JSONEncoder):
            def default(self, o):
                if isinstance(o, set):
                    return sorted(o)
                return super().default(o)

        assert json.loads(as_json({"s": {3, 1}}, json_encoder=SetEncoder).get_data()) == {"s": [1, 3]}

    def test_as_json_passes_keyword_arguments_to_dumps(self) -> None:
        response = as_json({"b": 1, "a": [2]}, indent=2, sort_keys=True)
        assert response.get_data(as_text=True) == '{\n  "a": [\n    2\n  ],\n  "b": 1\n}'
        assert response.headers["Content-Type"] == "application/json"

    def test_server_token(self) -> None:
        assert SERVER_TOKEN == f"Kyoukai/{__version__}"


class TestWrapResponse:
    def test_response_passes_through(self) -> None:
        original = Response("x", status=418)
        assert wrap_response(original) is original
        assert wrap_response(original, status=500).status_code == 418

    def test_none_is_204(self) -> None:
        response = wrap_response(None)
        assert response.status_code == 204
        assert response.get_data() == b""

    def test_str_and_bytes_bodies(self) -> None:
        assert wrap_response("text").get_data() == b"text"
        assert wrap_response(b"\x00\x01").get_data() == b"\x00\x01"
        assert wrap_response("text").status_code == 200

    def test_bare_body_takes_the_given_status(self) -> None:
        assert wrap_response("missing", status=404).status_code == 404

    def test_tuple_of_body(self) -> None:
        response = wrap_response(("only body",))
        assert (response.status_code, response.get_data()) == (200, b"only body")

    def test_tuple_of_body_and_status(self) -> None:
        response = wrap_response(("created", 201))
        assert (response.status_code, response.get_data()) == (201, b"created")

    def test_tuple_of_body_status_and_headers(self) -> None:
        response = wrap_response(("body", 202, {"X-Custom": "yes"}))
        assert response.status_code == 202
        assert response.headers["X-Custom"] == "yes"

    def test_tuple_with_header_list(self) -> None:
        response = wrap_response(("body", 200, [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]))
        assert response.headers.getlist("Set-Cookie") == ["a=1", "b=2"]

    def test_tuple_with_response_body(self) -> None:
        response = wrap_response((Response("inner", status=200), 203, {"X-Extra": "1"}))
        assert response.status_code == 203
        assert response.get_data() == b"inner"
        assert response.headers["X-Extra"] == "1"

    def test_tuple_with_response_only_keeps_its_status(self) -> None:
        assert wrap_response((Response("inner", status=410),), status=404).status_code == 410

    @pytest.mark.parametrize("value", [(), ("a", 200, {}, "extra")])
    def test_bad_tuple_length(self, value: tuple) -> None:
        with pytest.raises(InvalidReturnValue, match="body"):
            wrap_response(value)

    def test_response_class(self) -> None:
        assert type(wrap_response("x", CustomResponse)) is CustomResponse
        assert type(wrap_response(None, CustomResponse)) is CustomResponse
        assert type(wrap_response(("x", 201), CustomResponse)) is CustomResponse

    def test_iterator_body(self) -> None:
        response = wrap_response(iter(["a", "b"]))
        assert response.get_data() == b"ab"

    @pytest.mark.parametrize("value", [{"a": 1, "b": 2}, [1, 2, "three"], [], {}])
    def test_dict_and_list_are_json(self, value: object) -> None:
        response = wrap_response(value)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/json"
        assert json.loads(response.get_data()) == value

    def test_json_with_status_and_headers(self) -> None:
        response = wrap_response(({"created": True}, 201, {"Location": "/x"}))
        assert (response.status_code, response.headers["Location"]) == (201, "/x")
        assert response.headers["Content-Type"] == "application/json"
        assert json.loads(response.get_data()) == {"created": True}

    def test_json_keeps_a_content_type_given(self) -> None:
        response = wrap_response(({"a": 1}, 200, {"Content-Type": "application/problem+json"}))
        assert response.headers.getlist("Content-Type") == ["application/problem+json"]

    def test_json_in_the_response_class(self) -> None:
        assert type(wrap_response({"a": 1}, CustomResponse)) is CustomResponse

    def test_none_body_in_a_tuple(self) -> None:
        response = wrap_response((None, 304))
        assert (response.status_code, response.get_data()) == (304, b"")

    def test_async_iterable_body_is_kept(self) -> None:
        async def chunks():
            yield b"x"

        body = chunks()
        assert wrap_response(body).response is body

    @pytest.mark.parametrize("value", [42, 4.2, object(), (7, 200), {1, 2}, True])
    def test_body_that_cannot_be_sent_is_rejected(self, value: object) -> None:
        body = value[0] if isinstance(value, tuple) else value
        with pytest.raises(
            InvalidReturnValue, match=rf"^a value of type '{type(body).__name__}', which cannot be a response: "
        ):
            wrap_response(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0),
        ("00012", 12),
        (b"4096", 4096),
        ("9" * 18, int("9" * 18)),
        ("9" * 19, HUGE_LENGTH),
        ("9" * 5000, HUGE_LENGTH),  # int() itself refuses over 4,300 digits
        ("", None),
        ("-1", None),
        ("+4", None),
        (" 4", None),
        ("4.0", None),
        ("0x10", None),
        ("٤", None),  # a digit to str.isdigit, not to RFC 9110
    ],
)
def test_content_length_values(value: str | bytes, expected: int | None) -> None:
    assert content_length(value) == expected
