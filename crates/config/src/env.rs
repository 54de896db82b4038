//! Environment overrides: `TOKENMINT__<SECTION>__<KEY>` variables, applied to the parsed
//! table before it is read, so an override is checked exactly as the file's value would be.

use super::{file::*, *};

/// One `TOKENMINT__SECTION__KEY` variable.
pub(super) struct Override {
    pub(super) var: String,
    pub(super) raw: String,
}

/// The environment, sorted out: overrides by (section, key), and whether a KEK is given.
pub(super) struct EnvOverrides {
    pub(super) overrides: BTreeMap<(String, String), Override>,
    pub(super) kek_from_env: bool,
}

impl EnvOverrides {
    pub(super) fn read(
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut vars: Vec<(String, String)> = env.into_iter().collect();
        vars.sort();
        let mut overrides: BTreeMap<(String, String), Override> = BTreeMap::new();
        let mut kek_from_env = false;
        for (var, raw) in vars {
            if var == KEK_ENV_VAR {
                kek_from_env = !raw.is_empty();
                continue;
            }
            let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let env_error = |message: String| ConfigError::Env {
                var: var.clone(),
                message,
            };
            let (section, key) = match rest.split("__").collect::<Vec<_>>().as_slice() {
                [section, key] if !section.is_empty() && !key.is_empty() => {
                    (section.to_ascii_lowercase(), key.to_ascii_lowercase())
                }
                _ => {
                    return Err(env_error(
                        "an override is named TOKENMINT__<SECTION>__<KEY>, e.g. \
                         TOKENMINT__STORE__URL: rename or unset it"
                            .to_owned(),
                    ));
                }
            };
            if section == "clients" {
                return Err(env_error(
                    "[[clients]] cannot be set from the environment: edit the config file \
                     and unset the variable"
                        .to_owned(),
                ));
            }
            let Some((_, keys)) = SECTIONS.iter().find(|(name, _)| *name == section) else {
                return Err(env_error(format!(
                    "unknown section `{section}`: known sections are {}; rename or unset the variable",
                    SECTIONS
                        .iter()
                        .map(|(name, _)| *name)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            };
            if !keys.contains(&key.as_str()) {
                return Err(env_error(format!(
                    "unknown key `{key}` in [{section}]: known keys are {}; rename or unset the variable",
                    keys.join(", ")
                )));
            }
            let field = (section, key);
            if let Some(previous) = overrides.get(&field) {
                return Err(env_error(format!(
                    "{} also sets {}.{}: unset one of them",
                    previous.var, field.0, field.1
                )));
            }
            overrides.insert(field, Override { var, raw });
        }
        Ok(EnvOverrides {
            overrides,
            kek_from_env,
        })
    }

    /// The names of every override, for an error that cannot be pinned on one.
    pub(super) fn var_names(&self) -> String {
        self.overrides
            .values()
            .map(|o| o.var.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Writes each override into `table`. The value is taken as TOML when it parses as a
    /// TOML value of the right type (`["a.kek", "b.kek"]`, `"quoted"`), otherwise as the
    /// plain string (`5m`, `sqlite://x.db`).
    pub(super) fn apply(&self, table: &mut toml::Table) -> Result<(), ConfigError> {
        for ((section, key), o) in &self.overrides {
            let env_error = |message: String| ConfigError::Env {
                var: o.var.clone(),
                message,
            };
            let entry = table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(section_table) = entry else {
                return Err(env_error(format!(
                    "`{section}` in the config file is not a table: make it a [{section}] section"
                )));
            };
            let candidates = o
                .raw
                .parse::<toml::Value>()
                .ok()
                .into_iter()
                .chain(std::iter::once(toml::Value::String(o.raw.clone())));
            let mut first_error = None;
            let mut accepted = None;
            for candidate in candidates {
                let mut trial = section_table.clone();
                trial.insert(key.clone(), candidate.clone());
                match check_section(section, trial) {
                    Ok(()) => {
                        accepted = Some(candidate);
                        break;
                    }
                    Err(error) => {
                        first_error.get_or_insert(error);
                    }
                }
            }
            match accepted {
                Some(value) => {
                    section_table.insert(key.clone(), value);
                }
                None => {
                    let what = first_error
                        .map(|e| e.message().trim_end().to_owned())
                        .unwrap_or_default();
                    return Err(env_error(format!(
                        "cannot use it for {section}.{key}: {what}; write the value in TOML \
                         syntax, e.g. [\"a.kek\", \"b.kek\"] for a list"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Whether `table` deserializes as section `section` (shape and types only).
pub(super) fn check_section(section: &str, table: toml::Table) -> Result<(), toml::de::Error> {
    match section {
        "server" => table.try_into::<FileServer>().map(drop),
        "tls" => table.try_into::<FileTls>().map(drop),
        "store" => table.try_into::<FileStore>().map(drop),
        "keys" => table.try_into::<FileKeys>().map(drop),
        "tokens" => table.try_into::<FileTokens>().map(drop),
        "revocation" => table.try_into::<FileRevocation>().map(drop),
        "limits" => table.try_into::<FileLimits>().map(drop),
        "audit" => table.try_into::<FileAudit>().map(drop),
        "admin" => table.try_into::<FileAdmin>().map(drop),
        "txn_tokens" => table.try_into::<FileTxnTokens>().map(drop),
        "authz" => table.try_into::<FileAuthz>().map(drop),
        "pkcs11" => table.try_into::<FilePkcs11>().map(drop),
        // `EnvOverrides::read` lets only the sections above through.
        _ => Ok(()),
    }
}
