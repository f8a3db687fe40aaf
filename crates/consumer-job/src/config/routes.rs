//! `LEAFSYNC_TOPICS` parsed once: which topic's events go to which collection, under
//! which metric label. The job, `reconcile` and the verifier look routes up here; nothing
//! downstream parses the string again.

use std::sync::Arc;

use leafsync_core::{CollectionName, PlantType};

use super::ConfigError;

/// Where a topic's events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The Kafka topic.
    pub topic: String,
    /// The consumer-DB collection its images are upserted into.
    pub collection: CollectionName,
    /// Metric label: the plant whose collection this is, else the collection name.
    pub label: String,
}

/// The parsed `LEAFSYNC_TOPICS` map, in the order given. Each route is shared (`Arc`):
/// a record carries its own through the pipeline instead of looking it up again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routes(Vec<Arc<Route>>);

impl Routes {
    /// The route of `topic`, if the map names it.
    pub fn get(&self, topic: &str) -> Option<&Arc<Route>> {
        self.0.iter().find(|r| r.topic == topic)
    }

    /// Every route, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.0.iter()
    }

    /// The consumed topics.
    pub fn topics(&self) -> Vec<&str> {
        self.0.iter().map(|r| r.topic.as_str()).collect()
    }

    /// The collections written.
    pub fn collections(&self) -> Vec<&str> {
        self.0.iter().map(|r| r.collection.as_str()).collect()
    }

    /// Keeps only the routes whose label is in `labels`; an unknown label is an error
    /// that lists the known ones.
    pub fn only(&mut self, labels: &[String]) -> Result<(), String> {
        if let Some(unknown) = labels
            .iter()
            .find(|l| self.0.iter().all(|r| &r.label != *l))
        {
            let known: Vec<&str> = self.0.iter().map(|r| r.label.as_str()).collect();
            return Err(format!("{unknown}: not one of {}", known.join(", ")));
        }
        if !labels.is_empty() {
            self.0.retain(|r| labels.contains(&r.label));
        }
        Ok(())
    }
}

impl<'a> IntoIterator for &'a Routes {
    type Item = &'a Arc<Route>;
    type IntoIter = std::slice::Iter<'a, Arc<Route>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl std::str::FromStr for Routes {
    type Err = ConfigError;

    /// `topic=collection` pairs, comma-separated.
    fn from_str(topics: &str) -> Result<Self, ConfigError> {
        let invalid = |problem: String| ConfigError::Invalid {
            var: "LEAFSYNC_TOPICS",
            problem,
        };
        let mut routes: Vec<Arc<Route>> = Vec::new();
        for pair in topics.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((topic, collection)) = pair.split_once('=') else {
                return Err(invalid(format!("{pair:?} is not topic=collection")));
            };
            let topic = topic.trim();
            if topic.is_empty() {
                return Err(invalid(format!("{pair:?} names no topic")));
            }
            let collection =
                CollectionName::parse(collection.trim()).map_err(|e| invalid(e.to_string()))?;
            if routes.iter().any(|r| r.topic == topic) {
                return Err(invalid(format!("topic {topic:?} is listed twice")));
            }
            let label = PlantType::ALL
                .iter()
                .find(|p| p.collection() == collection.as_str())
                .map_or_else(|| collection.to_string(), |p| p.as_str().to_owned());
            routes.push(Arc::new(Route {
                topic: topic.to_owned(),
                collection,
                label,
            }));
        }
        if routes.is_empty() {
            return Err(invalid("names no topic".to_owned()));
        }
        Ok(Routes(routes))
    }
}
