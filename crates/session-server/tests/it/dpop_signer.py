"""DPoP proofs made by an independent implementation (pyca/cryptography),
for the server's DPoP tests.

Reads one JSON request on stdin:
  {"alg": "ES256" | "EdDSA", "pem": <PKCS#8 PEM or null for a new key>,
   "proofs": [{"htm", "htu", "token"?, "iat_offset"?, "jti"?, "nonce"?,
               "header"?: {...merged}, "jwk_extra"?: {...merged},
               "claims"?: {...merged}}]}
writes {"pem", "jwk", "jkt", "proofs": [...]} on stdout.
"""
import base64
import hashlib
import json
import os
import sys
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main() -> None:
    req = json.load(sys.stdin)
    alg = req["alg"]
    if req.get("pem"):
        key = serialization.load_pem_private_key(req["pem"].encode(), password=None)
    elif alg == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    if alg == "ES256":
        nums = key.public_key().public_numbers()
        jwk = {"kty": "EC", "crv": "P-256",
               "x": b64(nums.x.to_bytes(32, "big")), "y": b64(nums.y.to_bytes(32, "big"))}
        canonical = {"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"], "y": jwk["y"]}
    else:
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}
        canonical = {"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"]}
    # RFC 7638: required members, sorted, no whitespace.
    jkt = b64(hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).digest())

    proofs = []
    for spec in req.get("proofs", []):
        header = {"typ": "dpop+jwt", "alg": alg, "jwk": dict(jwk, **spec.get("jwk_extra", {}))}
        header.update(spec.get("header", {}))
        claims = {
            "jti": spec.get("jti") or b64(os.urandom(16)),
            "htm": spec["htm"],
            "htu": spec["htu"],
            "iat": int(time.time()) + int(spec.get("iat_offset", 0)),
        }
        if spec.get("token") is not None:
            claims["ath"] = b64(hashlib.sha256(spec["token"].encode()).digest())
        if spec.get("nonce") is not None:
            claims["nonce"] = spec["nonce"]
        claims.update(spec.get("claims", {}))
        signing_input = (b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())).encode()
        if alg == "ES256":
            r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
            sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        else:
            sig = key.sign(signing_input)
        proofs.append(signing_input.decode() + "." + b64(sig))
    json.dump({"pem": pem, "jwk": jwk, "jkt": jkt, "proofs": proofs}, sys.stdout)


if __name__ == "__main__":
    main()
