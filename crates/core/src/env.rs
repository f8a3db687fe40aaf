//! Loading a binary's typed configuration from `LEAFSYNC_*` variables, once, with errors
//! that name the full variable (envy alone reports it without the prefix).

use serde::de::DeserializeOwned;

/// Prefix of every leafsync variable.
pub const PREFIX: &str = "LEAFSYNC_";

/// A variable that is missing or cannot be parsed; the message names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct EnvError(pub String);

/// Deserializes `T` from the `LEAFSYNC_*` entries of `vars`.
pub fn from_vars<T: DeserializeOwned>(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<T, EnvError> {
    let vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(k, _)| k.starts_with(PREFIX))
        .collect();
    envy::prefixed(PREFIX)
        .from_iter(vars.clone())
        .map_err(|e| EnvError(name_variable(&e.to_string(), &vars)))
}

/// envy says "… provided by FIELD" or "missing value for field"; serde's own messages
/// (an unknown enum variant) quote the value but name nothing: find whose value it is.
fn name_variable(message: &str, vars: &[(String, String)]) -> String {
    if let Some((head, field)) = message.rsplit_once("provided by ") {
        return format!("{PREFIX}{field}: {}", head.trim_end());
    }
    if let Some(field) = message.strip_prefix("missing value for field ") {
        return format!(
            "{PREFIX}{} is required",
            field.trim_matches('`').to_uppercase()
        );
    }
    let culprits: Vec<&str> = vars
        .iter()
        .filter(|(_, value)| message.contains(&format!("`{value}`")))
        .map(|(name, _)| name.as_str())
        .collect();
    match culprits.as_slice() {
        [name] => format!("{name}: {message}"),
        _ => format!(
            "{message} (in one of: {})",
            vars.iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A configuration value that cannot be used; the message names the variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Missing or not parseable.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// Parsed but unusable.
    #[error("invalid configuration: {var}: {problem}")]
    Invalid {
        /// The environment variable.
        var: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

impl ConfigError {
    /// `var` holds a value that cannot be used, because of `problem`.
    pub fn invalid(var: &'static str, problem: impl Into<String>) -> Self {
        ConfigError::Invalid {
            var,
            problem: problem.into(),
        }
    }
}

/// A binary's configuration: `LEAFSYNC_*` variables over its defaults, read once and
/// validated once into the [`EnvConfig::Settings`] the binary runs on.
pub trait EnvConfig: DeserializeOwned {
    /// What a valid configuration becomes: parsed, grouped, typed.
    type Settings;

    /// Checks what serde cannot, and builds the settings.
    fn validate(self) -> Result<Self::Settings, ConfigError>;

    /// Reads the process environment.
    fn from_env() -> Result<Self::Settings, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Reads any set of variables (tests, manifests).
    fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self::Settings, ConfigError> {
        let config: Self = from_vars(vars)?;
        config.validate()
    }
}

/// `LEAFSYNC_MONGO_URI` must be a MongoDB connection string.
pub fn check_mongo_uri(uri: &str) -> Result<(), ConfigError> {
    if uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://") {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            "LEAFSYNC_MONGO_URI",
            "must start with mongodb:// or mongodb+srv://",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)] // fields are read only through Debug in failures
    struct Sample {
        count: u32,
        #[serde(default)]
        mode: Option<Mode>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Mode {
        Fast,
    }

    use leafsync_test_support::vars;

    #[test]
    fn parse_errors_missing_values_and_bad_variants_name_the_full_variable() {
        let e = from_vars::<Sample>(vars(&[("LEAFSYNC_COUNT", "x")])).unwrap_err();
        assert!(e.0.contains("LEAFSYNC_COUNT"), "{e}");
        let e = from_vars::<Sample>(vars(&[])).unwrap_err();
        assert!(e.0.contains("LEAFSYNC_COUNT is required"), "{e}");
        let e = from_vars::<Sample>(vars(&[("LEAFSYNC_COUNT", "1"), ("LEAFSYNC_MODE", "slow")]))
            .unwrap_err();
        assert!(e.0.starts_with("LEAFSYNC_MODE: "), "{e}");
        assert!(from_vars::<Sample>(vars(&[("LEAFSYNC_COUNT", "1"), ("OTHER", "x")])).is_ok());
    }
}
