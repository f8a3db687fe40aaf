//! The request's path and query, parsed at the boundary into types ([`PlantType`],
//! [`ImageId`], [`ImageFilter`], a page's bounds) by extractors whose rejections are
//! [`ApiError`]s: every malformed request gets the same JSON body as any other error,
//! never axum's plain-text 400 (axum's "customize extractor error" pattern).

use std::collections::HashMap;

use axum::{
    extract::{FromRequestParts, Path, Query},
    http::request::Parts,
};
use leafsync_core::{ImageFilter, ImageId, PlantType};
use serde::de::DeserializeOwned;

use crate::{AppState, error::ApiError};

/// [`Path`], rejecting with [`ApiError::Malformed`].
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(value) = Path::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

/// [`Query`], rejecting with [`ApiError::Malformed`].
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(value) = Query::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

/// `{plant}` of `/image-plant/{plant}…`.
pub struct Plant(pub PlantType);

impl<S: Send + Sync> FromRequestParts<S> for Plant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let ApiPath(raw) = ApiPath::<String>::from_request_parts(parts, state).await?;
        Ok(Self(raw.parse()?))
    }
}

/// `{plant}/{id}` of `/image-plant/{plant}/{id}`.
pub struct Image(pub PlantType, pub ImageId);

impl<S: Send + Sync> FromRequestParts<S> for Image {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let ApiPath((plant, id)) =
            ApiPath::<(String, String)>::from_request_parts(parts, state).await?;
        Ok(Self(plant.parse()?, id.parse()?))
    }
}

type Params = HashMap<String, String>;

/// `is_active`, `has_disease`, `include_deleted` (soft-deleted images are included unless
/// `include_deleted=false`, as in a plain count of the collection).
pub struct Filters(pub ImageFilter);

impl<S: Send + Sync> FromRequestParts<S> for Filters {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let ApiQuery(params) = ApiQuery::<Params>::from_request_parts(parts, state).await?;
        Ok(Self(filter(&params)?))
    }
}

/// A list page's query: the filters, `from_id` (0) and `limit` (1 to the configured
/// maximum, the configured default when absent).
pub struct Page {
    /// The filters.
    pub filter: ImageFilter,
    /// The first id asked for.
    pub from_id: i64,
    /// At most this many images.
    pub limit: u32,
}

impl FromRequestParts<AppState> for Page {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ApiQuery(params) = ApiQuery::<Params>::from_request_parts(parts, state).await?;
        let limit = integer(&params, "limit", 1, i64::from(state.list_max_limit))?
            .and_then(|l| u32::try_from(l).ok())
            .unwrap_or(state.list_default_limit);
        Ok(Self {
            filter: filter(&params)?,
            from_id: integer(&params, "from_id", 0, i64::MAX)?.unwrap_or(0),
            limit,
        })
    }
}

fn flag(params: &Params, name: &'static str) -> Result<Option<bool>, ApiError> {
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
    params: &Params,
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

fn filter(params: &Params) -> Result<ImageFilter, ApiError> {
    Ok(ImageFilter {
        is_active: flag(params, "is_active")?,
        has_disease: flag(params, "has_disease")?,
        include_deleted: flag(params, "include_deleted")?.unwrap_or(true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
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
