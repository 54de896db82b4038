//! How a verifier stands: whether it can verify now, and the figures behind the answer.

use std::time::Duration;

use crate::error::VerifyError;

/// A verifier's health: `problem` is `None` when it can verify. For a readiness probe, a
/// log line or a status page.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// Why verification fails closed right now (stale or not ready), if it does.
    pub problem: Option<VerifyError>,
    /// The version of the key set in force, once one has arrived.
    pub key_set_version: Option<String>,
    /// Time since the issuer last confirmed the key set.
    pub keys_age: Option<Duration>,
    /// Whether revocations are watched (the gRPC source) or not seen at all (a JWKS URL).
    pub revocations_watched: bool,
    /// Time since the issuer last confirmed the revocation state.
    pub revocations_age: Option<Duration>,
    /// The issuer's clock at its last revocation heartbeat: the state held is the issuer's as
    /// of then.
    pub revocations_as_of: Option<std::time::SystemTime>,
    /// The revocation log's sequence this verifier has applied through.
    pub revocations_through: u64,
    /// Revoked tokens held.
    pub revoked_tokens: u64,
    /// Key fetches made for unknown `kid`s.
    pub key_fetches: u64,
    /// Key-set changes taken.
    pub key_sets: u64,
    /// Polls of a JWKS URL answered (0 for the gRPC source, which is pushed to).
    pub key_polls: u64,
    /// Of those, the ones answered `304 Not Modified` to `If-None-Match`.
    pub key_polls_unchanged: u64,
    /// Full revocation snapshots received (the first, and any after the cursor was lost).
    pub snapshots: u64,
    /// Revocation streams resumed from the cursor, without a snapshot.
    pub resumes: u64,
    /// Reconnects to the issuer.
    pub reconnects: u64,
    /// The last error from the source, for the operator.
    pub last_error: Option<String>,
}

impl Health {
    /// Whether the verifier can verify now.
    pub fn is_ready(&self) -> bool {
        self.problem.is_none()
    }
}
