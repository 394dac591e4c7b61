"""A real JWKS consumer for the key-rotation test: PyJWT's PyJWKClient with
its defaults (JWKS cached 300 s, at most one refetch per 30 s cooldown),
verifying access tokens read one per line as JSON on stdin:
{"token": "..."} answers {"ok", "kid", "fetches", "error"}; {"advance": s}
moves this process's monotonic clock (the one PyJWKClient's cache and
cooldown read) forward by s seconds, in step with the server's clock."""
import json
import sys
import time

import jwt
from jwt import PyJWKClient

url, issuer, audience = sys.argv[1:4]
offset = 0.0
real_monotonic = time.monotonic
time.monotonic = lambda: real_monotonic() + offset

client = PyJWKClient(url)
fetches = 0
fetch = client.fetch_data


def counted():
    global fetches
    fetches += 1
    return fetch()


client.fetch_data = counted

for line in sys.stdin:
    cmd = json.loads(line)
    if "advance" in cmd:
        offset += cmd["advance"]
        print(json.dumps({"ok": True}), flush=True)
        continue
    token = cmd["token"]
    try:
        key = client.get_signing_key_from_jwt(token)
        jwt.decode(token, key.key, algorithms=["EdDSA", "ES256"], audience=audience, issuer=issuer)
        print(json.dumps({"ok": True, "kid": key.key_id, "fetches": fetches}), flush=True)
    except Exception as e:  # noqa: BLE001 - the test reads the reason
        print(json.dumps({"ok": False, "error": repr(e), "fetches": fetches}), flush=True)
