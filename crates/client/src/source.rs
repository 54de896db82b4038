//! A token source: one (scopes, audiences) pair's token, fetched, cached, refreshed ahead of
//! expiry by the rule, with one refresh shared by every concurrent caller.
//!
//! ```text
//!   token() ── before refresh_at ─────────────▶ the held token
//!           ── refresh_at..expiry ──▶ the held token, and one background refresh
//!           │                         (retried with backoff while the token is good)
//!           └─ none or expired ──▶ wait for the one refresh in flight ──▶ token or TokenError
//! ```

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwapOption;
use tokenmint_core::clock::{Clock, UnixTime};
use tokenmint_proto::v1::{IssueTokenRequest, token_service_client::TokenServiceClient};
use tonic::transport::Channel;

use tokenmint_proto::backoff::{self, Backoff};

use crate::{
    error::TokenError,
    rule,
    token::{AccessToken, TokenSpec, lifetime_of},
};

/// A source of fresh tokens for one [`TokenSpec`]. Cheap to clone; clones share the token.
#[derive(Clone)]
pub struct TokenSource {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("spec", &self.inner.spec)
            .field("issued", &self.issued())
            .finish_non_exhaustive()
    }
}

/// The held token and when (on the clock's monotonic scale) to refresh it and stop using it.
#[derive(Debug)]
struct Held {
    token: AccessToken,
    refresh_at: Duration,
    expires_at: Duration,
}

/// After a failed refresh: the error, and when the next attempt may be made.
#[derive(Debug, Default)]
struct Refresh {
    failure: Option<(TokenError, Duration)>,
    backoff: Option<Backoff>,
}

struct Inner {
    tokens: TokenServiceClient<Channel>,
    spec: TokenSpec,
    clock: Arc<dyn Clock>,
    timeout: Duration,
    held: ArcSwapOption<Held>,
    refresh: tokio::sync::Mutex<Refresh>,
    background: AtomicBool,
    issued: AtomicU64,
    backoff: (Duration, Duration),
}

/// What a source needs from its client.
pub(crate) struct Parts {
    pub(crate) tokens: TokenServiceClient<Channel>,
    pub(crate) spec: TokenSpec,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) timeout: Duration,
    pub(crate) backoff: (Duration, Duration),
}

impl TokenSource {
    pub(crate) fn new(parts: Parts) -> Self {
        Self {
            inner: Arc::new(Inner {
                tokens: parts.tokens,
                spec: parts.spec,
                clock: parts.clock,
                timeout: parts.timeout,
                held: ArcSwapOption::empty(),
                refresh: tokio::sync::Mutex::new(Refresh::default()),
                background: AtomicBool::new(false),
                issued: AtomicU64::new(0),
                backoff: parts.backoff,
            }),
        }
    }

    /// A valid token: the held one while it is good (refreshing it in the background once it
    /// is due), else the one refresh in flight, shared with every concurrent caller.
    pub async fn token(&self) -> Result<AccessToken, TokenError> {
        if let Some(token) = self.held_token() {
            return Ok(token);
        }
        self.inner.refresh_now().await
    }

    /// The held token if it is still valid, without waiting (what the tonic interceptor,
    /// which cannot wait, uses); a due refresh is started in the background.
    pub fn held_token(&self) -> Option<AccessToken> {
        let now = self.inner.clock.monotonic();
        let held = self.inner.held.load_full()?;
        if now >= held.expires_at {
            return None;
        }
        if now >= held.refresh_at {
            self.refresh_in_background();
        }
        Some(held.token.clone())
    }

    /// What this source asks for.
    pub fn spec(&self) -> &TokenSpec {
        &self.inner.spec
    }

    /// How many tokens the issuer has given this source.
    pub fn issued(&self) -> u64 {
        self.inner.issued.load(Ordering::Relaxed)
    }

    /// Starts one background refresh, unless one is running: it retries with backoff while
    /// the held token is still valid, and stops once it has a new one.
    fn refresh_in_background(&self) {
        if self.inner.background.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = self.inner.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.inner.background.store(false, Ordering::Release);
            return;
        };
        runtime.spawn(async move {
            loop {
                let wait = inner.refresh_due().await;
                match wait {
                    None => break,
                    Some(delay) => tokio::time::sleep(delay).await,
                }
            }
            inner.background.store(false, Ordering::Release);
        });
    }
}

impl Inner {
    /// The held token if it is valid and not due, else one refresh (or the recent failure,
    /// while its backoff lasts: no storm against an issuer that just refused or failed).
    async fn refresh_now(&self) -> Result<AccessToken, TokenError> {
        let mut refresh = self.refresh.lock().await;
        let now = self.clock.monotonic();
        if let Some(held) = self.held.load_full().filter(|h| now < h.expires_at) {
            return Ok(held.token.clone());
        }
        if let Some((error, until)) = &refresh.failure
            && now < *until
        {
            return Err(error.clone());
        }
        self.issue(&mut refresh).await
    }

    /// One background step: `None` when done (a fresh token, or the held one expired, so
    /// callers take over), else how long to wait before the next attempt.
    async fn refresh_due(&self) -> Option<Duration> {
        let mut refresh = self.refresh.lock().await;
        let now = self.clock.monotonic();
        let held = self.held.load_full()?;
        if now < held.refresh_at || now >= held.expires_at {
            return None;
        }
        if let Some((_, until)) = &refresh.failure
            && now < *until
        {
            return Some(until.saturating_sub(now));
        }
        match self.issue(&mut refresh).await {
            Ok(_) => None,
            Err(_) => refresh
                .failure
                .as_ref()
                .map(|(_, until)| until.saturating_sub(now)),
        }
    }

    /// `IssueToken` once; the outcome is held (a token) or remembered with its backoff.
    async fn issue(&self, refresh: &mut Refresh) -> Result<AccessToken, TokenError> {
        let request = IssueTokenRequest {
            scopes: self.spec.scopes.clone(),
            audiences: self.spec.audiences.clone(),
            lifetime: self
                .spec
                .lifetime
                .and_then(|l| prost_types::Duration::try_from(l).ok()),
            ..Default::default()
        };
        let mut tokens = self.tokens.clone();
        let outcome = tokio::time::timeout(self.timeout, tokens.issue_token(request)).await;
        let sent = self.clock.monotonic();
        let response = match TokenError::of_call(outcome, "IssueToken") {
            Ok(response) => response,
            Err(error) => return Err(self.failed(refresh, error, sent)),
        };
        self.issued.fetch_add(1, Ordering::Relaxed);
        let lifetime = lifetime_of(response.expires_in);
        let token = AccessToken::new(
            response.access_token,
            UnixTime::of(self.clock.now()).saturating_add(lifetime),
            response.scopes,
            response.audiences,
            response.key_id,
        );
        let unit = backoff::unit();
        self.held.store(Some(Arc::new(Held {
            token: token.clone(),
            refresh_at: sent + rule::refresh_after(lifetime, unit),
            expires_at: sent + lifetime,
        })));
        *refresh = Refresh::default();
        Ok(token)
    }

    /// Remembers a failure and when the next attempt may be made (the issuer's hint, or the
    /// backoff's next delay, whichever is later).
    fn failed(&self, refresh: &mut Refresh, error: TokenError, now: Duration) -> TokenError {
        let (min, max) = self.backoff;
        let delay = refresh
            .backoff
            .get_or_insert_with(|| Backoff::new(min, max))
            .next_delay();
        let hint = match &error {
            TokenError::Unavailable { retry_after, .. } => retry_after.unwrap_or_default(),
            TokenError::Refused { .. } => Duration::ZERO,
        };
        tracing::warn!(error = %error, retry_in = ?delay.max(hint), "token refresh failed");
        refresh.failure = Some((error.clone(), now + delay.max(hint)));
        error
    }
}
