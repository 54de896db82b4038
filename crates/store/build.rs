//! `sqlx::migrate!` embeds `migrations/`; a new or changed migration must rebuild the crate.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
