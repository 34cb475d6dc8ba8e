"""moto's server with ranged GETs that read only their range, so that the link, not moto, bounds a ranged read.

Started as ``python -m emulation.moto_fast -H ... -p ...`` (moto_server's arguments) by emulation.moto. moto 5
answers a GET with a Range by reading the whole object from its spooled buffer, under the key's lock, and then
slicing it: ten ranges of a 200 MB object cost ten 200 MB reads, one after the other (docs/benchmark.md), which
real S3 does not do. Here, while a GET with a Range header is answered, a key's ``value`` is a view that reads
the slice asked for from the same buffer under the same lock; whatever else would take the whole value gets it
whole, as before. Status, headers (Content-Range, checksums left out of ranged answers) and bytes are moto's
own. ``apply`` refuses to patch a moto whose patched functions changed (their source hashes below).
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from moto.core.responses import BaseResponse
from moto.s3.models import FakeKey
from moto.s3.responses import S3Response

from emulation.processes import require_known_sources

# sha256 of the source of each function wrapped or relied on, in moto 5.2.5.
_EXPECTED = {
    "FakeKey.value": "5e9a53c3d82cc883da5172430ec762dd2e90a12a304107ce40ac0b53896a88cf",
    "S3Response.key_response": "482dd528b49e03599c0df0dac38c2fd7441ff40345b947ec7185f6ee7b8f6942",
    "S3Response.get_object": "e9731229dec14fcdd1e4c14e6494793528cdd2e52190d12980959f50cfadc937",
    "S3Response._handle_range_header": "d6480a54a4dff3743ce5d929f6246b160ce43b58bb7881414f35402a2b9cefd5",
    # the view passes through these (bool(body); a re.sub on it whose TypeError is caught)
    "S3Response._send_response": "1637e0b7d5eef5368acc560d4b3c6f8521e173e007e9a8981a7d6a04bf80e2bb",
    "BaseResponse._enrich_response": "86cd4a4051dd20e836fcc671792a66d3715be4c4f963705b2ae5f400bf0259d7",
}
_ORIGINAL_VALUE = FakeKey.value
_ORIGINAL_KEY_RESPONSE = S3Response.key_response
_ranged = threading.local()  # set while this thread answers a GET with a Range header


class _KeyBytes:
    """A key's bytes, read a slice at a time (all _handle_range_header takes of them: len() and one slice)."""

    def __init__(self, key: FakeKey) -> None:
        self.key = key

    def __len__(self) -> int:
        return self.key.size

    def __getitem__(self, item: slice) -> bytes:
        start, stop, _ = item.indices(self.key.size)
        with self.key.lock:
            self.key._value_buffer.seek(start)
            return self.key._value_buffer.read(max(0, stop - start))

    def whole(self) -> bytes:
        return _ORIGINAL_VALUE.fget(self.key)


def _value(key: FakeKey) -> Any:
    return _KeyBytes(key) if getattr(_ranged, "active", False) else _ORIGINAL_VALUE.fget(key)


def _key_response(self: Any, request: Any, full_url: str, headers: dict[str, Any]) -> Any:
    ranged = request.method == "GET" and "," not in (request.headers.get("range") or ",")
    _ranged.active = ranged
    try:
        status, response_headers, body = _ORIGINAL_KEY_RESPONSE(self, request, full_url, headers)
    finally:
        _ranged.active = False
    if isinstance(body, _KeyBytes):  # an answer that was not a slice after all: the whole value, as moto sends it
        body = body.whole()
    return status, response_headers, body


_KNOWN = {
    "FakeKey.value": _ORIGINAL_VALUE.fget,
    "S3Response.key_response": _ORIGINAL_KEY_RESPONSE,
    "S3Response.get_object": S3Response.get_object,
    "S3Response._handle_range_header": S3Response._handle_range_header,
    "S3Response._send_response": S3Response._send_response,
    "BaseResponse._enrich_response": BaseResponse._enrich_response,
}


def apply() -> None:
    """Patch moto in this process; ValueError if a function the view relies on is not the one known."""
    require_known_sources("emulation/moto_fast.py", _EXPECTED, _KNOWN)
    FakeKey.value = property(_value, _ORIGINAL_VALUE.fset)
    S3Response.key_response = _key_response


if __name__ == "__main__":
    apply()
    from moto.server import main

    main(sys.argv[1:])
