//! The API's reads: one image by id, counts, pages by id and the n-th match, each with
//! the repository's time limit (`maxTimeMS`) when it has one.

use futures::{Stream, TryStreamExt};
use mongodb::{
    bson::{self, Bson, Document},
    options::{CountOptions, EstimatedDocumentCountOptions, FindOneOptions, FindOptions},
};

use super::{ImageRepository, RepoError};
use crate::event::int_bson;

/// Read-side filters shared by the API's list, count and random endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImageFilter {
    /// Only images with this `is_active`.
    pub is_active: Option<bool>,
    /// `Some(true)`: only images with a `disease`; `Some(false)`: only images without.
    pub has_disease: Option<bool>,
    /// Whether soft-deleted images (`is_deleted: true`) are included.
    pub include_deleted: bool,
}

impl ImageFilter {
    fn to_document(self) -> Document {
        let mut filter = Document::new();
        if let Some(active) = self.is_active {
            filter.insert("is_active", active);
        }
        match self.has_disease {
            Some(true) => {
                filter.insert("disease", bson::doc! { "$ne": Bson::Null });
            }
            Some(false) => {
                filter.insert("disease", Bson::Null);
            }
            None => {}
        }
        if !self.include_deleted {
            filter.insert("is_deleted", bson::doc! { "$ne": true });
        }
        filter
    }
}

/// Documents a `find` returns per batch: bounds what the driver buffers for one cursor
/// (a LIMS image is ~15 KB) without a round trip per document.
const READ_BATCH: u32 = 16;

impl ImageRepository {
    /// One image by id.
    #[tracing::instrument(skip(self), level = "debug")]
    pub async fn find_by_id(
        &self,
        collection: &str,
        id: i64,
    ) -> Result<Option<Document>, RepoError> {
        let options = FindOneOptions::builder()
            .max_time(self.read_time_limit)
            .build();
        Ok(self
            .db
            .collection::<Document>(collection)
            .find_one(bson::doc! { "id": int_bson(id) })
            .with_options(options)
            .await?)
    }

    /// How many images match `filter`. Without any condition this is the collection's
    /// own document count (metadata, O(1)) instead of a scan of every image: the same
    /// number, except on MongoDB right after an unclean shutdown, until it is validated.
    #[tracing::instrument(skip(self), level = "debug")]
    pub async fn count(&self, collection: &str, filter: ImageFilter) -> Result<u64, RepoError> {
        let coll = self.db.collection::<Document>(collection);
        let query = filter.to_document();
        if query.is_empty() {
            let options = EstimatedDocumentCountOptions::builder()
                .max_time(self.read_time_limit)
                .build();
            return Ok(coll
                .estimated_document_count()
                .with_options(options)
                .await?);
        }
        let options = CountOptions::builder()
            .max_time(self.read_time_limit)
            .build();
        Ok(coll.count_documents(query).with_options(options).await?)
    }

    /// Up to `limit` images with `id >= from_id`, by ascending id.
    #[tracing::instrument(skip(self), level = "debug")]
    pub async fn list(
        &self,
        collection: &str,
        from_id: i64,
        limit: u32,
        filter: ImageFilter,
    ) -> Result<Vec<Document>, RepoError> {
        self.list_stream(collection, from_id, limit, filter)
            .await?
            .try_collect()
            .await
    }

    /// [`Self::list`] as a stream: the caller holds one batch of documents at a time and
    /// may stop early (the API ends a page at its byte budget).
    pub async fn list_stream(
        &self,
        collection: &str,
        from_id: i64,
        limit: u32,
        filter: ImageFilter,
    ) -> Result<impl Stream<Item = Result<Document, RepoError>> + Send + use<>, RepoError> {
        let mut query = filter.to_document();
        query.insert("id", bson::doc! { "$gte": int_bson(from_id) });
        let options = FindOptions::builder()
            .sort(bson::doc! { "id": 1 })
            .limit(i64::from(limit))
            .batch_size(READ_BATCH.min(limit))
            .max_time(self.read_time_limit)
            .build();
        let cursor = self
            .db
            .collection::<Document>(collection)
            .find(query)
            .with_options(options)
            .await?;
        Ok(cursor.map_err(RepoError::from))
    }

    /// The `skip`-th image (by ascending id) among those matching `filter`; the API picks
    /// `skip` at random below [`Self::count`], which works on every server (no `$sample`).
    #[tracing::instrument(skip(self), level = "debug")]
    pub async fn nth(
        &self,
        collection: &str,
        filter: ImageFilter,
        skip: u64,
    ) -> Result<Option<Document>, RepoError> {
        let options = FindOptions::builder()
            .sort(bson::doc! { "id": 1 })
            .skip(skip)
            .limit(1)
            .max_time(self.read_time_limit)
            .build();
        let mut cursor = self
            .db
            .collection::<Document>(collection)
            .find(filter.to_document())
            .with_options(options)
            .await?;
        Ok(cursor.try_next().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_translate_to_mongo_queries() {
        let f = ImageFilter {
            is_active: Some(true),
            has_disease: Some(false),
            include_deleted: false,
        };
        assert_eq!(
            f.to_document(),
            bson::doc! { "is_active": true, "disease": Bson::Null, "is_deleted": { "$ne": true } }
        );
        let all = ImageFilter {
            include_deleted: true,
            ..ImageFilter::default()
        };
        assert_eq!(all.to_document(), Document::new());
    }
}
