// Verifies tokenmint's access tokens with `jose` (panva), the way a Node.js resource server
// would: createLocalJWKSet over the published JWK Set, then jwtVerify with the issuer, the
// audience and `typ: "at+jwt"`.
//
// Usage: node verify_jose.mjs ISSUER JWKS_FILE TOKENS_FILE
//
// TOKENS_FILE is a JSON array of {"name", "audience", "token"}. Prints one JSON object: whether
// the set loaded, whether this runtime's WebCrypto has ML-DSA-65, then one result per token.

import { readFileSync } from "node:fs";
import { createLocalJWKSet, jwtVerify } from "jose";

const [issuer, jwksFile, tokensFile] = process.argv.slice(2);
const jwks = JSON.parse(readFileSync(jwksFile, "utf8"));
const tokens = JSON.parse(readFileSync(tokensFile, "utf8"));

const joseVersion = JSON.parse(
  readFileSync(new URL("./node_modules/jose/package.json", import.meta.url), "utf8"),
).version;

// Whether WebCrypto here can make an ML-DSA-65 key: jose verifies ML-DSA through it.
async function webCryptoHasMlDsa65() {
  try {
    await crypto.subtle.generateKey({ name: "ML-DSA-65" }, false, ["sign", "verify"]);
    return true;
  } catch {
    return false;
  }
}

const report = {
  verifier: `jose ${joseVersion} on Node.js ${process.versions.node}`,
  webcrypto_ml_dsa_65: await webCryptoHasMlDsa65(),
  tokens: [],
};

let keySet;
try {
  keySet = createLocalJWKSet(jwks);
  report.set = { ok: true };
} catch (error) {
  report.set = { ok: false, error: `${error.name}: ${error.message}` };
}

if (keySet) {
  for (const { name, audience, token } of tokens) {
    try {
      const { payload, protectedHeader } = await jwtVerify(token, keySet, {
        issuer,
        audience,
        typ: "at+jwt",
      });
      report.tokens.push({ name, ok: true, alg: protectedHeader.alg, sub: payload.sub });
    } catch (error) {
      // jose's errors have a string code (ERR_…); WebCrypto's DOMException a name.
      const kind = typeof error.code === "string" ? error.code : error.name;
      report.tokens.push({ name, ok: false, error: `${kind}: ${error.message}` });
    }
  }
}

console.log(JSON.stringify(report));
