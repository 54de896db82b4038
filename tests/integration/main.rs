//! tokenmint's integration tests: a real server on 127.0.0.1:0, real mTLS, a PKI made with
//! rcgen in each test (and self-signed client certificates from openssl when it is there).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod admin_clients;
mod admin_listener;
mod algorithms;
mod audit;
mod authz;
mod authz_listeners;
mod authz_nginx;
mod availability;
mod binary;
mod cli;
mod clients;
mod dev_setup;
mod exchange;
mod exchange_refusals;
mod faults;
mod flaky;
mod forgeries;
mod fuzz_corpus;
mod hsm;
mod http;
mod identity;
mod interop;
mod interop_exchange;
mod introspect;
mod issue;
mod keys;
mod lifecycle;
mod limits;
mod low_s;
mod manifests;
mod ops;
mod pinned;
mod probes;
mod reload;
mod replicas;
mod revocation;
mod stacks;
mod store_contract;
mod support;
mod tls;
mod token_client;
mod txn_tokens;
mod verifier;
mod verifier_examples;
mod watch;
mod watch_limits;
mod watch_privacy;
