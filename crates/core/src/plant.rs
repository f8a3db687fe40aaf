//! The plant types LIMS knows. Parsed once at every boundary (URL path, config) so inner
//! code never compares strings.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, de};

/// One of the three plants LIMS photographs; each has its own topic and collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PlantType {
    /// `potato` topic, `imagecolplantpotato` collection.
    Potato,
    /// `tomato` topic, `imagecolplanttomato` collection.
    Tomato,
    /// `pepper` topic, `imagecolplantpepper` collection.
    Pepper,
}

impl PlantType {
    /// Every plant, in LIMS's round-robin order.
    pub const ALL: [PlantType; 3] = [PlantType::Potato, PlantType::Tomato, PlantType::Pepper];

    /// The lowercase name used in topics, URLs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            PlantType::Potato => "potato",
            PlantType::Tomato => "tomato",
            PlantType::Pepper => "pepper",
        }
    }

    /// The LIMS collection holding this plant's images (same name in producer and consumer DB).
    pub fn collection(self) -> &'static str {
        match self {
            PlantType::Potato => "imagecolplantpotato",
            PlantType::Tomato => "imagecolplanttomato",
            PlantType::Pepper => "imagecolplantpepper",
        }
    }
}

impl fmt::Display for PlantType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of `potato`, `tomato`, `pepper`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown plant type {0:?}: expected one of potato, tomato, pepper")]
pub struct UnknownPlant(pub String);

impl FromStr for PlantType {
    type Err = UnknownPlant;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PlantType::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            // Echo at most 32 characters of what came: enough to spot a typo, never a
            // whole request body reflected back.
            .ok_or_else(|| UnknownPlant(s.chars().take(32).collect()))
    }
}

impl<'de> Deserialize<'de> for PlantType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_plant_round_trips_through_its_name() {
        for plant in PlantType::ALL {
            assert_eq!(plant.as_str().parse::<PlantType>(), Ok(plant));
            assert!(plant.collection().ends_with(plant.as_str()));
        }
    }

    #[test]
    fn plants_deserialize_from_their_names() {
        let plant: PlantType = serde_json::from_str(r#""tomato""#).unwrap();
        assert_eq!(plant, PlantType::Tomato);
        let err = serde_json::from_str::<PlantType>(r#""corn""#).unwrap_err();
        assert!(err.to_string().contains("unknown plant type"), "{err}");
    }

    #[test]
    fn names_are_case_sensitive_and_unknown_names_are_rejected() {
        assert!("Potato".parse::<PlantType>().is_err());
        assert_eq!(
            "corn".parse::<PlantType>(),
            Err(UnknownPlant("corn".to_owned()))
        );
        let long = "x".repeat(10_000);
        assert_eq!(
            long.parse::<PlantType>().unwrap_err().0.len(),
            32,
            "an unknown plant is echoed back cut short"
        );
    }
}
