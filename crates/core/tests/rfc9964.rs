//! RFC 9964 ("ML-DSA for JSON Object Signing and Encryption (JOSE) and CBOR Object Signing and
//! Encryption (COSE)") examples against tokenmint's ML-DSA support.
//!
//! The vectors are the ML-DSA-44 and ML-DSA-65 examples of RFC 9964 Appendix A.1 ("JOSE"),
//! copied as data: each gives the private key `priv` (the 32-byte seed, all zeros), the public
//! key `pub`, the key's RFC 7638 thumbprint as `kid` (computed over `alg`, `kty` and `pub`,
//! Section 6, "AKP Thumbprints") and a compact JWS whose protected header holds `alg` and `kid`
//! only, over a payload that is text, not JSON. (The ML-DSA-87 example is left out: tokenmint
//! has no ML-DSA-87.)
//!
//! Checked here: the thumbprint of each `pub` is its `kid` (every build); the seed gives `pub`
//! (FIPS 204 key generation) and the JWS's signature verifies; the public JWK reads from a JWK
//! Set; and a signature made with the example key verifies only over its message and under
//! its own algorithm. In the ring build, which has no ML-DSA, the tests check that the key is
//! refused, the JWK is skipped with its reason and nothing verifies.

// The helpers below are test code too.
#![allow(clippy::unwrap_used)]

use tokenmint_core::{
    crypto::{self, Algorithm, PublicKey, SigningKey, Stack, stack, verify_signature},
    jose::{
        JwsError, KeyId, KeySet, ML_DSA_44_PUBLIC_LEN, ML_DSA_65_PUBLIC_LEN, PublishedKey,
        parse_jwks, verify_compact,
    },
};

/// One example of RFC 9964 Appendix A.1.
struct Example {
    algorithm: Algorithm,
    level: u16,
    /// The JWK's `priv`: the seed, base64url.
    private: &'static str,
    /// The JWK's `pub`, base64url.
    public: &'static str,
    /// The JWK's `kid`: its RFC 7638 thumbprint.
    kid: &'static str,
    /// The compact JWS signed with the key.
    jws: &'static str,
    /// The length of `pub` (FIPS 204 Table 2).
    public_len: usize,
    /// The length of a signature (FIPS 204 Table 2).
    signature_len: usize,
}

/// The payload of both example JWSs, as text (U+2019 for the apostrophe).
const PAYLOAD: &str = "It\u{2019}s a dangerous business, Frodo, going out your door.";

const EXAMPLES: [Example; 2] = [
    Example {
        algorithm: Algorithm::MlDsa44,
        level: 44,
        private: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        public: PUB_44,
        kid: "T4xl70S7MT6Zeq6r9V9fPJGVn76wfnXJ21-gyo0Gu6o",
        jws: JWS_44,
        public_len: ML_DSA_44_PUBLIC_LEN,
        signature_len: 2420,
    },
    Example {
        algorithm: Algorithm::MlDsa65,
        level: 65,
        private: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        public: PUB_65,
        kid: "Suiu29qbfuaBaR4Ats-c6XQBePB_OpAxAwcTR_0KXVM",
        jws: JWS_65,
        public_len: ML_DSA_65_PUBLIC_LEN,
        signature_len: 3309,
    },
];

impl Example {
    fn seed(&self) -> Vec<u8> {
        crypto::b64url_decode(self.private).unwrap()
    }

    fn public_key(&self) -> PublicKey {
        PublicKey::MlDsa {
            level: self.level,
            public: crypto::b64url_decode(self.public).unwrap(),
        }
    }

    /// The public JWK as the example gives it, without `priv`.
    fn public_jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kid": self.kid,
            "kty": "AKP",
            "alg": self.algorithm.as_str(),
            "pub": self.public,
        })
    }

    /// The JWS's signing input (`header.payload`), decoded header and payload, and signature.
    fn jws_parts(&self) -> (&'static str, serde_json::Value, String, Vec<u8>) {
        let (input, signature) = self.jws.rsplit_once('.').unwrap();
        let (header, payload) = input.split_once('.').unwrap();
        let header = serde_json::from_slice(&crypto::b64url_decode(header).unwrap()).unwrap();
        let payload = String::from_utf8(crypto::b64url_decode(payload).unwrap()).unwrap();
        (
            input,
            header,
            payload,
            crypto::b64url_decode(signature).unwrap(),
        )
    }

    /// The example's key; `None` in a build without ML-DSA (ring), once it has checked that
    /// such a build refuses the key.
    fn signing_key(&self) -> Option<SigningKey> {
        let seed = self.seed();
        if stack() == Stack::Ring {
            assert!(stack().supports(self.algorithm).is_err());
            assert!(SigningKey::try_from_pkcs8(self.algorithm, &seed).is_err());
            eprintln!(
                "{}: skipped: this build's crypto stack (ring) has no ML-DSA; run with \
                 `--no-default-features --features aws-lc`",
                self.algorithm
            );
            return None;
        }
        assert_eq!(stack().supports(self.algorithm), Ok(()));
        Some(SigningKey::try_from_pkcs8(self.algorithm, &seed).unwrap())
    }
}

#[test]
fn the_examples_have_the_sizes_of_fips_204() {
    for example in &EXAMPLES {
        let alg = example.algorithm;
        assert_eq!(example.seed(), [0u8; 32], "{alg}");
        let PublicKey::MlDsa { public, .. } = example.public_key() else {
            unreachable!()
        };
        assert_eq!(public.len(), example.public_len, "{alg}");
        assert!(example.public_key().fits(alg), "{alg}");
        let (_, _, _, signature) = example.jws_parts();
        assert_eq!(signature.len(), example.signature_len, "{alg}");
    }
}

#[test]
fn the_thumbprint_of_each_public_key_is_its_kid() {
    // Needs SHA-256 only: every build.
    for example in &EXAMPLES {
        let alg = example.algorithm;
        assert_eq!(
            KeyId::of(&example.public_key()).as_str(),
            example.kid,
            "{alg}"
        );
        // The JWS names its key by that thumbprint.
        let (_, header, payload, _) = example.jws_parts();
        assert_eq!(
            header,
            serde_json::json!({ "alg": alg.as_str(), "kid": example.kid }),
            "{alg}"
        );
        assert_eq!(payload, PAYLOAD, "{alg}");
    }
    // The thumbprint covers `alg`: the same `pub` labelled with the other level is another key.
    let relabelled = PublicKey::MlDsa {
        level: 65,
        public: crypto::b64url_decode(PUB_44).unwrap(),
    };
    assert_ne!(KeyId::of(&relabelled).as_str(), EXAMPLES[0].kid);
}

#[test]
fn the_seed_gives_the_examples_public_key() {
    for example in &EXAMPLES {
        let alg = example.algorithm;
        // The seed must be exactly 32 bytes (RFC 9964 Sections 4 and 7.3), in every build.
        for len in [0, 31, 33, 64] {
            assert!(
                SigningKey::try_from_pkcs8(alg, &vec![0u8; len]).is_err(),
                "{alg}: a seed of {len} bytes"
            );
        }
        let Some(key) = example.signing_key() else {
            continue;
        };
        assert_eq!(key.algorithm(), alg);
        let PublicKey::MlDsa { level, public } = key.public_key() else {
            unreachable!()
        };
        assert_eq!(level, example.level, "{alg}");
        assert_eq!(crypto::b64url(&public), example.public, "{alg}");
        assert_eq!(key.public_key(), example.public_key(), "{alg}");
        assert_eq!(KeyId::of(&key.public_key()).as_str(), example.kid, "{alg}");
    }
}

#[test]
fn the_examples_public_jwks_read_as_a_key_set() {
    let text = serde_json::json!({
        "keys": EXAMPLES.iter().map(Example::public_jwk).collect::<Vec<_>>(),
    })
    .to_string();
    let parsed = parse_jwks(&text).unwrap();
    if stack() == Stack::Ring {
        // Skipped with the reason, never fatal to the set.
        assert!(parsed.keys.published().is_empty());
        assert_eq!(parsed.skipped.len(), EXAMPLES.len());
        for (example, (name, reason)) in EXAMPLES.iter().zip(&parsed.skipped) {
            assert_eq!(name, example.kid);
            assert!(reason.contains("does not verify"), "{reason}");
            assert!(reason.contains(example.algorithm.as_str()), "{reason}");
        }
        eprintln!(
            "the keys were skipped, as a ring build must: {:?}",
            parsed.skipped
        );
        return;
    }
    assert!(parsed.skipped.is_empty(), "{:?}", parsed.skipped);
    assert_eq!(parsed.keys.published().len(), EXAMPLES.len());
    for example in &EXAMPLES {
        let key = parsed.keys.find(example.kid).unwrap();
        assert_eq!(key.kid.as_str(), example.kid);
        assert_eq!(key.algorithm, example.algorithm);
        assert_eq!(key.public, example.public_key());
    }
}

#[test]
fn the_examples_jws_signatures_verify() {
    for example in &EXAMPLES {
        let alg = example.algorithm;
        let public = example.public_key();
        let (input, _, _, signature) = example.jws_parts();
        let verifies = verify_signature(alg, &public, input.as_bytes(), &signature);
        if stack() == Stack::Ring {
            assert!(!verifies, "{alg}: ring has no ML-DSA");
            eprintln!("{alg}: skipped: this build's crypto stack (ring) has no ML-DSA");
            continue;
        }
        assert!(verifies, "{alg}");
        // Anything else in the signing input, and the signature fails.
        let altered = input.replacen("SXTigJlz", "SXTigJly", 1);
        assert_ne!(altered, input);
        assert!(
            !verify_signature(alg, &public, altered.as_bytes(), &signature),
            "{alg}"
        );
        let mut flipped = signature.clone();
        flipped[0] ^= 1;
        assert!(
            !verify_signature(alg, &public, input.as_bytes(), &flipped),
            "{alg}"
        );
    }
    // Each signature under the other example's algorithm and key: no.
    let [a, b] = &EXAMPLES;
    for (signer, other) in [(a, b), (b, a)] {
        let (input, _, _, signature) = signer.jws_parts();
        for (alg, public) in [
            (other.algorithm, signer.public_key()),
            (other.algorithm, other.public_key()),
            (signer.algorithm, other.public_key()),
        ] {
            assert!(!verify_signature(
                alg,
                &public,
                input.as_bytes(),
                &signature
            ));
        }
    }
}

#[test]
fn the_examples_jws_lacks_the_typ_verify_compact_requires() {
    // The examples' headers carry `alg` and `kid` but no `typ`, and their payload is not JSON:
    // tokenmint's compact verification refuses them before it looks at the signature.
    let keys = KeySet::new(
        EXAMPLES
            .iter()
            .map(|example| PublishedKey {
                kid: KeyId::of(&example.public_key()),
                algorithm: example.algorithm,
                public: example.public_key(),
                low_s_only: true,
            })
            .collect(),
    );
    for example in &EXAMPLES {
        assert_eq!(
            verify_compact::<serde_json::Value>(example.jws, &keys, &["jwt", "at+jwt"]),
            Err(JwsError::WrongType),
            "{}",
            example.algorithm
        );
    }
}

#[test]
fn a_signature_by_the_example_key_verifies_only_as_signed() {
    for example in &EXAMPLES {
        let alg = example.algorithm;
        let Some(key) = example.signing_key() else {
            continue;
        };
        let public = key.public_key();
        let message = b"header.payload";
        let signature = key.sign(message).unwrap();
        assert_eq!(signature.len(), example.signature_len, "{alg}");
        assert!(verify_signature(alg, &public, message, &signature), "{alg}");
        assert!(
            verify_signature(alg, &example.public_key(), message, &signature),
            "{alg}"
        );
        // A changed message does not verify.
        assert!(
            !verify_signature(alg, &public, b"header.payloaD", &signature),
            "{alg}"
        );
        assert!(!verify_signature(alg, &public, b"", &signature), "{alg}");
        // Nor does the signature under another algorithm: the other ML-DSA level, with the
        // key as it is or relabelled to that level, or any other algorithm at all.
        let other_level = if alg == Algorithm::MlDsa44 { 65 } else { 44 };
        let PublicKey::MlDsa { public: bytes, .. } = &public else {
            unreachable!()
        };
        let relabelled = PublicKey::MlDsa {
            level: other_level,
            public: bytes.clone(),
        };
        for other in Algorithm::ALL.into_iter().filter(|a| *a != alg) {
            assert!(
                !verify_signature(other, &public, message, &signature),
                "{alg} as {other}"
            );
            assert!(
                !verify_signature(other, &relabelled, message, &signature),
                "{alg} relabelled as {other}"
            );
        }
    }
}

// ML-DSA-44
const PUB_44: &str = concat!(
    "unH59k4RuutY-pxvu24U5h8YZD2rSVtHU5qRZsoBmBMcRPgmu9VuNOVdteXi1zNIXjnqJg_GAAxepLqA00Vc3lO0",
    "bzRIKu39VFD8Lhuk8l0V-cFEJC-zm7UihxiQMMUEmOFxe3x1ixkKZ0jqmqP3rKryx8tSbtcXyfea64QhT6XNje2S",
    "oMP6FViBDxLHBQo2dwjRls0k5a-XSQSu2OTOiHLoaWsLe8pQ5FLNfTDqmkrawDEdZyxr3oSWJAsHQxRjcIiVzZuv",
    "wxYy1zl2STiP2vy_fTBaPemkleynQzqPg7oPCyXEE8bjnJbrfWkbNNN8438e6tHPIX4l7zTuzz98YPhLjt_d6EBd",
    "T4MldsYe-Y4KLyjaGHcAlTkk9oa5RhRwW89T0z_t1DSO3dvfKLUGXh8gd1BD6Fz5MfgpF5NjoafnQEqDjsAAhrCX",
    "Y4b-Y3yYJEdX4_dp3dRGdHG_rWcPmgX4JG7lCnser4f8QGnDriqiAzJYEXeS8LzUngg_0bx0lqv_KcyU5IaLISFO",
    "0xZSU5mmEPvdSoDnyAcV8pV44qhLtAvd29n0ehG259oRihtljTWeiu9V60a1N2tbZVl5mEqSK-6_xZvNYA1TCdzN",
    "ctvweH24unV7U3wer9XA9Q6kvJWDVJ4oKaQsKMrCSMlteBJMRxWbGK7ddUq6F7GdQw-3j2M-qdJvVKm9UPjY9rc1",
    "lPgol25-oJxTu7nxGlbJUH-4m5pevAN6NyZ6lfhbjWTKlxkrEKZvQXs_Yf6cpXEwpI_ZJeriq1UC1XHIpRkDwdOY",
    "9MH3an4RdDl2r9vGl_IwlKPNdh_5aF3jLgn7PCit1FNJAwC8fIncAXgAlgcXIpRXdfJk4bBiO89GGccSyDh2EgXY",
    "dpG3XvNgGWy7npuSoNTE7WIyblAk13UQuO4sdCbMIuriCdyfE73mvwj15xgb07RZRQtFGlFTmnFcIdZ90zDrWXDb",
    "ANntv7KCKwNvoTuv64bY3HiGbj-NQ-U9eMylWVpvr4hrXcES8c9K3PqHWADZC0iIOvlzFv4VBoc_wVflcOrL_SIo",
    "aNFCNBAZZq-2v5lAgpJTqVOtqJ_HVraoSfcKy5g45p-qULunXj6Jwq21fobQiKubBKKOZwcJFyJD7F4ACKXOrz-H",
    "IvSHMCWW_9dVrRuCpJw0s0aVFbRqopDNhu446nqb4_EDYQM1tTHMozPd_jKxRRD0sH75X8ZoToxFSpLBDbtdWcen",
    "xj-zBf6IGWfZnmaetjKEBYJWC7QDQx1A91pJVJCEgieCkoIfTqkeQuePpIyu48g2FG3P1zjRF-kumhUTfSjo5qS0",
    "YiZQy0E1BMs6M11EvuxXRsHClLHoy5nLYI2Sj4zjVjYyxSHyPRPGGo9hwB34yWxzYNtPPGiqXS_dNCpi_zRZwRY4",
    "lCGrQ-hYTEWIK1Dm5OlttvC4_eiQ1dv63NiGkLRJ5kJA3bICN0fzCDY-MBqnd1cWn8YVBijVkgtaoascjL9EywDg",
    "JdeHnXK0eeOvUxHHhXJVkNqcibn8O4RQdpVU60TSA-uiu675ytIjcBHC6kTv8A8pmkj_4oypPd-F92YIJC741swk",
    "YQoeIHj8rE-ThcMUkF7KqC5VORbZTRp8HsZSqgiJcIPaouuxd1-8Rxrid3fXkE6p8bkrysPYoxWEJgh7ZFsRCPDW",
    "X-yTeJwFN0PKFP1j0F6YtlLfK5wv-c4F8ZQHA_-yc_gODicy7KmWDZgbTP07e7gEWzw4MFRrndjbDQ",
);
const JWS_44: &str = concat!(
    "eyJhbGciOiJNTC1EU0EtNDQiLCJraWQiOiJUNHhsNzBTN01UNlplcTZyOVY5ZlBKR1ZuNzZ3Zm5YSjIxLWd5bzBH",
    "dTZvIn0.SXTigJlzIGEgZGFuZ2Vyb3VzIGJ1c2luZXNzLCBGcm9kbywgZ29pbmcgb3V0IHlvdXIgZG9vci4.knI1",
    "Q_9CIzLH5Xy94Kkc7WVKqZcAgtJ3mNf0GUj1uLA6YXAWFJfXkh-zQxUtEl3UIC7zPCiUwKTDR6ZsuUmFj8Ctb_6a",
    "H64hElN7weS_1m5okCy8GqHNL2lsfclCH3Y2f4QNP-DLVS1XsuboDA7Dw3ir2IdYKIfWJyIU7ROHgd24nuun1zJb",
    "xcLJC2EKt2M8R0wZudcIE9nm5oPzYXq0z-hPsKoXp9leVYkqgMmO9Lo8SP_1YYIEth3B8v-GuP249KDTFRKPjISm",
    "K4aPCknjtjihHsQVv2XePXxKExatHl4qhsiiW-y-EJXa1Kfw4WYpLA7B4_5Ids--cIJmIx7f6xxAWKh5qoBWq1QI",
    "OaaFuzsAraRW3NOEuzThew1En85gI3GcRTZGp-VDGyxHm0Al04cyWo2bxAVOF0fbDc265iP2mCNw6Qg10jIJeAhG",
    "B4OAMYcBUWJAG0l1MN1U_koEmGh5dXKnQTRl461ea_Cq3DLkcA2Dj2woWUFyDTmQ8oO_yheASfJacyRm7_suj88z",
    "5XFNo8F53P8OxTG9xUPlrwvH-TAq7AH3NU4SNXApyVKTU3zhx1tJ34nlTILcTujXVJVo_f0DZfUxr6JSCYqvy4z1",
    "Kl0wDQzd55aopyFtQxvOPhcCHbAN34g2Ug750Jm835fl7NOxcqoMbuTcgH68kr37M-Pdh2K9WazXUJgCupgdIWW8",
    "WjfOjmTiF59CrVtfVtK2qDzF40OENCfqtNPQlZe5cN5p0P8arj4USB8HCPh7NdqQBAeWrw0wsYhdiM39lrSkA8mL",
    "RYMhZnqKGCTPCrHXDdEjRKYRNaqIUT44laYl5c27K0v-ozjKPu6tzEhkYSC4XZ3LehEFtmAzOE0mHbhKMgXqjoPJ",
    "jOrGIPibX3jwK8_Q5RmMOXtXo8R3vXfBaUdQoLeeyywNYE0nIcsl4z5a8_utwEFiVf0VK2pdviyiOPVSi3zOMAmq",
    "z6gFhVy8aMMQOWZAEAuTyDw7ZWG6diwptmrgSXZotW63I19S2ZH7keCXRIq_pFLuYhOuG6dD4MkouILRdC9bXZML",
    "rNDq7COpUOO86aQVlYd0pR935WpUw-V6obSRnHlRFZSmUSIB7h1Q0ImciRzojN93Xhw7qpzGzdzDEO3OOTayXaSG",
    "_0YHQyy-eH4hBbmgt_LBx120g1eY4XHeHFRfTfetHkL5ZZusX1jQ_nk9ez4XBG_6hRtTNSuVBsYlH8-KUuR5-qTP",
    "8dkvRf8Wk2hHoUr2sz5YO_xDFCMMTrt8ahiMyfjo5ih5Fwo3riFbFUGKibniTLXspFd4spcNK_WchlZLRgkPK4jh",
    "6Z_X8JJkHxvQhpyouHQFyGxgBrl24x-_EB1zbWMhJthmm8DiKt-nzKaJz8Cju1-HwCpg76CRqRsEz2hyKEpbb4M5",
    "KQSj3AsENCroVmQ5QIv3K2XNRkve4vjBmP6sV2b6GSY_UeRvPElA7SUgBGTKbn-c0aYhBuB8plPhRTBa55_cFqAm",
    "NmavF1-fdMktJuIaH2f-K0zZCzbHw54998T7kIWgyMsyGCAvynEB_khOqwT7tCjg5HQ8SIjdnRYW0kjZfjt5LJbG",
    "A-PnRo8gPVQVGeYDP2vsSXhNJY94AitKCY1srcSsuYDrhNBKrnoJ1uEsMPVHsgFw_ZHMyAEaVQughSNW4fm8q6_1",
    "Nv4zLutDITzmAL6a6i6-WS6QRIs_4VUtwr5cXXIFDDeHVWeGcNivQ6W9urEUP4crguiq7z_DTiYaGfUksub-T7mw",
    "0zU8ZoOSd5pUTpJLv-IYIUAl6CscHvunnRLEKqpW1Sa1dcFZs5VP4AfR3mg7wX4Vlq1AHnpFxE2L1LZiKoTc9jDE",
    "OvTDkxr86gMkwMm6RdyPF_q48AVJ1br8Qp88-4B84X52zZ5cw-IJYe-HiVJ29LpeYm340_rWivpy-UB5i9TKlMrx",
    "f94y1okzZTPbP3_v1_XX0nE7RTLz98EA96euJ7l3EpbEqks7mh6i1FJNnvvlM_u29sYobJ6PUT-i1VlQnF_JBARK",
    "Ez74pBXm1l5Y5Lo15rsIlaQHinUBCO8fHCHI59LAfKusN4JmodDqLYwkWijEL_sfrC6LtrbXqpM1pw09zSrs_tS1",
    "RQ-LnWHuPrU5KLCzv53JKrh8lU_cdBowe_F-Ib_Ui4bQ2FME-0mnyG0XijHUsrGMZ9dfowvIkr83JpqwlFOZAwMm",
    "SGPNPEJRw9kDshjotndUB5S1UCfv_U4IoVn7WgvxeCS-BBxqyWfh7YTdf73EnmGwVYxVjlXaHCeeTZmUacnT4MQU",
    "AcbFjTq6BBlboAQGWP2FZWpd6HNnruv744VeWmfgLk9z5567wFhwuXMkmE2xvDo4wP80xutjUfsePx5YkLxhY1Xs",
    "WqTZr19tInxJWWq8RLZsWPmtq5wZ5ucBMasCLpOABenYZdSAcQNhC73wLS0Z2s1HQhBoIl7lr1p372LZs_Seu1u_",
    "8Fo7DoJqRpKaNoc2_JUMmn7TUZS8zLyzxgeq8R8iNbRP20DwDBNXocsTDBKaQrtB-QiEPySQtJa4G61XeNZyh5aG",
    "zfoWZ9OmjZG9pbbehcqwIrt-ESjPyeT6sfSrvOfTZr7fBXwpUs2rS4BrlNse5g_h8CQiik8aaOTOEPkXiyg4s5De",
    "wRlgDZHS-3g-YXPUIBNO62_HxknkMpkJvKW-tkvDbgtxvy4nG80ul6W_KeRsoEKDTRYNKZWxXjZITNa0h6agnwNC",
    "JKEbFg3Qhre394c0i60mfP9YIgKTXrCX3Yt2eX-6mPzYmLbSbV5jH69v6WZqYV2WAj-9DU0diR4hOfYQaJnBZhTt",
    "Kb-SQsYiFuN1BDJ3v9eM9K8hq91NBdCHVa-Thk9Dov-JkcTZnZGRRyW5yXHUV4NOEltBXh8GkjjDvs5Yo3u-2rPC",
    "XjK1aGPSI1W8BaUJLQY5sbfAVCAuUHBv-Vlh5Qamt-lgeKguhqTSuy-tjabOb5kiBOG7xGQt3z-XYXtnWFDCii-5",
    "h11XfZsQ-xQxy8gSfdMz4hDK9Nw_VQt6fzWiQY0Th_dHzVki0MUfVfsDUjgblhD6j0wgbs3zdj-GM3rtt8oit0wX",
    "x11bIOaOKgf07tP0wimVXMRqRWe7LCUAKTE5PkRKU1x_h4iusrzi5uwKDhc4SmRwm6KssNrmCAkiNDZCREVKd3yM",
    "nrjA4PAGDzdKWVplcHJ6jKmrsbrEztHd9QAAAAAAAAAAAAAAABIfMEQ",
);

// ML-DSA-65
const PUB_65: &str = concat!(
    "QksvJn5Y1bO0TXGs_Gpla7JpUNV8YdsciAvPof6rRD8JQquL2619cIq7w1YHj22ZolInH-YsdAkeuUr7m5JkxQqI",
    "jg3-2AzV-yy9NmfmDVOevkSTAhnNT67RXbs0VaJkgCufSbzkLudVD-_91GQqVa3mk4aKRgy-wD9PyZpOMLzP-opH",
    "XlOVOWZ067galJN1h4gPbb0nvxxPWp7kPN2LDlOzt_tJxzrfvC1PjFQwNSDCm_l-Ju5X2zQtlXyJOTZSLQlCtB2C",
    "7jdyoAVwrftUXBFDkisElvgmoKlwBks23fU0tfjhwc0LVWXqhGtFQx8GGBQ-zol3e7P2EXmtIClf4KbgYq5u7Lwu",
    "848qwaItyTt7EmM2IjxVth64wHlVQruy3GXnIurcaGb_qWg764qZmteoPl5uAWwuTDX292Sa071S7GfsHFxue5ly",
    "dxIYvpVUu6dyfwuExEubCovYMfz_LJd5zNTKMMatdbBJg-Qd6JPuXznqc1UYC3CccEXCLTOgg_auB6EUdG0b_cy-",
    "5bkEOHm7Wi4SDipGNig_ShzUkkot5qSqPZnd2I9IqqToi_0ep2nYLBB3ny3teW21Qpccoom3aGPt5Zl7fpzhg7Q8",
    "zsJ4sQ2SuHRCzgQ1uxYlFx21VUtHAjnFDSoMOkGyo4gH2wcLR7-z59EPPNl51pljyNefgCnMSkjrBPyz1wiET-uq",
    "i23f8Bq2TVk1jmUFxOwdfLsU7SIS30WOzvwD_gMDexUFpMlEQyL1-Y36kaTLjEWGCi2tx1FTULttQx5JpryPW6lW",
    "5oKw5RMyGpfRliYCiRyQePYqipZGoxOHpvCWhCZIN4meDY7H0RxWWQEpiyCzRQgWkOtMViwao6Jb7wZWbLNMebwL",
    "JeQJXWunk-gTEeQaMykVJobwDUiX-E_E7fSybVRTZXherY1jrvZKh8C5Gi5VADg5Vs319uN8-dVILRyOOlvjjxcl",
    "msRcn6HEvTvxd9MS7lKm2gI8BXIqhzgnTdqNGwTpmDHPV8hygqJWxWXCltBSSgY6OkGkioMAmXjZjYq_Ya9o6AE7",
    "WU_hUdm-wZmQLExwtJWEIBdDxrUxA9L9JL3weNyQtaGItPjXcheZiNBBbJTUxXwIYLnXtT1M0mHzMqGFFWXVKsN_",
    "AIdHyv4yDzY9m-tuQRfbQ_2K7r5eDOL1Tj8DZ-s8yXG74MMBqOUvlglJNgNcbuPKLRPbSDoN0E3BYkfeDgiUrXy3",
    "4a5-vU-PkAWCsgAh539wJUUBxqw90V1Du7eTHFKDJEMSFYwusbPhEX4ZTwoeTHg--8Ysn4HCFWLQ00pfBCteqvMv",
    "MflcWwVfTnogcPsJb1bEFVSc3nTzhk6Ln8J-MplyS0Y5mGBEtVko_WlyeFsoDCWj4hqrgU7L-ww8vsCRSQfskH8l",
    "odiLzj0xmugiKjWUXbYq98x1zSnB9dmPy5P3UNwwMQdpebtR38N9I-jup4Bzok0-JsaOe7EORZ8ld7kAgDWa4K7B",
    "Axjc2eD540Apwxs-VLGFVkXbQgYYeDNG2tW1Xt20-XezJqZVUl6-IZXsqc7DijwNInO3fT5o8ZAcLKUUlzSlEXe8",
    "sIlHaxjLoJ-oubRtlKKUbzWOHeyxmYZSxYqQhSQj4sheedGXJEYWJ-Y5DRqB-xpy-cftxL10fdXIUhe1hWFBAoQU",
    "3b5xRY8KCytYnfLhsFF4O49xhnax3vuumLpJbCqTXpLureoKg5PvWfnpFPB0P-ZWQN35mBzqbb3ZV6U0rU55DvyX",
    "TuiZOK2Z1TxbaAd1OZMmg0cpuzewgueV-Nh_UubIqNto5RXCd7vqgqdXDUKAiWyYegYIkD4wbGMqIjxV8Oo2ggOc",
    "Sj9UQPS1rD5u0rLckAzsxyty9Q5JsmKa0w8Eh7Jwe4Yob4xPVWWbJfm916avRgzDxXo5gmY7txdGFYHhlolJKdhB",
    "U9h6f0gtKEtbiUzhp4IWsqAR8riHQs7lLVEz6P537a4kL1r5FjfDf_yjJDBQmy_kdWMDqaNln-MlKK8eENjUO-qZ",
    "Gy0Ql4bMZtNbHXjfJUuSzapA-RqYfkqSLKgQUOW8NTDKhUk73yqCU3TQqDEKaGAoTsPscyMm7u_8QrvUK8kbc-Xn",
    "xrWZ0BZJBjdinzh2w-QvjbWQ5mqFp4OMgY94__tIU8vvCUNJiYA1RdyodlfPfH5-avpxOCvBD6C7ZIDyQ-6huGEQ",
    "EAb6DP8ydWIZQ8xY603DoEKKXkJWcP6CJo3nHFEdj_vcEbDQ-WESDpcQFa1fRIiGuALj-sEWcjGdSHyE8QATOcuW",
    "l4TLVzRPKAf4tCXx1zyvhJbXQu0jf0yfzVpOhPun4n-xqK4SxPBCeuJOkQ2VG9jDXWH4pnjbAcrqjveJqVti7huM",
    "XTLGuqU2uoihBw6mGqu_WSlOP2-XTEyRyvxbv2t-z9V6GPt1V9ceBukA0oGwtJqgD-q7NXFK8zhw7desI5PZMXf3",
    "nuVgbJ3xdvAlzkmm5f9RoqQS6_hqwPQEcclq1MEZ3yML5hc99TDtZWy9gGkhR0Hs3QJxxgP7bEqGFP-HjTPnJsrG",
    "aT6TjKP7qCxJlcFKLUr5AU_kxMULeUysWWtSGJ9mpxBvsyW1Juo",
);
const JWS_65: &str = concat!(
    "eyJhbGciOiJNTC1EU0EtNjUiLCJraWQiOiJTdWl1MjlxYmZ1YUJhUjRBdHMtYzZYUUJlUEJfT3BBeEF3Y1RSXzBL",
    "WFZNIn0.SXTigJlzIGEgZGFuZ2Vyb3VzIGJ1c2luZXNzLCBGcm9kbywgZ29pbmcgb3V0IHlvdXIgZG9vci4.zmO9",
    "_0bLgJAegoVNymfRo4nGPK5lVtSFGnDbzfzYAD5mUEXpaBUg4itvZ8rAUZi4HLb59QqDQSBSpMXC0axajXOMV_Yt",
    "tfmwGgC6FMyaMRZkx-A92bGiNLutqX9jcwRLJqXjMkUGhz2YpHe_mV9QpxokRCH9K6jkyFZp4hZIwFXhRt1z0OGI",
    "a5rOoHKsxOCAUZhTXKiASb3vk9lUASW0-Y58WKT4rVmst7_dvk7FVbe9A9I21IH-Tqlg1zSMoI8ozh1aBSG92uPu",
    "rsBd5KRcOlJwhNUYJDgHScIHXM6Hzk6u98W5orKPHu1rDIK7rHJI4Zrui4wBjmQLsPE01LcZHRx4zexDCTMCGSoj",
    "bL1FiT9CU3oUep4oWOytTEAf2eCi3qDD0iSrp5IslCueoNjtGOFSnUKlsnCeiZF-tNqTy1KpJ3ErTaNPcCzCvsEa",
    "lhJwFa7NOWyQOEJUzcLaPY_VEFwcCX1Gk4bEI-1rLDiyZqkXgny-U2oRnll0d3u-e2S_Rg-_eL1H_XEbPs_km-82",
    "2G7JY9li4muZ5KVvfQf_5hza1V4GweqvmeWuZL1gBU2HPS7x1tWL798ALOk1rMnxsvBOPiSLxAEdPoIuw0_qMlKj",
    "TavJcDFaihgCgGMUk5SjU65IWQS9t4rgxv9Idu0OCsozo9iCBqrVcnaOwUpkMhV6KeiXA7kQNcegVaMio40cjSyM",
    "iEkhGIOEOf8L6eohOh_bPPRYs-8NrZ-VOBJCa0ubJcDU1cTuGNCa7nWWxAqfVjcMyNDx9XHBYBnSOcFNfMP7S9nv",
    "qw3KC50U_t2PH5SfwS9w4DLvcgrlEP_gwSgOXuf-i0tRGLQly3IMB7O8QOnkofyFaCUDZeurFkGTpoBfT6lzbJzn",
    "QAMIDPNcWUsRlNTXsH7atC1nxl4xDJLmmPLCxiErfxbCW5gMWox0kLDwfsFj57hsXG75cZ4jiBbq9b0VjD7Vkf8x",
    "lc06ExdzBhGXz8oJiaT5WHDsuzGtrFmh6diN1cO4Cxjr6KdNE8IlyxsfXxQ4AI-0ke3gMyi0DOGeHgHuNc-JHD7o",
    "Z6njUMSTBkR1aUMNT7n_2nfFTDCdqW1HaMsMwIHfLOk6dayKXE1oMqY5Op8S5k_SAaknR0vNxmhlTA5h3bZJ28NZ",
    "xM6R7D00_eBEYrH20rmRP7G7kXKzLvmWeaKAh4oQHiqjVhgauiePDRiMmjx0OhdQnMCtO8PWbx06SiviRn_5hswd",
    "VV08B48MVHqbM2AxCLLJYinC2Ep0302Uo0DI-rTNZ1Znn58kM7VCskcxDLsH9AYvPz-HQr3H7Xg0ElwjYn-jJXgZ",
    "_cdnLFt4_TuKQdpw_qhvyrNjOx0Mdc-1PrwoWqpA9sSv_pS5lwI2qNVHI2Vj2mZHByod1QUeOQExf3SBjP_FHEAU",
    "zUu1OK8M-1SQZGzJT2su3a6ZnMnp0U5qdXyMONFoI2jJ2hDjt7QEQsLx-rvaLxZMJtc2z0MHdwJGAC_kug7XjH3S",
    "WQZzBu7zzreIaSwr2A2oobeZiAydwb8LX2QsY9Jr_NphGAMAqzrpkuaMyBd_pFTKMp9s0GYxwyG1ZD9uRuPI9imA",
    "4CS7bt-O8YvbWg6eQ-qa9OqDlxNt3Xc32TniQFVxVxN6PDY33XXU-Rpvd1w47NZ48nkyJzjD8Xlbvk9p2ynxWHr-",
    "Sto5HXZdru4j8ETUW7ri3mEG1m_dxAbAe2kVbsBp2I1vQppugbmRexuMRLdYFIKqNm0qpQoWTr_k2t5KHnWolrSb",
    "FH7Usm8Pwyi4sNhh4_yRHADO2q2o19zCCx2plDSMeYI74CQPRGLlK_GLM4E5Bzfny3E2eaE5_gQBTSGNHpQtJB0i",
    "pPwDjqsjDCXqXupCkRta1vxng4coi2-vWYvKu6mq9HhdovHAaWrZRyvuPPI4ZDN_NkmfQR8HogR6NLVhLlRp1cwM",
    "ArSSDA3f8QlnjdbaeutxRXvFnCCjBk79ws8VGdWAuRmIWgoEFeVAVxkJjJ07zOW8I3kNfB6pnxsZmJwWAGqWc1Ul",
    "PmkNBstmSXinAzbdl-W-kn1XRDuhzTafHnkCbKS5XgJKsWD2FrhcnCaxxRxuxIGxijofjD4ihmJoYDFh1FYs9IcC",
    "-szEfMSekanWOIZCHd1fVzTSbLr5bNaOXR2sO1muFX7w22m8pBVD3fyOHK2JnK4FBCnEBrruMIDaqqu8Z4xesAHK",
    "fxY67w-25eUuvVCGL3xpXSyp90684ICkG4STztP1shLVsxKDA-37sKKplqemERlMPY4vDM1Np8JlVawbSGIuom20",
    "g6p2KV_zpIPwx9vd1nAiaeZbryf3N5gtL-dOq-c6uZhTCx9OLBtLGE3BcAmn5JFjMGQFxyTL07BluNu24Kf-lttG",
    "j9jzbwPZYrok-SnMilXGFEqB3D3cKCOlWjsgg_3cUW1uMp4KlWQvkimV9Pd7cY70w607jcYBJ3MlFZ8EeWeYPZ9q",
    "u6xwidA8XlLHxXxfLIJOgfpU8MTppfxdnMhqNSvH_Hx57oDphbUks5K1Z8-O4dSnNqQ-ZWbhaAydYQFDKuUF6HYT",
    "AvaWhJmACxhTkTp2t6-P3bev-FcdFIdszJC9LxWtJ96LY_GV4Qvp0hiIdyP1BukWNHtsXK2Rxres3_4Cndg2BOGx",
    "VcKZ9YpQDCUy76GRbTCenqjD-SG5sVUEVha5yxbKArPr2-Xpgk8cuZBRSAdmPNRdxCgUtldfCLeL7xhJvryMouxf",
    "Q75PMBaImHcsMd95075ePt_VkClUaUj55Y9E81FbOEchPfud2w3TtSvRPvB8-RgY8sLJUAclxcUGE4PnKSZJ7TIB",
    "UtHD6uyZ0-nC5KGxbXZsBEzUeHns4ix0Wmo6-6vAM4PGK3qRA1VAhtKXyvNcAfVccVi8KJMK9Mz2eIOXPATvyRy3",
    "4Ltrcg8tcgK0ftYqEWYpAZ2fVpZBXcYfTIinuLN0-qLra388EZuu59jvmRD7mUv1msMWVMGVeBoNP3lJaJGGWK8i",
    "Yyu4q7Grq-6WXr5qCz_7kwAtVJdb-zW8U3jLJ3tRSYlyjlpzeVAGjDQ6Yni5y9x4BF-5QUqcoGMLLglyx2WOCELT",
    "8IW7nsV21QnqqAbtCzZ76UtEdmUuEOTyqiKQZ0lrjMRm3YrCvJKxtR5thhTRka708NzBvwSRs-JxGG__EWjHhT-a",
    "B4VL3IL_oz3mt3iQoszfA-SzHcKU1laZMBuUCyxks6KiJgQGZRPXyaxxDtqZdaRP8Ic5CmuPeyu3kafi0L6LFijs",
    "UxnSGxTpgu7hfvcmowQijfE9_ylvg8k_EbI2miG11giODVCYb7k9Yjyriwc9dSUUZ7XoiS24hWYUX6BGGQNN3wVH",
    "PkDkOVSDBYTjto99ulquryx4K_UMCu9sQVNxBfMh8tLN7O9-MXlnJbHfKfqFHiPGdIYOBpwuqJdAJiyiuSG3gJxM",
    "G_wuwNkBWoO--iOm6PIarCyvL8_P-tuUfT4zIgjJJ3o6YJhbo-q2K82ZFmHuILyzfDSGtHDZpZIR7XnRQWet90cJ",
    "EHL5k653kvyEHJg0iUiE0iwNA5d_4gBq3vmw1J74hwAHx0Z_iYEcPS6hDGow8M8D7UJTZDkUV_86zj2YqGm_QC_a",
    "AeD__NP6sa61bI9-gTOzvYc0JiExKTDjOK9fIvHaV-HN4xr2vWner8o6jPyETvGM8D7aEezlUVOEFwALmhJPSMAq",
    "_Fk9JlcIUuC-ITJZNtNz9Awfiru3wkPja1bXN76WAuRHjia0x5ptgMCy2py_vSHZybfIS85ZjsOQ-i_e_niBzhyz",
    "XwzBaLEyEitbF4ZQx5c88lXKDMpe9tirAI6XAcqLf4UZkD8Wm2YV7hhVfxLQ1AWLekWE9DZljCtE-SbS1EWNGR8f",
    "aXKCvaZznRyoqdWz8IN3w7KvaA_ZrEKkIXkkreztG6pI06DlDHCl_sU6rCOoyQf6y1AY77Ob4SdkSRoBHGgR6Uv-",
    "LrxHpyJ6trzccu0kqxubHrkW2yHcqe6enVf43zYwWKUeJJZ10bt3a92ziSne-3aj6v3guiKoJoLnV_9h8rUF6zor",
    "TWE-Tq58tYfb5SmGf4iCJ5cy9LTY0COIfwJtPkUmyBCZwUhWJnV24P5pOZPe_CckQ28xv5J7Zf4Bvqrq_rhubFEh",
    "TJ5JvdMfz8Whc56WSHX7GRKEMqXVp3pHohBvOyT9BmotzIlibVklJy4gzkzUcjJJOld-BOaM_cnMiHpoyKXSJAXT",
    "NwXngzEpbvDP2Y0fnrgqDpO3RR3gINaZLRmeG0WI4wWBMMfw8PHjpyV17C_1hmfRI-darbZcX7PD3N4Rw4lBACyk",
    "_wnOHBcAS-5cLZEzNmFmhc4iO4msz_seQ1N0drbB0NoUVWBmcY3pGC9TiY6f6Pn-FBUnQkuBhIyPtgAAAAAAAAAA",
    "BgwVHCUv",
);
