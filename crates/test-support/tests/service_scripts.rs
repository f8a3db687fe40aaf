//! The service scripts' pure helpers, run by bash: what they compute feeds Kafka's own
//! tools, which reject some inputs outright.

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
