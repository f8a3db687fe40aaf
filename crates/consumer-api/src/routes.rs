//! The handlers. They take typed requests (see [`crate::extract`]) and answer through the
//! response budget; nothing here parses text.

use std::io::Write as _;

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use futures::TryStreamExt;
use leafsync_core::view::image_json;
use rand::Rng;
use serde_json::{Value, json};

use crate::{
    AppState,
    error::ApiError,
    extract::{Filters, Image, Page, Plant},
};

/// What a one-image request reserves of the response budget before it queries: a LIMS
/// image is ~30 KB as JSON; a larger one waits for the rest once it is rendered.
const IMAGE_RESERVE: usize = 64 * 1024;

/// The longest end of a list page's body.
const TAIL: usize = r#"],"total_images":4294967295}"#.len();

/// One image as the JSON bytes of its Image API rendering.
fn render(doc: &mongodb::bson::Document) -> Vec<u8> {
    serde_json::to_vec(&image_json(doc)).expect("a JSON value always serializes")
}

/// `GET /image-plant/{type}/{id}`: one image as the Image API renders it.
pub async fn get_image(
    State(state): State<AppState>,
    Image(plant, id): Image,
) -> Result<Response, ApiError> {
    let reservation = state.budget.reserve(IMAGE_RESERVE).await;
    match state.repo.find_by_id(plant.collection(), id.get()).await? {
        Some(doc) => Ok(reservation.respond(render(&doc)).await),
        None => Err(ApiError::NotFound { plant, id }),
    }
}

/// `GET /image-plant/{type}/total`: `{"total_images": N}`.
pub async fn total(
    State(state): State<AppState>,
    Plant(plant): Plant,
    Filters(filter): Filters,
) -> Result<Json<Value>, ApiError> {
    let total = state.repo.count(plant.collection(), filter).await?;
    Ok(Json(json!({ "total_images": total })))
}

/// `GET /image-plant/{type}?from_id=&limit=&…`: a page by ascending id. It holds its
/// byte budget while it is built and sent, and ends early (fewer than `limit` images,
/// still in id order) rather than grow past it; one image is always returned.
pub async fn list(
    State(state): State<AppState>,
    Plant(plant): Plant,
    page: Page,
) -> Result<Response, ApiError> {
    let reservation = state.budget.reserve(state.page_max_bytes).await;
    let mut docs = state
        .repo
        .list_stream(plant.collection(), page.from_id, page.limit, page.filter)
        .await?;
    // The Image API's shape, keys in serde_json's order: {"image_list":[…],"total_images":N}.
    let mut body = br#"{"image_list":["#.to_vec();
    let mut count = 0u32;
    while let Some(doc) = docs.try_next().await? {
        let image = render(&doc);
        if count > 0 && body.len() + 1 + image.len() + TAIL > state.page_max_bytes {
            break;
        }
        if count > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&image);
        count += 1;
    }
    write!(body, r#"],"total_images":{count}}}"#).expect("writing to a Vec cannot fail");
    Ok(reservation.respond(body).await)
}

/// `GET /image-plant/{type}/random?…`: one image picked uniformly among the matches.
pub async fn random(
    State(state): State<AppState>,
    Plant(plant): Plant,
    Filters(filter): Filters,
) -> Result<Response, ApiError> {
    let count = state.repo.count(plant.collection(), filter).await?;
    if count == 0 {
        return Err(ApiError::NoMatch(plant));
    }
    let skip = rand::rng().random_range(0..count);
    let reservation = state.budget.reserve(IMAGE_RESERVE).await;
    // An image deleted between count and pick: the next call picks again.
    match state.repo.nth(plant.collection(), filter, skip).await? {
        Some(doc) => Ok(reservation.respond(render(&doc)).await),
        None => Err(ApiError::NoMatch(plant)),
    }
}

/// `GET /live`: the process answers; never touches the DB.
pub async fn live() -> impl IntoResponse {
    Json(json!({ "status": "live" }))
}

/// `GET /ready`: MongoDB answers a `ping` within the ready timeout, else 503. The ping
/// goes through readiness's own connection, not the data requests' pool.
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    match tokio::time::timeout(state.ready_timeout, state.ready.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready: database ping failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "database unavailable" })),
            )
        }
        Err(_) => {
            tracing::warn!("not ready: database ping timed out");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "database unavailable" })),
            )
        }
    }
}

/// Any other path.
pub async fn fallback() -> ApiError {
    ApiError::NoRoute
}
