//! The file as written: stringly typed, every struct `deny_unknown_fields`, checked for
//! nothing but its shape. `validate` turns it into a `Config`.

use std::collections::BTreeMap;

use serde::Deserialize;

// ---------------------------------------------------------------------------------------
// The raw file
// ---------------------------------------------------------------------------------------

/// The file as written: strings everywhere, nothing checked but the shape.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileConfig {
    pub(super) server: FileServer,
    pub(super) tls: FileTls,
    pub(super) store: FileStore,
    pub(super) keys: FileKeys,
    pub(super) pkcs11: FilePkcs11,
    pub(super) tokens: FileTokens,
    pub(super) revocation: FileRevocation,
    pub(super) limits: FileLimits,
    pub(super) audit: FileAudit,
    pub(super) admin: FileAdmin,
    pub(super) authz: FileAuthz,
    pub(super) txn_tokens: FileTxnTokens,
    pub(super) clients: Vec<FileClient>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileTxnTokens {
    pub(super) trust_domain: Option<String>,
    pub(super) lifetime: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileAuthz {
    pub(super) listen: Option<String>,
    pub(super) grpc_listen: Option<String>,
    pub(super) ops_listen: Option<String>,
    pub(super) issuer: Option<String>,
    pub(super) issuer_endpoint: Option<String>,
    pub(super) ca: Option<String>,
    pub(super) cert: Option<String>,
    pub(super) key: Option<String>,
    pub(super) audiences: Option<Vec<String>>,
    pub(super) certificate_header: Option<String>,
    pub(super) certificate_format: Option<String>,
    pub(super) path_header: Option<String>,
    pub(super) proxy_ca: Option<String>,
    pub(super) tls_cert: Option<String>,
    pub(super) tls_key: Option<String>,
    pub(super) staleness: Option<String>,
    pub(super) required_scopes: std::collections::BTreeMap<String, Vec<String>>,
    pub(super) trust_domain: Option<String>,
    pub(super) txn_required: std::collections::BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileAdmin {
    pub(super) listen: Option<String>,
    pub(super) client_ca: Option<String>,
    pub(super) client_crls: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileAudit {
    pub(super) issuance: Option<String>,
    pub(super) issuance_interval: Option<String>,
    pub(super) issuance_sample: Option<u64>,
    pub(super) retention: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileLimits {
    pub(super) issue_per_second: Option<u32>,
    pub(super) issue_burst: Option<u32>,
    pub(super) issue_per_client: std::collections::BTreeMap<String, u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileRevocation {
    pub(super) max_live: Option<u64>,
    pub(super) per_client_max_live: Option<u64>,
    pub(super) per_client_rate: Option<u32>,
    pub(super) purge_interval: Option<String>,
    pub(super) max_watches: Option<u32>,
    pub(super) max_watches_per_client: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileServer {
    pub(super) listen: Option<String>,
    pub(super) issuer: Option<String>,
    pub(super) handshake_timeout: Option<String>,
    pub(super) ops_listen: Option<String>,
    pub(super) max_handshakes: Option<u32>,
    pub(super) max_concurrent_streams: Option<u32>,
    pub(super) max_header_list_size: Option<u32>,
    pub(super) keepalive_interval: Option<String>,
    pub(super) keepalive_timeout: Option<String>,
    pub(super) max_connection_age: Option<String>,
    pub(super) handshake_failures_per_peer: Option<u32>,
    pub(super) max_in_flight: Option<u32>,
    pub(super) max_in_flight_without_certificate: Option<u32>,
    pub(super) max_streams_without_certificate: Option<u32>,
    pub(super) max_connections_without_certificate: Option<u32>,
    pub(super) idle_timeout_without_certificate: Option<String>,
    pub(super) body_timeout: Option<String>,
    pub(super) request_timeout: Option<String>,
    pub(super) max_handshakes_per_address: Option<u32>,
    pub(super) max_handshakes_per_address_in: std::collections::BTreeMap<String, u32>,
    pub(super) watch_stall_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileTls {
    pub(super) cert: Option<String>,
    pub(super) key: Option<String>,
    pub(super) client_ca: Option<String>,
    pub(super) client_crls: Vec<String>,
    pub(super) reload_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileStore {
    pub(super) url: Option<String>,
    pub(super) max_staleness: Option<String>,
    pub(super) catch_up_interval: Option<String>,
    pub(super) max_issue_staleness: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileKeys {
    pub(super) custody: Option<String>,
    pub(super) algorithm: Option<String>,
    pub(super) also: Option<Vec<String>>,
    pub(super) rsa_bits: Option<u64>,
    pub(super) audience_algorithms: Option<BTreeMap<String, String>>,
    pub(super) rotation_period: Option<String>,
    pub(super) publish_ahead: Option<String>,
    pub(super) jwks_max_age: Option<String>,
    pub(super) retention: Option<String>,
    pub(super) kek_files: Option<Vec<String>>,
    pub(super) max_jwks_watches: Option<u32>,
}

#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FilePkcs11 {
    pub(super) module: Option<String>,
    pub(super) token_label: Option<String>,
    pub(super) token_serial: Option<String>,
    pub(super) pin_file: Option<String>,
    pub(super) pin_env: Option<String>,
    pub(super) sessions: Option<u32>,
    /// Never read: present only so that a PIN written here is refused without its value
    /// reaching an error message.
    pub(super) pin: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileTokens {
    pub(super) default_lifetime: Option<String>,
    pub(super) max_lifetime: Option<String>,
    pub(super) leeway: Option<String>,
    pub(super) max_exchange_depth: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileClient {
    pub(super) id: Option<String>,
    pub(super) san_uri: Option<String>,
    pub(super) san_dns: Option<String>,
    pub(super) subject_dn: Option<String>,
    pub(super) pinned_sha256: Option<Vec<String>>,
    pub(super) scopes: Vec<String>,
    pub(super) default_scopes: Option<Vec<String>>,
    pub(super) audiences: Vec<String>,
    pub(super) default_audiences: Option<Vec<String>>,
    pub(super) introspect_audiences: Vec<String>,
    pub(super) serves: Vec<String>,
    pub(super) act_for: Vec<String>,
    pub(super) delegate_audiences: Vec<String>,
    pub(super) delegate_scopes: Vec<String>,
    pub(super) asserts_txn_subjects: Option<bool>,
    pub(super) permissions: Option<Vec<String>>,
    pub(super) default_lifetime: Option<String>,
    pub(super) max_lifetime: Option<String>,
    pub(super) enabled: Option<bool>,
}
