//! Producer DB vs consumer DB, document by document, for the experiment: the same images,
//! with no difference by the product's own comparison ([`leafsync_core::compare`]).

use std::{collections::BTreeMap, fmt};

use futures::TryStreamExt;
use leafsync_core::PlantType;
use mongodb::{
    Database,
    bson::{Document, doc},
};

/// Differences found in one plant's collection.
#[derive(Debug, Default)]
pub struct PlantReport {
    /// Images in the producer DB.
    pub producer: usize,
    /// Images in the consumer DB.
    pub consumer: usize,
    /// Ids only in the producer DB.
    pub missing: Vec<i64>,
    /// Ids only in the consumer DB.
    pub extra: Vec<i64>,
    /// Ids present in both whose documents differ, with the first difference.
    pub different: Vec<(i64, String)>,
}

/// The whole comparison.
#[derive(Debug, Default)]
pub struct Report {
    /// By plant.
    pub plants: BTreeMap<PlantType, PlantReport>,
}

impl Report {
    /// No image missing, extra or different.
    pub fn is_clean(&self) -> bool {
        self.plants
            .values()
            .all(|p| p.missing.is_empty() && p.extra.is_empty() && p.different.is_empty())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (plant, p) in &self.plants {
            writeln!(
                f,
                "{plant:<7} producer {:>5}  consumer {:>5}  missing {:>4}  extra {:>4}  different {:>4}",
                p.producer,
                p.consumer,
                p.missing.len(),
                p.extra.len(),
                p.different.len()
            )?;
            for (id, why) in p.different.iter().take(5) {
                writeln!(f, "  #{id}: {why}")?;
            }
        }
        write!(
            f,
            "{}",
            if self.is_clean() {
                "CLEAN"
            } else {
                "DIFFERENT"
            }
        )
    }
}

pub use leafsync_core::compare::{difference, id_of};

async fn load(db: &Database, collection: &str) -> mongodb::error::Result<BTreeMap<i64, Document>> {
    let cursor = db.collection::<Document>(collection).find(doc! {}).await?;
    let docs: Vec<Document> = cursor.try_collect().await?;
    Ok(docs
        .into_iter()
        .filter_map(|d| Some((id_of(&d)?, d)))
        .collect())
}

/// [`verify`], again every second while the databases differ, for up to `wait`: events
/// still in flight reach the consumer DB meanwhile. Returns the last report.
pub async fn verify_within(
    producer: &Database,
    consumer: &Database,
    wait: std::time::Duration,
) -> mongodb::error::Result<Report> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut report = verify(producer, consumer).await?;
    while !report.is_clean() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        report = verify(producer, consumer).await?;
    }
    Ok(report)
}

/// Compares the three plant collections of the two databases.
pub async fn verify(producer: &Database, consumer: &Database) -> mongodb::error::Result<Report> {
    let mut report = Report::default();
    for plant in PlantType::ALL {
        let (p, c) = (
            load(producer, plant.collection()).await?,
            load(consumer, plant.collection()).await?,
        );
        let mut r = PlantReport {
            producer: p.len(),
            consumer: c.len(),
            ..PlantReport::default()
        };
        for (id, pd) in &p {
            match c.get(id) {
                None => r.missing.push(*id),
                Some(cd) => {
                    if let Some(why) = difference(pd, cd) {
                        r.different.push((*id, why.to_string()));
                    }
                }
            }
        }
        r.extra = c.keys().filter(|id| !p.contains_key(id)).copied().collect();
        report.plants.insert(plant, r);
    }
    Ok(report)
}
