//! A consumer-DB collection name, checked once where it enters (the job's topic map, the
//! plant types), so a write never carries a name MongoDB would refuse for the whole batch.

use std::{fmt, sync::Arc};

use crate::PlantType;

/// A collection name MongoDB accepts: not empty, no `$` or NUL, not a `system.` name, at
/// most [`CollectionName::MAX_LEN`] bytes. Cheap to clone: every write of a batch shares it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CollectionName(Arc<str>);

/// A name MongoDB would refuse as a collection name, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} cannot be a collection name: {problem}")]
pub struct InvalidCollectionName {
    /// The name (cut to 64 characters).
    pub name: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl CollectionName {
    /// Longest name accepted: MongoDB limits `db.collection` to 255 bytes, and the
    /// database name takes its share.
    pub const MAX_LEN: usize = 200;

    /// `name` when MongoDB can store documents under it.
    pub fn parse(name: &str) -> Result<Self, InvalidCollectionName> {
        let problem = if name.is_empty() {
            Some("it is empty")
        } else if name.contains(['$', '\0']) {
            Some("it contains '$' or NUL")
        } else if name.starts_with("system.") {
            Some("system.* names are MongoDB's own")
        } else if name.len() > Self::MAX_LEN {
            Some("it is longer than 200 bytes")
        } else {
            None
        };
        match problem {
            Some(problem) => Err(InvalidCollectionName {
                name: name.chars().take(64).collect(),
                problem,
            }),
            None => Ok(Self(Arc::from(name))),
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<PlantType> for CollectionName {
    fn from(plant: PlantType) -> Self {
        Self(Arc::from(plant.collection()))
    }
}

impl fmt::Display for CollectionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for CollectionName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_mongodb_refuses_are_refused_here() {
        assert_eq!(
            CollectionName::parse("imagecolplantpotato").unwrap(),
            CollectionName::from(PlantType::Potato)
        );
        for bad in ["", "a$b", "a\0b", "system.users", &"x".repeat(201)] {
            assert!(CollectionName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(CollectionName::parse(&"x".repeat(200)).is_ok());
    }
}
