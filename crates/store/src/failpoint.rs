//! Test-only crash points: `TOKENMINT_DANGEROUS_FAILPOINT=<name>` makes the process abort
//! when it reaches the named point, so a test can kill the real binary in the middle of a
//! multi-write step and check that nothing is half-written. Never set it in production.

use std::sync::OnceLock;

/// The environment variable naming the armed failpoint.
pub const DANGEROUS_FAILPOINT_VAR: &str = "TOKENMINT_DANGEROUS_FAILPOINT";

fn armed() -> Option<&'static str> {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    ARMED
        .get_or_init(|| std::env::var(DANGEROUS_FAILPOINT_VAR).ok())
        .as_deref()
}

/// Aborts the process if `name` is the armed failpoint.
pub fn hit(name: &str) {
    if armed() == Some(name) {
        eprintln!("{DANGEROUS_FAILPOINT_VAR}={name}: aborting here on purpose");
        std::process::abort();
    }
}
