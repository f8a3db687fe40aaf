//! The README's configuration tables list every `LEAFSYNC_*` variable of both binaries,
//! each with its real default.

const README: &str = include_str!("../../../README.md");

#[test]
fn the_readme_documents_every_job_variable_with_its_default() {
    leafsync_core::env::assert_documented::<consumer_job::JobConfig>(README);
}

#[test]
fn the_readme_documents_every_api_variable_with_its_default() {
    leafsync_core::env::assert_documented::<consumer_api::ApiConfig>(README);
}
