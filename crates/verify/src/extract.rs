//! The axum extractor (feature `axum`): a handler behind the layer takes `Verified` and gets the
//! verified token.

use std::sync::Arc;

use axum_core::extract::FromRequestParts;
use http::request::Parts;

use crate::{refusal::Refusal, token::VerifiedToken};

/// The request's verified token, put there by [`crate::VerifyLayer`]. Without the layer the
/// handler is refused with `500` (a set-up mistake, never an open door).
#[derive(Clone, Debug)]
pub struct Verified(pub Arc<VerifiedToken>);

impl Verified {
    /// `Ok` if the token grants `scope`, else the `403 insufficient_scope` refusal.
    pub fn require_scope(&self, scope: &str) -> Result<(), Refusal> {
        if self.0.has_scope(scope) {
            Ok(())
        } else {
            Err(Refusal::InsufficientScope(scope.to_owned()))
        }
    }
}

impl std::ops::Deref for Verified {
    type Target = VerifiedToken;

    fn deref(&self) -> &VerifiedToken {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Verified {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Refusal> {
        parts
            .extensions
            .get::<Arc<VerifiedToken>>()
            .cloned()
            .map(Verified)
            .ok_or(Refusal::NotBehindLayer)
    }
}
