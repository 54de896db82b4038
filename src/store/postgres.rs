//! The PostgreSQL back-end (placeholder).
