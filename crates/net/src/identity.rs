//! A peer's identity lives in its data dir: replicas belong to an identity, so a restarted
//! peer must come back as the same peer.

use std::io::Write;
use std::path::Path;

use libp2p::identity::Keypair;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read identity {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("cannot write identity {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("identity file {path} is not a libp2p keypair: {reason}")]
    Malformed { path: String, reason: String },
}

/// A peer's keypair: its peer id and what it signs its connections with.
#[derive(Debug, Clone)]
pub struct Identity(pub(crate) Keypair);

/// Loads the ed25519 keypair at `path`, or creates one (readable by the owner only).
pub fn load_or_create_identity(path: &Path) -> Result<Identity, IdentityError> {
    let shown = path.display().to_string();
    match std::fs::read(path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes)
            .map(Identity)
            .map_err(|e| IdentityError::Malformed { path: shown, reason: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let keypair = Keypair::generate_ed25519();
            let bytes = keypair.to_protobuf_encoding().expect("ed25519 keys encode");
            write_private(path, &bytes).map_err(|source| IdentityError::Write { path: shown, source })?;
            Ok(Identity(keypair))
        }
        Err(source) => Err(IdentityError::Read { path: shown, source }),
    }
}

/// Writes through a temporary file and a rename, so a crash never leaves half a key, and
/// syncs the directory, so the key a peer announced survives a crash.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let partial = path.with_extension("partial");
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&partial)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&partial, path)?;
    let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        let first = load_or_create_identity(&path).unwrap();
        let second = load_or_create_identity(&path).unwrap();
        assert_eq!(first.0.public().to_peer_id(), second.0.public().to_peer_id());
    }

    #[test]
    fn garbage_identity_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        std::fs::write(&path, b"not a key").unwrap();
        let error = load_or_create_identity(&path).unwrap_err().to_string();
        assert!(error.contains("not a libp2p keypair"), "{error}");
    }
}
