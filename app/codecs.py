"""The one JSON codec of eddy: orjson, registered with Faust as ``"orjson"``.

Every JSON topic uses it, for keys that are models and for values.

>>> from faust.serializers import codecs
>>> codecs.dumps("orjson", {"amount": 12.5, "tags": ["a"]})
b'{"amount":12.5,"tags":["a"]}'
>>> codecs.loads("orjson", b'{"ok":true}')
{'ok': True}
"""

from __future__ import annotations

from typing import Any

import orjson
from faust.serializers import codecs

CODEC_NAME = "orjson"


class OrjsonCodec(codecs.Codec):
    """Serialize to compact UTF-8 JSON with orjson (numpy scalars and arrays included)."""

    def _dumps(self, obj: Any) -> bytes:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)

    def _loads(self, s: bytes) -> Any:
        return orjson.loads(s)


codecs.register(CODEC_NAME, OrjsonCodec())


def dumps(obj: Any) -> bytes:
    """Encode ``obj`` as eddy encodes every JSON value."""
    return codecs.dumps(CODEC_NAME, obj)


def loads(data: bytes) -> Any:
    """Decode JSON bytes; raises ``orjson.JSONDecodeError`` (a ``ValueError``) on bad input."""
    return orjson.loads(data)
