//! The scripts' pure helpers, run as the scripts run them: what `kraft_cluster_id`
//! computes feeds Kafka's own tools, which reject some inputs outright; what
//! `unused-deps.py` reports fails the lint.

use std::{path::Path, process::Command};

#[test]
fn kraft_cluster_ids_never_start_with_a_dash_and_are_22_url_safe_characters() {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/lib.sh");
    // 1 draw in 64 starts with '-' before the fix: 600 draws miss it with p < 1e-4.
    let script = format!(
        "source '{}'; for _ in $(seq 600); do kraft_cluster_id; echo; done",
        lib.display()
    );
    let out = Command::new("bash").arg("-c").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids = String::from_utf8(out.stdout).unwrap();
    let ids: Vec<&str> = ids.lines().collect();
    assert_eq!(ids.len(), 600);
    for id in ids {
        assert!(!id.starts_with('-'), "{id} would be read as an option");
        assert_eq!(id.len(), 22, "{id}");
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{id}"
        );
    }
}

#[test]
fn unused_and_misplaced_dependencies_are_reported_and_fail_the_check() {
    let dir = std::env::temp_dir().join(leafsync_test_support::unique_name("deps"));
    std::fs::create_dir_all(dir.join("a/src")).unwrap();
    std::fs::create_dir_all(dir.join("a/tests")).unwrap();
    std::fs::write(dir.join("Cargo.toml"), "[workspace]\nmembers = [\"a\"]\n").unwrap();
    std::fs::write(
        dir.join("a/Cargo.toml"),
        "[package]\nname = \"a\"\n[dependencies]\nserde = \"1\"\nanyhow = \"1\"\nhex = \"0.4\"\n\
         [dev-dependencies]\nserde = \"1\"\nrand = \"0.9\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("a/src/lib.rs"), "use serde::Serialize;\n").unwrap();
    std::fs::write(dir.join("a/tests/t.rs"), "fn f() { hex::encode([1]); }\n").unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/unused-deps.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&dir)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stderr).into_owned();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(1), "{report}");
    for finding in [
        "dependency anyhow is used by nothing",
        "dependency hex is used only by tests",
        "dev-dependency serde repeats a dependency",
        "dev-dependency rand is used by no test",
    ] {
        assert!(report.contains(finding), "{finding}: {report}");
    }
    assert!(!report.contains("dependency serde is used"), "{report}");
}
