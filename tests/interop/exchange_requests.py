"""Token exchange (RFC 8693) from an outside client: Python `requests` over mutual TLS, the
tokens checked with PyJWT, the way a Python service in the call chain would do it.

Usage: exchange_requests.py BASE_URL ISSUER CA_PEM CERT_DIR

BASE_URL is where the server answers (https://localhost:PORT), ISSUER the issuer it names
itself, CA_PEM the CA its certificate and the clients' chain to, CERT_DIR holds a.pem/a.key
(client `a`, who calls https://b.example) and b.pem/b.key (client `b`, who serves
https://b.example and may call https://c.example on a's behalf), as registered by
tests/integration/exchange.rs's chain_clients(). The steps:

1. as A, client_credentials for https://b.example (`resource`);
2. delegation: as B, exchange A's token for https://c.example (`audience`);
3. down-scoping: as B, exchange that delegated token (its own) for `orders:read` only;
4. refusal: as B, exchange the down-scoped token asking for more than it has: 400
   invalid_scope.

Each token is verified with PyJWT against the key set the server publishes (the key its `kid`
names, the algorithm taken from that JWK; signature, issuer, audience, exp/iat/nbf), and its
claims checked (sub, client_id, act, cnf.x5t#S256 against B's certificate, scope, exp). Prints
one JSON report of what it checked; on a failed check it says which on stderr and exits 1.
"""

import base64
import hashlib
import json
import os
import sys

import jwt
import requests

B_AUD = "https://b.example"
C_AUD = "https://c.example"
ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
TIMEOUT = 10


class CheckFailed(Exception):
    """A check of the server's answer that did not hold."""


def check(condition, message):
    if not condition:
        raise CheckFailed(message)


def thumbprint(cert_pem_path):
    """base64url (no padding) of the SHA-256 of the certificate's DER (RFC 8705 x5t#S256)."""
    with open(cert_pem_path, encoding="ascii") as f:
        lines = f.read().strip().splitlines()
    begin = lines.index("-----BEGIN CERTIFICATE-----")
    end = lines.index("-----END CERTIFICATE-----", begin)
    der = base64.b64decode("".join(lines[begin + 1 : end]))
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


class Server:
    """The server's metadata, its key set, and a session per client certificate."""

    def __init__(self, base_url, issuer, ca):
        self.base_url = base_url.rstrip("/")
        self.issuer = issuer
        self.ca = ca
        anonymous = self.session(None)
        response = anonymous.get(
            f"{self.base_url}/.well-known/oauth-authorization-server", timeout=TIMEOUT
        )
        check(response.status_code == 200, f"metadata: HTTP {response.status_code}")
        metadata = response.json()
        check(metadata.get("issuer") == issuer, f"metadata names issuer {metadata.get('issuer')!r}")
        check(
            EXCHANGE_GRANT in metadata.get("grant_types_supported", []),
            f"metadata does not offer token exchange: {metadata.get('grant_types_supported')}",
        )
        self.token_endpoint = self.here(metadata["token_endpoint"])
        jwks_url = self.here(metadata["jwks_uri"])
        response = anonymous.get(jwks_url, timeout=TIMEOUT)
        check(response.status_code == 200, f"{jwks_url}: HTTP {response.status_code}")
        self.keys = jwt.PyJWKSet.from_dict(response.json())

    def here(self, url):
        """`url` (under the issuer's name) at BASE_URL, where this server answers."""
        check(url.startswith(self.issuer + "/"), f"{url} is not under {self.issuer}")
        return self.base_url + url[len(self.issuer) :]

    def session(self, cert):
        """A session trusting CA_PEM only and presenting `cert` (a (pem, key) pair), or none.

        trust_env is off: with it, REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE in the environment
        would override the session's `verify` (psf/requests#3829), and an HTTPS_PROXY could
        take the requests elsewhere.
        """
        session = requests.Session()
        session.trust_env = False
        session.verify = self.ca
        session.cert = cert
        return session

    def client(self, cert_dir, name):
        """A session as client `name`, its certificate and key from CERT_DIR."""
        pem, key = (os.path.join(cert_dir, f"{name}.{ext}") for ext in ("pem", "key"))
        return self.session((pem, key))

    def token(self, session, form):
        """POSTs `form` to the token endpoint: the status and the JSON body."""
        response = session.post(self.token_endpoint, data=form, timeout=TIMEOUT)
        check(
            response.headers.get("content-type", "").startswith("application/json"),
            f"token endpoint answered {response.headers.get('content-type')!r}: {response.text}",
        )
        check(
            "no-store" in response.headers.get("cache-control", ""),
            f"token endpoint answer without Cache-Control: no-store: {response.headers}",
        )
        return response.status_code, response.json()

    def granted(self, session, form, what):
        status, body = self.token(session, form)
        check(status == 200, f"{what}: HTTP {status}: {body}")
        check(body.get("token_type") == "Bearer", f"{what}: token_type {body.get('token_type')!r}")
        check(
            isinstance(body.get("expires_in"), int) and body["expires_in"] > 0,
            f"{what}: expires_in {body.get('expires_in')!r}",
        )
        return body

    def claims(self, token, audience):
        """The claims of `token`, verified with PyJWT against the published keys."""
        header = jwt.get_unverified_header(token)
        check(header.get("typ") == "at+jwt", f"typ is {header.get('typ')!r}, not at+jwt")
        try:
            key = self.keys[header["kid"]]
        except KeyError as error:
            raise CheckFailed(f"no published key for kid {header.get('kid')!r}") from error
        claims = jwt.decode(
            token,
            key=key,
            algorithms=[key.algorithm_name],
            audience=audience,
            issuer=self.issuer,
            options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
        )
        return key.algorithm_name, claims


def scopes(value):
    return set(value.split()) if isinstance(value, str) else set()


def exchanged(server, session, subject_token, extra, what, audience, b_thumbprint, subject):
    """An exchange that must succeed as B for A: the response and the verified claims."""
    form = {
        "grant_type": EXCHANGE_GRANT,
        "subject_token": subject_token,
        "subject_token_type": ACCESS_TOKEN,
        **extra,
    }
    body = server.granted(session, form, what)
    check(
        body.get("issued_token_type") == ACCESS_TOKEN,
        f"{what}: issued_token_type {body.get('issued_token_type')!r}",
    )
    alg, claims = server.claims(body["access_token"], audience)
    check(claims["sub"] == "a", f"{what}: sub {claims['sub']!r}, not a")
    check(claims.get("client_id") == "b", f"{what}: client_id {claims.get('client_id')!r}, not b")
    check(claims.get("act") == {"sub": "b"}, f"{what}: act {claims.get('act')!r}")
    x5t = (claims.get("cnf") or {}).get("x5t#S256")
    check(x5t == b_thumbprint, f"{what}: cnf.x5t#S256 {x5t!r}, B's certificate is {b_thumbprint}")
    check(
        scopes(claims.get("scope")) and scopes(claims.get("scope")) <= scopes(subject["scope"]),
        f"{what}: scope {claims.get('scope')!r} not within {subject['scope']!r}",
    )
    check(
        body.get("scope") == claims.get("scope"),
        f"{what}: response scope {body.get('scope')!r}, token's {claims.get('scope')!r}",
    )
    check(
        claims["exp"] <= subject["exp"],
        f"{what}: exp {claims['exp']} outlives the subject token's {subject['exp']}",
    )
    check(
        claims["exp"] - claims["iat"] <= body["expires_in"],
        f"{what}: lives {claims['exp'] - claims['iat']}s, expires_in says {body['expires_in']}",
    )
    report = {
        "issued_token_type": body["issued_token_type"],
        "token_type": body["token_type"],
        "expires_in": body["expires_in"],
        "response_scope": body.get("scope"),
        "alg": alg,
        "sub": claims["sub"],
        "client_id": claims["client_id"],
        "act": claims["act"],
        "aud": claims["aud"],
        "scope": claims["scope"],
        "exp": claims["exp"],
        "x5t#S256": x5t,
        "b_thumbprint": b_thumbprint,
    }
    return body["access_token"], claims, report


def run(report, base_url, issuer, ca, cert_dir):
    server = Server(base_url, issuer, ca)
    report["issuer"] = issuer
    report["kids"] = [key.key_id for key in server.keys.keys]
    as_a = server.client(cert_dir, "a")
    as_b = server.client(cert_dir, "b")
    b_thumbprint = thumbprint(os.path.join(cert_dir, "b.pem"))

    # 1. A's own token for B.
    body = server.granted(
        as_a, {"grant_type": "client_credentials", "resource": B_AUD}, "A's client_credentials"
    )
    a_token = body["access_token"]
    _, a = server.claims(a_token, B_AUD)
    check(a["sub"] == "a" and a.get("client_id") == "a", f"A's token: {a}")
    check("act" not in a, f"A's token has an actor: {a.get('act')}")
    report["subject"] = {
        "sub": a["sub"],
        "client_id": a["client_id"],
        "aud": a["aud"],
        "scope": a.get("scope"),
        "exp": a["exp"],
        "x5t#S256": (a.get("cnf") or {}).get("x5t#S256"),
    }
    check(scopes(a.get("scope")), f"A's token has no scope: {a}")

    # 2. Delegation: B exchanges A's token to call C on A's behalf.
    delegated, b, report["delegation"] = exchanged(
        server, as_b, a_token, {"audience": C_AUD}, "delegation", C_AUD, b_thumbprint, a
    )

    # 3. Down-scoping: B narrows its own delegated token to orders:read.
    narrowed, _, report["down_scoping"] = exchanged(
        server,
        as_b,
        delegated,
        {"audience": C_AUD, "scope": "orders:read"},
        "down-scoping",
        C_AUD,
        b_thumbprint,
        b,
    )
    check(
        report["down_scoping"]["scope"] == "orders:read",
        f"down-scoping: scope {report['down_scoping']['scope']!r}, not exactly orders:read",
    )

    # 4. Refusal: more than the down-scoped token has.
    asked = "orders:read orders:write"
    status, body = server.token(
        as_b,
        {
            "grant_type": EXCHANGE_GRANT,
            "subject_token": narrowed,
            "subject_token_type": ACCESS_TOKEN,
            "scope": asked,
        },
    )
    report["refusal"] = {
        "asked": asked,
        "status": status,
        "error": body.get("error"),
        "error_description": body.get("error_description"),
    }
    check(
        (status, body.get("error")) == (400, "invalid_scope"),
        f"refusal: HTTP {status} {body}, not 400 invalid_scope",
    )
    check("access_token" not in body, f"refusal: a token came with the error: {body}")


def main():
    if len(sys.argv) != 5:
        sys.exit(f"usage: {sys.argv[0]} BASE_URL ISSUER CA_PEM CERT_DIR")
    base_url, issuer, ca, cert_dir = sys.argv[1:5]
    report = {"client": f"requests {requests.__version__}, PyJWT {jwt.__version__}"}
    try:
        run(report, base_url, issuer, ca, cert_dir)
    except (CheckFailed, jwt.PyJWTError, requests.RequestException, ValueError, KeyError) as error:
        print(json.dumps(report))
        print(f"exchange_requests.py: FAILED: {type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
