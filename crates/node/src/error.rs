use shoal_core::{ItemKey, ObjectId};
use shoal_store::StoreError;

/// Why a node operation failed. Each variant says what a client can do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    #[error("object {0} not found")]
    NotFound(ObjectId),
    #[error("name {0:?} not found")]
    NameNotFound(String),
    #[error("bad name: {0}")]
    BadName(String),
    #[error("object is over the {max} byte limit", max = shoal_core::MAX_OBJECT_SIZE)]
    TooLarge,
    #[error("upload failed: {0}")]
    Body(String),
    #[error("{key}: {got} of {required} required acks; {failures}")]
    InsufficientAcks { key: ItemKey, got: usize, required: usize, failures: String },
    #[error("{what} unavailable: {failures}")]
    Unavailable { what: String, failures: String },
    #[error("settings: {0}")]
    Config(#[from] shoal_core::settings::SettingsError),
    #[error("local store: {0}")]
    Store(#[from] StoreError),
    #[error("network: {0}")]
    Network(#[from] crate::NetworkError),
}

/// Joins per-peer failures into one line: `peer A: reason; peer B: reason`.
pub(crate) fn describe_failures(failures: &[(String, String)]) -> String {
    if failures.is_empty() {
        return "no peer answered".into();
    }
    failures.iter().map(|(peer, reason)| format!("{peer}: {reason}")).collect::<Vec<_>>().join("; ")
}
