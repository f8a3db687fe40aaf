//! The README's configuration tables list every `LEAFSYNC_*` variable of both binaries,
//! each with its real default.

const README: &str = include_str!("../../../README.md");

/// The `(LEAFSYNC_NAME, default)` pairs of a configuration, from its serialized defaults:
/// what the README's configuration tables must list.
fn documented_defaults<T: serde::Serialize + Default>() -> Vec<(String, String)> {
    let value = serde_json::to_value(T::default()).expect("configs serialize to JSON");
    value
        .as_object()
        .expect("a config is a struct")
        .iter()
        .map(|(k, v)| {
            let default = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (
                format!("{}{}", leafsync_core::env::PREFIX, k.to_uppercase()),
                default,
            )
        })
        .collect()
}

/// Panics unless `readme` has a table row for every variable of `T`, showing its default
/// as `` `LEAFSYNC_X` | `default` ``.
fn assert_documented<T: serde::Serialize + Default>(readme: &str) {
    let missing: Vec<String> = documented_defaults::<T>()
        .into_iter()
        .filter(|(name, default)| !readme.contains(&format!("| `{name}` | `{default}` |")))
        .map(|(name, default)| format!("| `{name}` | `{default}` | … |"))
        .collect();
    assert!(
        missing.is_empty(),
        "README.md lacks these configuration rows:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_readme_documents_every_job_variable_with_its_default() {
    assert_documented::<consumer_job::JobConfig>(README);
}

#[test]
fn the_readme_documents_every_api_variable_with_its_default() {
    assert_documented::<consumer_api::ApiConfig>(README);
}
