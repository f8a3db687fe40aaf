//! An image's LIMS id: a non-negative integer. The one place that rule lives, for the
//! event parser (the `id` field) and the API (the `{id}` path segment) alike.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, de};

/// A LIMS image id, known to be non-negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageId(i64);

impl ImageId {
    /// `id` when it is a valid image id.
    pub fn new(id: i64) -> Option<Self> {
        (id >= 0).then_some(Self(id))
    }

    /// The id as stored (an integer).
    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Text that is not a non-negative decimal integer (echoed at most 64 characters long).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("image id must be a non-negative integer, got {0:?}")]
pub struct InvalidImageId(pub String);

impl FromStr for ImageId {
    type Err = InvalidImageId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<i64>()
            .ok()
            .and_then(Self::new)
            .ok_or_else(|| InvalidImageId(s.chars().take(64).collect()))
    }
}

impl<'de> Deserialize<'de> for ImageId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_non_negative_integers() {
        assert_eq!("42".parse::<ImageId>().map(ImageId::get), Ok(42));
        assert_eq!(ImageId::new(0).map(ImageId::get), Some(0));
        assert_eq!(ImageId::new(-1), None);
        for bad in ["-1", "abc", "1.5", "", "99999999999999999999"] {
            assert_eq!(
                bad.parse::<ImageId>(),
                Err(InvalidImageId(bad.to_owned())),
                "{bad}"
            );
        }
        assert_eq!("9".repeat(100).parse::<ImageId>().unwrap_err().0.len(), 64);
    }
}
