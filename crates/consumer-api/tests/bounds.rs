//! The API's bounds, each shown without relying on the database being slow: list pages
//! end at their byte budget, response bytes held at once stay within the total budget
//! (requests wait for room), connections are capped, a client that stops reading is cut
//! off, and `/ready` keeps answering while data requests queue for the pool. Real TCP
//! where the bound lives in the server; SecantusDB behind everything.

use std::{net::SocketAddr, time::Duration};

use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode},
};
use consumer_api::{ApiConfig, AppState, app, serve};
use http_body_util::BodyExt;
use leafsync_core::{ImageChange, ImageRepository, Write, WritePath};
use leafsync_test_support::{
    http_get, latency_proxy, metric_value, mongo_client, mongo_uri, unique_name,
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tower::ServiceExt;

/// A fresh database holding potato images 1..=n, each with `raw_kb` KiB of image data
/// (twice that as hex in a response).
async fn seed(n: i64, raw_kb: usize) -> (ImageRepository, String) {
    let db = unique_name("bounds");
    let repo = ImageRepository::new(mongo_client().await, &db, WritePath::Auto);
    let data = "ab".repeat(raw_kb * 1024);
    let writes: Vec<Write> = (1..=n)
        .map(|id| {
            let event = json!({
                "id": id, "camera_id": 1, "data": data, "gps_coordinates": [48.47, 16.58],
                "created_at": "2023-10-08T15:39:49.123000", "updated_at": null,
                "is_active": true, "is_deleted": false, "disease": null, "percentage": null,
            });
            Write {
                collection: leafsync_core::PlantType::Potato.into(),
                change: ImageChange::from_json_slice(event.to_string().as_bytes()).unwrap(),
            }
        })
        .collect();
    repo.apply(&writes).await.expect("seed");
    (repo, db)
}

async fn send(router: &Router, uri: &str) -> axum::response::Response {
    router
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap()
}

async fn json_body(response: axum::response::Response) -> (usize, Value) {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (bytes.len(), serde_json::from_slice(&bytes).unwrap())
}

fn ids(page: &Value) -> Vec<i64> {
    page["image_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect()
}

fn small_budget() -> ApiConfig {
    ApiConfig {
        page_max_bytes: 64 * 1024,
        max_response_bytes: 64 * 1024,
        ..ApiConfig::default()
    }
}

#[tokio::test]
async fn a_list_page_ends_at_its_byte_budget_and_the_next_page_continues_from_there() {
    // 10 KiB raw is ~20 KiB of hex per image: three fit in 64 KiB, four do not.
    let (repo, _) = seed(6, 10).await;
    let router = app(AppState::new(repo, &small_budget()));
    let (len, first) = json_body(send(&router, "/image-plant/potato?limit=100").await).await;
    assert_eq!(ids(&first), [1, 2, 3]);
    assert_eq!(first["total_images"], 3);
    assert!(len <= 64 * 1024, "{len} bytes");
    let (_, next) = json_body(send(&router, "/image-plant/potato?from_id=4&limit=100").await).await;
    assert_eq!(ids(&next), [4, 5, 6]);
}

#[tokio::test]
async fn response_bytes_held_stay_within_the_budget_and_requests_wait_for_room() {
    let (repo, _) = seed(3, 10).await;
    let state = AppState::new(repo, &small_budget());
    let metrics = state.metrics.clone();
    let router = app(state);
    // A page whose body the client has not read yet holds ~60 KiB of the 64.
    let held = send(&router, "/image-plant/potato?limit=100").await;
    assert_eq!(held.status(), StatusCode::OK);
    let in_flight = metric_value(&metrics.render(), "leafsync_api_response_bytes", &[]);
    assert!(
        in_flight > 32 * 1024 && in_flight <= 64 * 1024,
        "{in_flight}"
    );
    let waiting = tokio::spawn({
        let router = router.clone();
        async move { send(&router, "/image-plant/potato?limit=100").await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "a second page waits for room");
    let (_, page) = json_body(held).await;
    assert_eq!(ids(&page), [1, 2, 3]);
    let second = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("room once the first body was sent")
        .unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    drop(second);
    assert_eq!(
        metric_value(&metrics.render(), "leafsync_api_response_bytes", &[]),
        0
    );
}

/// The API served on a free port over `config`'s database, as `main` serves it.
async fn served(config: ApiConfig) -> (SocketAddr, consumer_api::ApiMetrics) {
    let (addr, _, metrics) = served_with_probes(config).await;
    (addr, metrics)
}

/// [`served`], and the address of its probe listener.
async fn served_with_probes(
    config: ApiConfig,
) -> (SocketAddr, SocketAddr, consumer_api::ApiMetrics) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let probes = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, probe_addr) = (listener.local_addr().unwrap(), probes.local_addr().unwrap());
    let state = AppState::connect(&config).await.unwrap();
    let metrics = state.metrics.clone();
    tokio::spawn(
        async move { serve(listener, probes, state, &config, std::future::pending()).await },
    );
    (addr, probe_addr, metrics)
}

/// Sends `GET path` on an open keep-alive connection.
async fn request(stream: &mut TcpStream, path: &str) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
}

/// Reads what arrives within `wait` (a whole small response, or nothing).
async fn read_for(stream: &mut TcpStream, wait: Duration) -> String {
    let mut buf = vec![0; 4096];
    match tokio::time::timeout(wait, stream.read(&mut buf)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        _ => String::new(),
    }
}

#[tokio::test]
async fn connections_past_the_cap_wait_until_one_closes() {
    let config = ApiConfig {
        mongo_uri: mongo_uri(),
        max_connections: 1,
        ..ApiConfig::default()
    };
    let (addr, metrics) = served(config).await;
    let mut first = TcpStream::connect(addr).await.unwrap();
    request(&mut first, "/live").await;
    assert!(
        read_for(&mut first, Duration::from_secs(5))
            .await
            .starts_with("HTTP/1.1 200")
    );
    // The first connection stays open (keep-alive): the second is not served.
    let mut second = TcpStream::connect(addr).await.unwrap();
    request(&mut second, "/live").await;
    assert_eq!(read_for(&mut second, Duration::from_millis(700)).await, "");
    assert_eq!(metrics.open_connections.get(), 1);
    drop(first);
    let answer = read_for(&mut second, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_and_its_bytes_are_freed() {
    // 8 images of 512 KiB: an 8 MiB body, more than the sockets' buffers hold.
    let (_, db) = seed(8, 512).await;
    let config = ApiConfig {
        mongo_uri: mongo_uri(),
        mongo_db: db,
        page_max_bytes: 16 * 1024 * 1024,
        max_response_bytes: 16 * 1024 * 1024,
        write_timeout_ms: 1_500,
        ..ApiConfig::default()
    };
    let (addr, metrics) = served(config).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut reader = socket.connect(addr).await.unwrap();
    request(&mut reader, "/image-plant/potato?limit=100").await;
    let mut first_bytes = vec![0; 1024];
    let _ = reader.read(&mut first_bytes).await.unwrap(); // the response started; then silence
    let held = |m: &consumer_api::ApiMetrics| m.response_bytes.get();
    let started = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        held(&metrics) > 4 * 1024 * 1024,
        "an unsent body is counted"
    );
    while held(&metrics) > 0 || metrics.open_connections.get() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still held after 10 s: {} bytes, {} connections",
            held(&metrics),
            metrics.open_connections.get()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The server still serves others.
    assert_eq!(http_get(addr, "/live").await.unwrap().0, 200);
}

#[tokio::test]
async fn readiness_answers_while_data_requests_queue_for_the_pool() {
    let (_, db) = seed(1, 1).await;
    let upstream = leafsync_test_support::mongo_addr();
    // Every answer takes 100 ms; the data pool has one connection.
    let proxy = latency_proxy(upstream, Duration::from_millis(100)).await;
    let config = ApiConfig {
        mongo_uri: format!("mongodb://127.0.0.1:{proxy}/?maxPoolSize=1"),
        mongo_db: db,
        ready_timeout_ms: 1_500,
        request_timeout_ms: 30_000,
        ..ApiConfig::default()
    };
    let (addr, _) = served(config).await;
    assert_eq!(http_get(addr, "/ready").await.unwrap().0, 200, "warm");
    assert_eq!(
        http_get(addr, "/image-plant/potato/1").await.unwrap().0,
        200
    );
    // 40 requests × ≥100 ms through one connection: ≥4 s of queue.
    let load: Vec<_> = (0..40)
        .map(|_| tokio::spawn(http_get(addr, "/image-plant/potato/1")))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = http_get(addr, "/ready").await.unwrap();
    assert_eq!(status, 200, "readiness waited behind the data pool: {body}");
    for request in load {
        assert_eq!(request.await.unwrap().unwrap().0, 200);
    }
}

/// 600 connections that never finish their request head hold every one of the API's 512
/// slots: the probes still answer at once (a listener of their own), and the silent
/// connections are closed after the header-read timeout, which frees the API again.
#[tokio::test]
async fn silent_connections_at_the_cap_never_starve_the_probes_and_close_after_the_header_timeout()
{
    const SILENT: usize = 600;
    let config = ApiConfig {
        mongo_uri: mongo_uri(),
        header_read_timeout_ms: 1_500,
        ..ApiConfig::default()
    };
    let cap = i64::try_from(config.max_connections).unwrap();
    let (addr, probes, metrics) = served_with_probes(config).await;
    let mut silent = Vec::with_capacity(SILENT);
    for _ in 0..SILENT {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        // A request head that never ends.
        stream
            .write_all(b"GET /live HTTP/1.1\r\nHost: test\r\n")
            .await
            .unwrap();
        silent.push(stream);
    }
    let started = std::time::Instant::now();
    while metrics.open_connections.get() < cap {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the cap is reached"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for path in ["/live", "/ready", "/metrics"] {
        let asked = std::time::Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(1), http_get(probes, path)).await;
        let (status, _) = answer
            .unwrap_or_else(|_| panic!("{path} took over 1 s with the API at its cap"))
            .unwrap();
        assert_eq!(status, 200, "{path}");
        assert!(asked.elapsed() < Duration::from_secs(1));
    }
    // Every silent connection is closed by the server: the 512 served first after the
    // timeout, then the 88 that waited in the accept queue after theirs.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    for (i, stream) in silent.iter_mut().enumerate() {
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(_)) => {} // an error response before the close is fine
                Err(elapsed) => panic!("silent connection {i} still open after 15 s ({elapsed})"),
            }
        }
    }
    while metrics.open_connections.get() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "slots are freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        http_get(addr, "/live").await.unwrap().0,
        200,
        "the API serves again"
    );
}

/// A keep-alive connection that sends nothing after its request is closed after the
/// header-read timeout; one that stops in the middle of a body, after the idle timeout.
#[tokio::test]
async fn idle_keep_alive_and_stalled_bodies_are_closed_after_their_timeouts() {
    let config = ApiConfig {
        mongo_uri: mongo_uri(),
        header_read_timeout_ms: 800,
        idle_timeout_ms: 1_200,
        ..ApiConfig::default()
    };
    let (addr, metrics) = served(config).await;
    let mut kept = TcpStream::connect(addr).await.unwrap();
    request(&mut kept, "/live").await;
    assert!(
        read_for(&mut kept, Duration::from_secs(5))
            .await
            .starts_with("HTTP/1.1 200")
    );
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(b"POST /live HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\nabc")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    for stream in [&mut kept, &mut stalled] {
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(_)) => {}
                Err(elapsed) => panic!("still open after 10 s ({elapsed})"),
            }
        }
    }
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "not before the timeouts"
    );
    while metrics.open_connections.get() > 0 {
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
