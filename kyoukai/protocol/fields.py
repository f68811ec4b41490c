"""
HTTP field rules that both protocols share: what a response, its trailers or a 1xx response
may put on the wire (RFC 9110 section 5), and what a request's ``Host`` may be.

Every field name must be a token and every value free of CR, LF and NUL, whatever the
protocol: on HTTP/1.1 a CR or LF in a name or value would split the response (a header of the
app's choosing, or the end of the head), and HTTP/2 peers treat such fields as malformed. The
check is made on the names joined into one string and the values joined into another, so a
response costs a few C-level scans, not a Python loop over its fields.
"""

from __future__ import annotations

import re

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
#: Field names joined with LF: each one a non-empty token.
_tokens_joined = re.compile(rf"{_TOKEN}(?:\n{_TOKEN})*").fullmatch
_token = re.compile(_TOKEN).fullmatch
_forbidden_in_value = re.compile(r"[\r\n\x00]").search


def check_informational_status(status: int) -> None:
    """
    The 1xx policy of both protocols: an app may send 102 to 199 (103 Early Hints above all).
    ``100 Continue`` is the server's own answer to ``Expect``, and ``101`` switches protocols,
    which is the server's to do (and does not exist in HTTP/2, RFC 9113 section 8.6).

    :raises ValueError: for any other status.
    """
    if not 101 < status < 200:
        raise ValueError(f"send_informational needs a 1xx status from 102 to 199, not {status}")


#: Fields that only mean something to HTTP/1.1 (RFC 9113 section 8.2.2), as received and as sent.
CONNECTION_SPECIFIC = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"})
CONNECTION_SPECIFIC_NAMES = frozenset(name.decode() for name in CONNECTION_SPECIFIC)


class InvalidFieldError(ValueError):
    """A field that must not go on the wire; the message names it and says why."""


def checked_names(fields: list[tuple[str, str]], what: str = "response") -> str:
    """
    Check ``fields`` for the wire and return their names, lowercase, as ``"\\nname\\n...\\n"``
    (so ``"\\ndate\\n" in names`` asks whether a field is present). Values with whitespace at
    either end are stripped in place.

    :param fields: ``(name, value)`` string pairs; the list may be changed.
    :param what: what the fields belong to, for the error message.
    :raises InvalidFieldError: naming the first field whose name is not a token or whose value
        holds CR, LF or NUL.
    """
    if not fields:
        return "\n\n"
    all_names, all_values = zip(*fields, strict=True)
    names = "\n".join(all_names)
    if not _tokens_joined(names):
        raise InvalidFieldError(_first_problem(fields, what))
    # The values joined with LF: no CR or NUL anywhere, and an LF inside a value shows in the
    # count. (Substring tests: a regex tried at every position costs many times more.)
    values = "\n".join(all_values)
    if "\r" in values or "\x00" in values or values.count("\n") != len(fields) - 1:
        raise InvalidFieldError(_first_problem(fields, what))
    # Whitespace at either end of a value (RFC 9113 section 8.2.1 forbids it on HTTP/2;
    # HTTP/1.1 parsers strip it) is removed before sending.
    if (
        values.startswith((" ", "\t"))
        or values.endswith((" ", "\t"))
        or " \n" in values
        or "\t\n" in values
        or "\n " in values
        or "\n\t" in values
    ):
        fields[:] = [(name, value.strip(" \t")) for name, value in fields]
    return f"\n{names.lower()}\n"


def _first_problem(fields: list[tuple[str, str]], what: str) -> str:
    for name, value in fields:
        if not isinstance(name, str) or not _token(name):
            return f"{what} header name {name!r} is not a valid token"
        if not isinstance(value, str) or _forbidden_in_value(value):
            return f"{what} header {name!r} has a value with CR, LF or NUL: {value!r}"
    return f"{what} headers are invalid"


#: HTTP versions whose requests may come without ``Host`` (RFC 9112 section 3.2 requires it of 1.1).
HOST_OPTIONAL_VERSIONS = frozenset({"0.9", "1.0"})

#: A ``Host`` value: a name, IPv4 address or bracketed IP literal, then an optional port (RFC
#: 3986 section 3.2.2), or empty. No whitespace, controls, commas (two values joined) or
#: delimiters such as ``/`` and ``@``.
_valid_host = re.compile(rb"(?:\[[0-9A-Za-z:._~%!$&'()*+;=-]+\]|[0-9A-Za-z._~%!$&'()*+;=-]*)(?::[0-9]*)?").fullmatch


def is_valid_host(value: bytes) -> bool:
    """Whether ``value`` (trailing whitespace removed) may be a request's ``Host`` (RFC 9112 section 3.2)."""
    return _valid_host(value) is not None


#: The length taken for a ``Content-Length`` of more than :data:`MAX_LENGTH_DIGITS` digits:
#: larger than any body a limit lets through (and ``int()`` refuses strings of over 4,300 digits).
HUGE_LENGTH = 10**18
MAX_LENGTH_DIGITS = 18


def content_length(value: str | bytes) -> int | None:
    """
    The number a ``Content-Length`` value states: ``None`` unless it is 1*DIGIT (RFC 9110
    section 8.6), :data:`HUGE_LENGTH` if it has more than :data:`MAX_LENGTH_DIGITS` digits.
    """
    if not value.isdigit() or not value.isascii():
        return None
    return int(value) if len(value) <= MAX_LENGTH_DIGITS else HUGE_LENGTH
