"""Schemathesis hooks for .ci/schemathesis.sh (loaded through SCHEMATHESIS_HOOKS).

The document describes an application/x-ndjson body as the array of its lines' entries; this
serializer writes such an array the way a producer sends it: one JSON value per line.
"""
import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, list):
        return "".join(json.dumps(item) + "\n" for item in value).encode()
    # Not an array (negative data): sent as one line, which the broker must reject.
    return (json.dumps(value) + "\n").encode()
