//! consumer-api through its router (`oneshot`), over a real MongoDB wire server
//! (SecantusDB under `scripts/test.sh`) with documents written by `core`, so the BSON
//! types are the ones the job stores. Each test has its own database.

use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode},
};
use consumer_api::{ApiConfig, AppState, app, probe_app};
use http_body_util::BodyExt;
use leafsync_core::{ImageChange, ImageRepository, Write, WritePath};
use leafsync_test_support::{mongo_client, unique_name};
use serde_json::{Value, json};
use tower::ServiceExt;

fn event(id: i64, active: bool, disease: Option<&str>, deleted: bool) -> Value {
    json!({
        "id": id, "camera_id": 2, "data": "ffd8ffe000104a46",
        "gps_coordinates": [48.47, 16.58], "created_at": "2023-10-08T15:39:49.123000",
        "updated_at": if id == 1 { json!("2023-10-09T19:05:14.792000") } else { Value::Null },
        "is_active": active, "is_deleted": deleted, "disease": disease,
        "percentage": disease.map(|_| 0.995),
    })
}

/// A router over a fresh database holding six potato images:
/// ids 1..=6, active when even, diseased when ≤ 2, id 6 soft-deleted.
async fn seeded() -> (Router, Vec<Value>) {
    let repo = ImageRepository::new(mongo_client().await, &unique_name("api"), WritePath::Auto);
    let events: Vec<Value> = (1..=6)
        .map(|id| event(id, id % 2 == 0, (id <= 2).then_some("Healthy"), id == 6))
        .collect();
    let writes: Vec<Write> = events
        .iter()
        .map(|e| Write {
            collection: leafsync_core::PlantType::Potato.into(),
            change: ImageChange::from_json_slice(e.to_string().as_bytes()).unwrap(),
        })
        .collect();
    repo.apply(&writes).await.expect("seed");
    (app(AppState::new(repo, &ApiConfig::default())), events)
}

/// A router whose database does not answer (nothing listens on port 1).
async fn unreachable_db() -> Router {
    let config = ApiConfig {
        mongo_uri: "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300".to_owned(),
        ready_timeout_ms: 500,
        ..ApiConfig::default()
    };
    app(AppState::connect(&config).await.expect("lazy client"))
}

async fn get(router: &Router, uri: &str) -> (StatusCode, Value) {
    let response = router
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, body)
}

#[tokio::test]
async fn an_image_is_returned_exactly_as_the_image_api_sends_it() {
    let (router, events) = seeded().await;
    let (status, body) = get(&router, "/image-plant/potato/1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, events[0]);
    let (status, slash) = get(&router, "/image-plant/potato/1/").await;
    assert_eq!(
        (status, slash),
        (StatusCode::OK, body),
        "a trailing slash is the same resource"
    );
}

#[tokio::test]
async fn a_missing_image_is_a_404_with_a_json_detail() {
    let (router, _) = seeded().await;
    let (status, body) = get(&router, "/image-plant/potato/999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not-found");
    assert!(body["detail"].as_str().unwrap().contains("999"));
    let (status, _) = get(&router, "/image-plant/tomato/1").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "images are per plant");
}

#[tokio::test]
async fn totals_count_every_stored_image_unless_asked_otherwise() {
    let (router, _) = seeded().await;
    assert_eq!(
        get(&router, "/image-plant/potato/total").await.1,
        json!({"total_images": 6})
    );
    assert_eq!(
        get(&router, "/image-plant/potato/total/").await.1,
        json!({"total_images": 6})
    );
    assert_eq!(
        get(&router, "/image-plant/potato/total?include_deleted=false")
            .await
            .1,
        json!({"total_images": 5})
    );
    assert_eq!(
        get(&router, "/image-plant/potato/total?is_active=true")
            .await
            .1,
        json!({"total_images": 3})
    );
    assert_eq!(
        get(&router, "/image-plant/potato/total?has_disease=true")
            .await
            .1,
        json!({"total_images": 2})
    );
    assert_eq!(
        get(&router, "/image-plant/pepper/total").await.1,
        json!({"total_images": 0})
    );
}

#[tokio::test]
async fn lists_page_by_id_and_honour_the_filters() {
    let (router, events) = seeded().await;
    let (status, body) = get(&router, "/image-plant/potato?from_id=2&limit=3").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["total_images"], 3);
    assert_eq!(body["image_list"], json!([events[1], events[2], events[3]]));
    let (_, body) = get(
        &router,
        "/image-plant/potato/?is_active=true&include_deleted=false",
    )
    .await;
    let ids: Vec<i64> = body["image_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [2, 4]);
}

#[tokio::test]
async fn random_picks_only_among_matches_and_404s_when_none_match() {
    let (router, _) = seeded().await;
    for _ in 0..10 {
        let (status, body) = get(&router, "/image-plant/potato/random?has_disease=true").await;
        assert_eq!(status, StatusCode::OK);
        assert!([1, 2].contains(&body["id"].as_i64().unwrap()), "{body}");
    }
    let (status, body) = get(&router, "/image-plant/potato/random?has_disease=true&is_active=false&include_deleted=false&from_id=0").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["id"], 1);
    let (status, body) = get(&router, "/image-plant/pepper/random").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "no-match");
}

#[tokio::test]
async fn bad_input_is_a_4xx_that_names_the_problem() {
    let router = unreachable_db().await;
    for (uri, status, code, mention) in [
        ("/image-plant/corn/1", 422, "unknown-plant", "corn"),
        ("/image-plant/corn/total", 422, "unknown-plant", "corn"),
        ("/image-plant/potato/abc", 422, "invalid-id", "abc"),
        ("/image-plant/potato/-5", 422, "invalid-id", "-5"),
        ("/image-plant/potato/1.5", 422, "invalid-id", "1.5"),
        ("/image-plant/potato?limit=0", 422, "invalid-query", "limit"),
        (
            "/image-plant/potato?limit=101",
            422,
            "invalid-query",
            "limit",
        ),
        (
            "/image-plant/potato?limit=ten",
            422,
            "invalid-query",
            "limit",
        ),
        (
            "/image-plant/potato?from_id=-1",
            422,
            "invalid-query",
            "from_id",
        ),
        (
            "/image-plant/potato/total?is_active=maybe",
            422,
            "invalid-query",
            "is_active",
        ),
        (
            "/image-plant/potato/random?has_disease=2",
            422,
            "invalid-query",
            "has_disease",
        ),
        (
            "/image-plant/potato/total?include_deleted=x",
            422,
            "invalid-query",
            "include_deleted",
        ),
        ("/nowhere", 404, "no-route", "endpoint"),
        // Not UTF-8 once percent-decoded: axum's own rejection, in our JSON shape.
        ("/image-plant/potato/%FF", 400, "malformed-request", "UTF-8"),
        (
            "/image-plant/%C3%28/total",
            400,
            "malformed-request",
            "UTF-8",
        ),
    ] {
        let (got, body) = get(&router, uri).await;
        assert_eq!(got.as_u16(), status, "{uri}: {body}");
        assert_eq!(body["error"], code, "{uri}");
        assert!(
            body["detail"].as_str().unwrap().contains(mention),
            "{uri}: {body}"
        );
    }
}

#[tokio::test]
async fn a_database_outage_is_a_503_that_leaks_nothing_and_liveness_stays_up() {
    let router = unreachable_db().await;
    for uri in [
        "/image-plant/potato/1",
        "/image-plant/potato/total",
        "/image-plant/potato",
        "/image-plant/potato/random",
    ] {
        let (status, body) = get(&router, uri).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        assert_eq!(
            body,
            json!({"detail": "database unavailable", "error": "database-unavailable"}),
            "{uri}"
        );
    }
    assert_eq!(
        get(&router, "/ready").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(get(&router, "/live").await.0, StatusCode::OK);
}

#[tokio::test]
async fn readiness_follows_the_database() {
    let (router, _) = seeded().await;
    assert_eq!(
        get(&router, "/ready").await,
        (StatusCode::OK, json!({"status": "ready"}))
    );
}

/// The kubelet asks the probe listener, and the not-ready alerts count its answers.
#[tokio::test]
async fn the_probe_listeners_ready_answers_are_counted_for_the_not_ready_alerts() {
    let config = ApiConfig {
        mongo_uri: "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300".to_owned(),
        ready_timeout_ms: 500,
        ..ApiConfig::default()
    };
    let probes = probe_app(AppState::connect(&config).await.expect("lazy client"));
    assert_eq!(
        get(&probes, "/ready").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let (_, text) = get(&probes, "/metrics").await;
    let text = text.as_str().unwrap().to_owned();
    assert!(
        text.contains(r#"leafsync_api_requests_total{method="GET",route="/ready",status="503"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_not_by_id() {
    let (router, _) = seeded().await;
    get(&router, "/image-plant/potato/1").await;
    get(&router, "/image-plant/potato/2").await;
    get(&router, "/image-plant/potato/999").await;
    let (status, text) = get(&router, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let text = text.as_str().unwrap().to_owned();
    assert!(text.contains(r#"leafsync_api_requests_total{method="GET",route="/image-plant/{plant}/{id}",status="200"} 2"#), "{text}");
    assert!(
        text.contains(r#"route="/image-plant/{plant}/{id}",status="404"} 1"#),
        "{text}"
    );
    assert!(!text.contains("potato/1"), "no raw paths as labels");
    assert!(text.contains("leafsync_api_request_duration_seconds_bucket"));
}

#[tokio::test]
async fn every_path_in_the_openapi_document_is_served() {
    let (router, _) = seeded().await;
    let (status, doc) = get(&router, "/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 8);
    for path in paths.keys() {
        let uri = path.replace("{type}", "potato").replace("{id}", "1");
        let (status, body) = get(&router, &uri).await;
        assert!(status.is_success(), "{path} → {status}: {body}");
    }
    assert_eq!(
        doc["paths"]["/image-plant/{type}"]["get"]["parameters"][2]["schema"]["maximum"], 100,
        "the documented limit is the enforced one"
    );
}

/// A router whose DB calls hang for 2 s (server selection against a closed port).
async fn slow_db(request_timeout_ms: u64, max_concurrent_requests: usize) -> Router {
    let config = ApiConfig {
        mongo_uri: "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=2000".to_owned(),
        request_timeout_ms,
        max_concurrent_requests,
        ..ApiConfig::default()
    };
    app(AppState::connect(&config).await.expect("lazy client"))
}

#[tokio::test]
async fn a_slow_database_is_cut_off_at_the_request_timeout() {
    let router = slow_db(300, 16).await;
    let started = std::time::Instant::now();
    let (status, body) = get(&router, "/image-plant/potato/1").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "timeout");
    assert!(
        started.elapsed() < std::time::Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn requests_beyond_the_concurrency_bound_are_shed_at_once_but_probes_still_answer() {
    let router = slow_db(5_000, 1).await;
    let busy = tokio::spawn({
        let router = router.clone();
        async move { get(&router, "/image-plant/potato/1").await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let (status, body) = get(&router, "/image-plant/potato/2").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "overloaded");
    assert!(
        started.elapsed() < std::time::Duration::from_millis(500),
        "shed, not queued"
    );
    assert_eq!(
        get(&router, "/live").await.0,
        StatusCode::OK,
        "probes are outside the bound"
    );
    let (status, _) = busy.await.unwrap();
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "the slow request itself ends as DB unavailable"
    );
}
