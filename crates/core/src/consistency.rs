use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How many of the R replicas must answer (durable acks for writes) before a request
/// succeeds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    One,
    #[default]
    Quorum,
    All,
}

impl Consistency {
    /// Acks required out of `replicas`: 1, a majority, or all of them.
    pub fn required(self, replicas: usize) -> usize {
        match self {
            Consistency::One => 1.min(replicas),
            Consistency::Quorum => replicas / 2 + 1,
            Consistency::All => replicas,
        }
    }
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Consistency::One => "one",
            Consistency::Quorum => "quorum",
            Consistency::All => "all",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown consistency level {0:?}: expected one, quorum or all")]
pub struct ParseConsistencyError(String);

impl FromStr for Consistency {
    type Err = ParseConsistencyError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "one" => Ok(Consistency::One),
            "quorum" => Ok(Consistency::Quorum),
            "all" => Ok(Consistency::All),
            _ => Err(ParseConsistencyError(text.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_acks() {
        assert_eq!(Consistency::One.required(3), 1);
        assert_eq!(Consistency::Quorum.required(3), 2);
        assert_eq!(Consistency::Quorum.required(4), 3);
        assert_eq!(Consistency::All.required(3), 3);
        assert_eq!(Consistency::Quorum.required(1), 1);
    }

    #[test]
    fn parses_levels() {
        assert_eq!("QUORUM".parse(), Ok(Consistency::Quorum));
        assert!("most".parse::<Consistency>().is_err());
    }
}
