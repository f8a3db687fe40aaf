//! The Grafana dashboard (`observability/grafana/leafsync-dashboard.json`) imports cleanly
//! and queries only metrics that exist: LIMS's batch gauges and leafsync's own series, as
//! declared in the two binaries' metrics modules.

use std::{collections::BTreeSet, path::Path};

use serde_json::Value;

fn repo_file(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every `"leafsync_…"` string literal in a source file: the metric names it registers.
fn declared_metrics(source: &str) -> BTreeSet<String> {
    source
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.starts_with("leafsync_") && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .map(str::to_owned)
        .collect()
}

/// The metric names a PromQL expression reads (histogram suffixes removed).
fn queried_metrics(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("leafsync_") || w.starts_with("db_synchronizer_"))
        .map(|w| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| w.strip_suffix(s))
                .unwrap_or(w)
                .to_owned()
        })
        .collect()
}

#[test]
fn the_dashboard_has_a_datasource_variable_that_every_panel_uses() {
    let dashboard: Value =
        serde_json::from_str(&repo_file("observability/grafana/leafsync-dashboard.json"))
            .expect("the dashboard is valid JSON");
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    assert!(
        variables.iter().any(|v| v["type"] == "datasource"
            && v["name"] == "datasource"
            && v["query"] == "prometheus"),
        "a Prometheus datasource variable"
    );
    let panels: Vec<&Value> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter(|p| p["type"] != "row")
        .collect();
    assert!(panels.len() >= 10);
    let mut ids = BTreeSet::new();
    for p in &panels {
        assert!(
            ids.insert(p["id"].as_i64().expect("numeric id")),
            "panel ids are unique"
        );
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        for t in p["targets"].as_array().expect("targets") {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        }
    }
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for original in [
        "Batch: images",
        "Batch: image size",
        "Stream: images",
        "Stream: bytes",
    ] {
        assert!(
            titles.iter().any(|t| t.starts_with(original)),
            "the original panel {original:?} is kept"
        );
    }
}

#[test]
fn every_metric_the_dashboard_queries_exists() {
    let dashboard: Value =
        serde_json::from_str(&repo_file("observability/grafana/leafsync-dashboard.json")).unwrap();
    let mut known = declared_metrics(&repo_file("crates/consumer-job/src/metrics.rs"));
    known.extend(declared_metrics(&repo_file(
        "crates/consumer-api/src/metrics.rs",
    )));
    known.extend(declared_metrics(&repo_file(
        "crates/consumer-job/src/verify/metrics.rs",
    )));
    assert!(
        known.contains("leafsync_job_images_total")
            && known.contains("leafsync_api_requests_total")
            && known.contains("leafsync_verify_drift")
    );
    known.insert("db_synchronizer_job_image".to_owned());
    known.insert("db_synchronizer_job_image_size".to_owned());
    let mut queried = 0;
    for p in dashboard["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            for name in queried_metrics(t["expr"].as_str().expect("expr")) {
                assert!(
                    known.contains(&name),
                    "panel {:?} queries unknown metric {name}",
                    p["title"]
                );
                queried += 1;
            }
        }
    }
    assert!(queried >= 12);
}
