"""Verifies tokenmint's access tokens with PyJWT, the way a Python resource server would.

Usage: verify_pyjwt.py ISSUER JWKS_FILE TOKENS_FILE

JWKS_FILE is a JWK Set as tokenmint publishes it; TOKENS_FILE a JSON array of
{"name", "audience", "token"}. The set is parsed with jwt.PyJWKSet.from_json; each token is
verified with the key its `kid` names, the algorithm taken from that JWK, the issuer and the
audience checked, and `typ` must be `at+jwt`. Prints one JSON object: whether the set loaded
(and the kids PyJWT kept), then one result per token. Exits 0 whenever it could report.
"""

import json
import sys

import jwt


def verify(key_set, issuer, entry):
    token = entry["token"]
    header = jwt.get_unverified_header(token)
    if header.get("typ") != "at+jwt":
        raise ValueError(f"typ is {header.get('typ')!r}, not at+jwt")
    try:
        key = key_set[header["kid"]]
    except KeyError as error:
        raise LookupError(f"no key for kid {header['kid']}") from error
    claims = jwt.decode(
        token,
        key=key,
        algorithms=[key.algorithm_name],
        audience=entry["audience"],
        issuer=issuer,
        options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
    )
    return {"alg": key.algorithm_name, "sub": claims["sub"]}


def main():
    issuer, jwks_file, tokens_file = sys.argv[1:4]
    with open(jwks_file, encoding="utf-8") as f:
        jwks_text = f.read()
    with open(tokens_file, encoding="utf-8") as f:
        tokens = json.load(f)
    report = {"verifier": f"PyJWT {jwt.__version__}", "tokens": []}
    try:
        key_set = jwt.PyJWKSet.from_json(jwks_text)
    except Exception as error:  # noqa: BLE001 - the report says what it was
        report["set"] = {"ok": False, "error": f"{type(error).__name__}: {error}"}
        print(json.dumps(report))
        return
    report["set"] = {"ok": True, "kids": [key.key_id for key in key_set.keys]}
    for entry in tokens:
        try:
            result = {"name": entry["name"], "ok": True, **verify(key_set, issuer, entry)}
        except Exception as error:  # noqa: BLE001 - a refusal is a result
            result = {"name": entry["name"], "ok": False, "error": f"{type(error).__name__}: {error}"}
        report["tokens"].append(result)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
