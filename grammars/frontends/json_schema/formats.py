"""JSON Schema `format` values Stencil asserts, as exact ECMAScript-flavor regexes (fullmatch).

Each regex is written from the format's defining grammar (RFC 3339 date/time/duration, RFC 5321
mailbox, RFC 3986 URI, RFC 3987 IRI, RFC 4291 IPv6, RFC 1123 host names, RFC 6901 JSON pointers,
RFC 6570 URI templates, RFC 4122 UUIDs), checked against the JSON-Schema-Test-Suite format tests.
Calendar rules are regular and included: days per month, February 29 only in leap years (Gregorian,
years 0000-9999), leap seconds only at 23:59:60 UTC (the local time minus the offset).

Not regular-expressible as a plain regex, so handled outside:
- total-length limits (a host name is at most 253 characters): `FORMAT_MAX_LENGTHS`; intersect it
  like a `maxLength`;
- left out of `FORMATS` (so front ends raise UnsupportedSchemaError): `idn-hostname` and `idn-email`
  (IDNA2008 contextual and bidi rules, Punycode validity), `regex` (balanced parentheses).

Known gaps, deliberately lenient (documented here, not silent): `email` does not enforce RFC 5321's
64-octet local part and 254-octet path limits.
"""

from __future__ import annotations

import functools

_DIGIT = "[0-9]"
_HEX = "[0-9A-Fa-f]"
_ALPHA = "[A-Za-z]"

# ---------------------------------------------------------------------------------------------
# Dates and times (RFC 3339 section 5.6, appendix A)
# ---------------------------------------------------------------------------------------------

_LEAP_YEAR = "(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)"
_MONTH_DAY = (
    "(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    "|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    "|02-(?:0[1-9]|1[0-9]|2[0-8]))"
)
_FULL_DATE = f"(?:[0-9]{{4}}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)"
_HOUR = "(?:[01][0-9]|2[0-3])"
_MINUTE = "[0-5][0-9]"
_SECFRAC = "(?:\\.[0-9]+)?"
_OFFSET = f"(?:[Zz]|[+-]{_HOUR}:{_MINUTE})"


def _leap_second_times() -> str:
    """Every local `hh:mm:60[.frac]offset` whose UTC time is 23:59:60.

    Local time = UTC + offset, so for each signed offset there is exactly one local minute: 2 x 1440
    (minute, offset) pairs plus "Z". The minute and the offset are correlated across the text, so no
    smaller regex exists (a DFA must remember the local hour and minute when it reads the offset).
    """
    day = 24 * 60
    by_local_minute: dict[int, list[str]] = {day - 1: ["[Zz]"]}
    for offset in range(day):
        text = f"{offset // 60:02d}:{offset % 60:02d}"
        by_local_minute.setdefault((day - 1 + offset) % day, []).append(f"\\+{text}")
        by_local_minute.setdefault((day - 1 - offset) % day, []).append(f"-{text}")
    options = []
    for hour in range(24):
        minutes = []
        for minute in range(60):
            offsets = by_local_minute[hour * 60 + minute]
            minutes.append(f"{minute:02d}:60{_SECFRAC}(?:{'|'.join(offsets)})")
        options.append(f"{hour:02d}:(?:{'|'.join(minutes)})")
    return f"(?:{'|'.join(options)})"


@functools.cache
def _full_time() -> str:
    normal = f"{_HOUR}:{_MINUTE}:[0-5][0-9]{_SECFRAC}{_OFFSET}"
    return f"(?:{normal}|{_leap_second_times()})"


def _duration() -> str:
    number = "[0-9]+"
    second = f"{number}S"
    minute = f"{number}M(?:{second})?"
    hour = f"{number}H(?:{minute})?"
    time = f"T(?:{hour}|{minute}|{second})"
    day = f"{number}D"
    month = f"{number}M(?:{day})?"
    year = f"{number}Y(?:{month})?"
    return f"P(?:(?:{day}|{month}|{year})(?:{time})?|{time}|{number}W)"


# ---------------------------------------------------------------------------------------------
# Internet addresses
# ---------------------------------------------------------------------------------------------

_DEC_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = f"(?:{_DEC_OCTET}\\.){{3}}{_DEC_OCTET}"


def _ipv6() -> str:
    """RFC 3986 IPv6address (the text forms of RFC 4291 section 2.2)."""
    h16 = f"{_HEX}{{1,4}}"
    ls32 = f"(?:{h16}:{h16}|{_IPV4})"

    def left(max_groups: int) -> str:  # [ *max_groups( h16 ":" ) h16 ]
        return f"(?:(?:{h16}:){{0,{max_groups}}}{h16})?" if max_groups >= 0 else ""

    forms = [
        f"(?:{h16}:){{6}}{ls32}",
        f"::(?:{h16}:){{5}}{ls32}",
        f"{left(0)}::(?:{h16}:){{4}}{ls32}",
        f"{left(1)}::(?:{h16}:){{3}}{ls32}",
        f"{left(2)}::(?:{h16}:){{2}}{ls32}",
        f"{left(3)}::{h16}:{ls32}",
        f"{left(4)}::{ls32}",
        f"{left(5)}::{h16}",
        f"{left(6)}::",
    ]
    return "(?:" + "|".join(forms) + ")"


_LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = f"{_LABEL}(?:\\.{_LABEL})*"


def _email() -> str:
    """RFC 5321 Mailbox: dot-string or quoted local part; domain or IPv4 / IPv6 address literal.

    General address literals (`[tag:...]`) are refused: no tag other than IPv6 is registered.
    """
    atext = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
    quoted = '"(?:[ !#-\\[\\]-~]|\\\\[ -~])*"'
    local = f"(?:{atext}+(?:\\.{atext}+)*|{quoted})"
    return f"{local}@(?:{_HOSTNAME}|\\[(?:{_IPV4}|IPv6:{_ipv6()})\\])"


# ---------------------------------------------------------------------------------------------
# URIs and IRIs (RFC 3986, RFC 3987)
# ---------------------------------------------------------------------------------------------

_UCSCHAR = (
    "\\u00A0-\\uD7FF\\uF900-\\uFDCF\\uFDF0-\\uFFEF"
    + "".join(f"\\u{{{plane:X}0000}}-\\u{{{plane:X}FFFD}}" for plane in range(1, 14))
    + "\\u{E1000}-\\u{EFFFD}"
)
_IPRIVATE = "\\uE000-\\uF8FF\\u{F0000}-\\u{FFFFD}\\u{100000}-\\u{10FFFD}"


def _uri(*, iri: bool, reference: bool) -> str:
    """URI / URI-reference (RFC 3986 section 3, 4.1) or their IRI forms (RFC 3987 section 2.2)."""
    unreserved = "A-Za-z0-9\\-._~" + (_UCSCHAR if iri else "")
    sub_delims = "!$&'()*+,;="
    pct = f"%{_HEX}{_HEX}"
    pchar = f"(?:[{unreserved}{sub_delims}:@]|{pct})"
    segment = f"{pchar}*"
    segment_nz = f"{pchar}+"
    segment_nz_nc = f"(?:[{unreserved}{sub_delims}@]|{pct})+"
    query = f"(?:{pchar}|[/?{_IPRIVATE if iri else ''}])*"
    fragment = f"(?:{pchar}|[/?])*"
    userinfo = f"(?:[{unreserved}{sub_delims}:]|{pct})*"
    ip_literal = f"\\[(?:{_ipv6()}|[vV]{_HEX}+\\.[{unreserved}{sub_delims}:]+)\\]"
    reg_name = f"(?:[{unreserved}{sub_delims}]|{pct})*"
    authority = f"(?:{userinfo}@)?(?:{ip_literal}|{_IPV4}|{reg_name})(?::[0-9]*)?"
    path_abempty = f"(?:/{segment})*"
    path_absolute = f"/(?:{segment_nz}(?:/{segment})*)?"
    path_rootless = f"{segment_nz}(?:/{segment})*"
    path_noscheme = f"{segment_nz_nc}(?:/{segment})*"
    tail = f"(?:\\?{query})?(?:#{fragment})?"
    scheme = f"{_ALPHA}[A-Za-z0-9+\\-.]*"
    absolute = f"{scheme}:(?://{authority}{path_abempty}|{path_absolute}|{path_rootless})?{tail}"
    if not reference:
        return absolute
    relative = f"(?://{authority}{path_abempty}|{path_absolute}|{path_noscheme})?{tail}"
    return f"(?:{absolute}|{relative})"


def _uri_template() -> str:
    """RFC 6570 URI-Template (level 4), with erratum 6937 (the apostrophe is a literal)."""
    pct = f"%{_HEX}{_HEX}"
    literal = f"(?:[!#$&-;=?-\\[\\]_a-z~{_UCSCHAR}{_IPRIVATE}]|{pct})"
    varchar = f"(?:[A-Za-z0-9_]|{pct})"
    varspec = f"{varchar}(?:\\.?{varchar})*(?::[1-9][0-9]{{0,3}}|\\*)?"
    expression = f"\\{{[+#./;?&=,!@|]?{varspec}(?:,{varspec})*\\}}"
    return f"(?:{literal}|{expression})*"


_JSON_POINTER = "(?:/(?:[^~/]|~[01])*)*"
_NON_NEGATIVE_INTEGER = "(?:0|[1-9][0-9]*)"


@functools.cache
def _regexes() -> dict[str, str]:
    return {
        "date": _FULL_DATE,
        "time": _full_time(),
        "date-time": f"{_FULL_DATE}[Tt]{_full_time()}",
        "duration": _duration(),
        "email": _email(),
        "hostname": _HOSTNAME,
        "ipv4": _IPV4,
        "ipv6": _ipv6(),
        "uri": _uri(iri=False, reference=False),
        "uri-reference": _uri(iri=False, reference=True),
        "iri": _uri(iri=True, reference=False),
        "iri-reference": _uri(iri=True, reference=True),
        "uri-template": _uri_template(),
        "uuid": f"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}",
        "json-pointer": _JSON_POINTER,
        "relative-json-pointer": f"{_NON_NEGATIVE_INTEGER}(?:[+-]{_NON_NEGATIVE_INTEGER})?(?:#|{_JSON_POINTER})",
        # OpenAPI: base64-encoded bytes (RFC 4648, padded)
        "byte": "(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?",
    }


#: The `format` values Stencil enforces; any other format is for the front end to refuse.
FORMATS: frozenset[str] = frozenset(_regexes.__wrapped__())

#: Formats whose definition also bounds the total length (in characters): apply like `maxLength`.
FORMAT_MAX_LENGTHS: dict[str, int] = {"hostname": 253}

#: Integer formats of OpenAPI (int32, int64) and their kin in Kubernetes and protobuf schemas, as the
#: inclusive range they assert on numbers (they do not constrain strings).
NUMERIC_FORMATS: dict[str, tuple[int, int]] = {
    **{f"int{bits}": (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) for bits in (8, 16, 32, 64)},
    **{f"uint{bits}": (0, (1 << bits) - 1) for bits in (8, 16, 32, 64)},
}

#: OpenAPI formats that describe rather than constrain the JSON text: `float`/`double` name the
#: precision a reader parses into, `password` is a UI hint, `binary` is any octet string.
DESCRIPTIVE_FORMATS: frozenset[str] = frozenset({"float", "double", "password", "binary"})


def format_regex(name: str) -> str:
    """The ECMAScript-flavor regex (fullmatch: no anchors needed) of a JSON Schema `format`.

    A format in `FORMAT_MAX_LENGTHS` is exact only together with that length bound.

    Raises:
        KeyError: `name` is not in `FORMATS`.
    """
    regexes = _regexes()
    if name not in regexes:
        raise KeyError(f"format {name!r} is not supported (supported: {', '.join(sorted(FORMATS))})")
    return regexes[name]
