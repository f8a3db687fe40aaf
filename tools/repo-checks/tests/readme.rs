//! The configuration tables (docs/operations.md, "Reference") list every `LEAFSYNC_*`
//! variable of both binaries, each with its real default; its dead-letter table lists
//! every reason the job gives.

const OPERATIONS: &str = include_str!("../../../docs/operations.md");

/// The `(LEAFSYNC_NAME, default)` pairs of a configuration, from its serialized defaults:
/// what the configuration tables of docs/operations.md must list.
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

/// Panics unless `doc` has a table row for every variable of `T`, showing its default
/// as `` `LEAFSYNC_X` | `default` ``.
fn assert_documented<T: serde::Serialize + Default>(doc: &str) {
    let missing: Vec<String> = documented_defaults::<T>()
        .into_iter()
        .filter(|(name, default)| !doc.contains(&format!("| `{name}` | `{default}` |")))
        .map(|(name, default)| format!("| `{name}` | `{default}` | … |"))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/operations.md lacks these configuration rows:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_operations_guide_documents_every_job_variable_with_its_default() {
    assert_documented::<consumer_job::JobConfig>(OPERATIONS);
}

#[test]
fn the_operations_guide_documents_every_api_variable_with_its_default() {
    assert_documented::<consumer_api::ApiConfig>(OPERATIONS);
}

#[test]
fn the_operations_guide_lists_every_dead_letter_reason() {
    let section = OPERATIONS
        .split_once("### Dead letters and replaying them")
        .expect("docs/operations.md has a section on dead letters")
        .1;
    let table = section
        .split_once("| `leafsync-reason` |")
        .expect("the section has a table of reasons")
        .1;
    let table = table.split("\n\n").next().unwrap_or_default();
    let missing: Vec<&str> = consumer_job::dlq::DeadLetterReason::ALL
        .into_iter()
        .map(consumer_job::dlq::DeadLetterReason::as_str)
        .filter(|r| !table.contains(&format!("`{r}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "the dead-letter table of docs/operations.md lacks these reasons: {missing:?}"
    );
}
