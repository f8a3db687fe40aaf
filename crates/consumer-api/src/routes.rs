//! The handlers. Path segments and query flags are parsed here, at the boundary, into
//! `PlantType`, ids and `ImageFilter`; everything below works with types only.

use std::{collections::HashMap, io::Write as _};

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use futures::TryStreamExt;
use leafsync_core::{ImageFilter, PlantType, view::image_json};
use rand::Rng;
use serde_json::{Value, json};

use crate::{
    AppState,
    error::ApiError,
    extract::{ApiPath, ApiQuery},
};

type Params = ApiQuery<HashMap<String, String>>;

/// What a one-image request reserves of the response budget before it queries: a LIMS
/// image is ~30 KB as JSON; a larger one waits for the rest once it is rendered.
const IMAGE_RESERVE: usize = 64 * 1024;

/// The longest end of a list page's body.
const TAIL: usize = r#"],"total_images":4294967295}"#.len();

/// One image as the JSON bytes of its Image API rendering.
fn render(doc: &mongodb::bson::Document) -> Vec<u8> {
    serde_json::to_vec(&image_json(doc)).expect("a JSON value always serializes")
}

fn plant(raw: &str) -> Result<PlantType, ApiError> {
    Ok(raw.parse::<PlantType>()?)
}

fn image_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id >= 0)
        .ok_or_else(|| ApiError::InvalidId(raw.chars().take(64).collect()))
}

fn flag(params: &HashMap<String, String>, name: &'static str) -> Result<Option<bool>, ApiError> {
    params
        .get(name)
        .map(|v| match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(ApiError::InvalidQuery {
                name,
                problem: "must be true or false".to_owned(),
                value: v.chars().take(64).collect(),
            }),
        })
        .transpose()
}

fn integer(
    params: &HashMap<String, String>,
    name: &'static str,
    min: i64,
    max: i64,
) -> Result<Option<i64>, ApiError> {
    params
        .get(name)
        .map(|v| {
            v.parse::<i64>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| ApiError::InvalidQuery {
                    name,
                    problem: format!("must be an integer from {min} to {max}"),
                    value: v.chars().take(64).collect(),
                })
        })
        .transpose()
}

/// `is_active`, `has_disease`, `include_deleted` (soft-deleted images are included unless
/// `include_deleted=false`, as in a plain count of the collection).
fn filter(params: &HashMap<String, String>) -> Result<ImageFilter, ApiError> {
    Ok(ImageFilter {
        is_active: flag(params, "is_active")?,
        has_disease: flag(params, "has_disease")?,
        include_deleted: flag(params, "include_deleted")?.unwrap_or(true),
    })
}

/// `GET /image-plant/{type}/{id}`: one image as the Image API renders it.
pub async fn get_image(
    State(state): State<AppState>,
    ApiPath((raw_plant, raw_id)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let plant = plant(&raw_plant)?;
    let id = image_id(&raw_id)?;
    let reservation = state.budget.reserve(IMAGE_RESERVE).await;
    match state.repo.find_by_id(plant.collection(), id).await? {
        Some(doc) => Ok(reservation.respond(render(&doc)).await),
        None => Err(ApiError::NotFound { plant, id }),
    }
}

/// `GET /image-plant/{type}/total`: `{"total_images": N}`.
pub async fn total(
    State(state): State<AppState>,
    ApiPath(raw_plant): ApiPath<String>,
    ApiQuery(params): Params,
) -> Result<Json<Value>, ApiError> {
    let plant = plant(&raw_plant)?;
    let total = state
        .repo
        .count(plant.collection(), filter(&params)?)
        .await?;
    Ok(Json(json!({ "total_images": total })))
}

/// `GET /image-plant/{type}?from_id=&limit=&…`: a page by ascending id. It holds its
/// byte budget while it is built and sent, and ends early (fewer than `limit` images,
/// still in id order) rather than grow past it; one image is always returned.
pub async fn list(
    State(state): State<AppState>,
    ApiPath(raw_plant): ApiPath<String>,
    ApiQuery(params): Params,
) -> Result<Response, ApiError> {
    let plant = plant(&raw_plant)?;
    let filter = filter(&params)?;
    let from_id = integer(&params, "from_id", 0, i64::MAX)?.unwrap_or(0);
    let limit = integer(&params, "limit", 1, i64::from(state.list_max_limit))?
        .and_then(|l| u32::try_from(l).ok())
        .unwrap_or(state.list_default_limit);
    let reservation = state.budget.reserve(state.page_max_bytes).await;
    let mut docs = state
        .repo
        .list_stream(plant.collection(), from_id, limit, filter)
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
    ApiPath(raw_plant): ApiPath<String>,
    ApiQuery(params): Params,
) -> Result<Response, ApiError> {
    let plant = plant(&raw_plant)?;
    let filter = filter(&params)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn ids_must_be_non_negative_integers() {
        assert_eq!(image_id("42").unwrap(), 42);
        for bad in ["-1", "abc", "1.5", "", "99999999999999999999"] {
            assert!(
                matches!(image_id(bad), Err(ApiError::InvalidId(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn flags_accept_the_usual_spellings_and_reject_others() {
        let f = filter(&params(&[("is_active", "True"), ("has_disease", "0")])).unwrap();
        assert_eq!(f.is_active, Some(true));
        assert_eq!(f.has_disease, Some(false));
        assert!(f.include_deleted);
        let err = filter(&params(&[("is_active", "maybe")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("is_active") && err.contains("maybe"), "{err}");
    }

    #[test]
    fn integers_are_range_checked_and_named_in_errors() {
        let p = params(&[("limit", "500")]);
        let err = integer(&p, "limit", 1, 100).unwrap_err().to_string();
        assert!(err.contains("limit") && err.contains("1 to 100"), "{err}");
        assert_eq!(integer(&params(&[]), "limit", 1, 100).unwrap(), None);
    }
}
