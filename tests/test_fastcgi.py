import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tenantfpm.wire import fastcgi


@given(st.lists(st.tuples(st.binary(max_size=300), st.binary(max_size=300)), max_size=20))
def test_pairs_round_trip(pairs):
    assert list(fastcgi.decode_pairs(fastcgi.encode_pairs(pairs))) == pairs


@given(st.binary(max_size=200))
def test_pairs_decoder_never_crashes_on_garbage(data):
    with contextlib.suppress(fastcgi.ProtocolError):
        list(fastcgi.decode_pairs(data))


@given(st.binary(max_size=200_000), st.integers(min_value=1, max_value=4096))
def test_stream_records_reassemble_in_any_chunking(data, chunk):
    wire = fastcgi.encode_stream(fastcgi.STDOUT, 1, data)
    reader = fastcgi.RecordReader()
    records = []
    for i in range(0, len(wire), chunk):
        records += reader.feed(wire[i:i + chunk])
    assert records[-1].content == b""
    assert b"".join(r.content for r in records) == data
    assert all(len(r.content) <= 65535 for r in records)


def test_bad_version_is_rejected():
    with pytest.raises(fastcgi.ProtocolError):
        fastcgi.RecordReader().feed(struct.pack("!BBHHBx", 2, 1, 1, 0, 0))


def test_cgi_params_like_nginx():
    p = fastcgi.cgi_params("/srv/x", "/a/?q=1", "POST", b"k=v", [("X-Forwarded-For", "1.2.3.4")])
    assert p["SCRIPT_FILENAME"] == "/srv/x/a/index.php"
    assert p["QUERY_STRING"] == "q=1" and p["CONTENT_LENGTH"] == "3"
    assert p["HTTP_X_FORWARDED_FOR"] == "1.2.3.4"
