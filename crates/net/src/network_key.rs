//! A private network's pre-shared key, in kubo's `swarm.key` format: peers that hold the
//! same key encrypt every TCP connection with it (libp2p pnet, XSalsa20) before noise
//! starts, so a peer without it cannot complete a single handshake.

use std::path::Path;

use libp2p::pnet::PreSharedKey;

#[derive(Debug, thiserror::Error)]
pub enum NetworkKeyError {
    #[error("cannot read network key {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("network key {path} is not a swarm.key (/key/swarm/psk/1.0.0/, /base16/, 64 hex digits): {reason}")]
    Malformed { path: String, reason: String },
    #[error("cannot write network key {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("cannot gather randomness for a network key: {0}")]
    Random(String),
}

/// The key every peer of one private network holds.
#[derive(Clone, Copy)]
pub struct NetworkKey(pub(crate) PreSharedKey);

impl std::fmt::Debug for NetworkKey {
    /// Names the key by its fingerprint, never by its bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NetworkKey({})", self.fingerprint())
    }
}

impl NetworkKey {
    /// A fresh key from the operating system's randomness.
    pub fn generate() -> Result<Self, NetworkKeyError> {
        let mut bytes = [0; 32];
        getrandom::fill(&mut bytes).map_err(|e| NetworkKeyError::Random(e.to_string()))?;
        Ok(Self(PreSharedKey::new(bytes)))
    }

    /// Reads a `swarm.key` file.
    pub fn load(path: &Path) -> Result<Self, NetworkKeyError> {
        let shown = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| NetworkKeyError::Read { path: shown.clone(), source })?;
        Self::parse(&text, &shown)
    }

    /// The key of a `swarm.key` file's `text`; errors name the file as `shown`.
    pub fn parse(text: &str, shown: &str) -> Result<Self, NetworkKeyError> {
        let malformed = |reason: String| NetworkKeyError::Malformed { path: shown.into(), reason };
        // libp2p's parser slices the key line by bytes and panics inside a multi-byte
        // character (found by the config_files fuzz target): a key file is ASCII anyway.
        if !text.is_ascii() {
            return Err(malformed("it holds characters other than ASCII".into()));
        }
        text.parse().map(Self).map_err(|e: libp2p::pnet::KeyParseError| malformed(e.to_string()))
    }

    /// Writes the key as a new `swarm.key` readable by its owner only; an existing file is
    /// never overwritten, since the peers holding it would be locked out.
    pub fn create_file(&self, path: &Path) -> Result<(), NetworkKeyError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
            file.write_all(self.0.to_key_file().as_bytes())?;
            file.sync_all()
        };
        write().map_err(|source| NetworkKeyError::Write { path: path.display().to_string(), source })
    }

    /// A short name of the key that does not reveal it (go-libp2p computes the same), to
    /// tell in logs whether two peers hold the same key.
    pub fn fingerprint(&self) -> String {
        self.0.fingerprint().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_reads_back_as_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("swarm.key");
        let key = NetworkKey::generate().unwrap();
        key.create_file(&path).unwrap();
        assert_eq!(NetworkKey::load(&path).unwrap().0, key.0);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("/key/swarm/psk/1.0.0/\n/base16/\n"), "{text}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_ne!(NetworkKey::generate().unwrap().0, key.0, "two keys from the same randomness");
    }

    #[test]
    fn an_existing_key_file_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("swarm.key");
        NetworkKey::generate().unwrap().create_file(&path).unwrap();
        let before = std::fs::read(&path).unwrap();
        let error = NetworkKey::generate().unwrap().create_file(&path).unwrap_err().to_string();
        assert!(error.contains("File exists"), "{error}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn a_malformed_key_file_is_a_one_line_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("swarm.key");
        // The last one made libp2p's parser panic: 64 bytes of key line, one character of two.
        let two_byte_char = format!("/key/swarm/psk/1.0.0/\n/base16/\n012345678\u{31e}{}\n", "a".repeat(53));
        for text in
            ["", "/key/swarm/psk/1.0.0/\n/base16/\nabc\n", "/key/swarm/psk/1.0.0/\n/base64/\nabc\n", &two_byte_char]
        {
            std::fs::write(&path, text).unwrap();
            let error = NetworkKey::load(&path).unwrap_err().to_string();
            assert!(error.contains("is not a swarm.key") && !error.contains('\n'), "{error}");
        }
    }

    #[test]
    fn logs_name_the_key_by_its_fingerprint_only() {
        let key = NetworkKey(PreSharedKey::new([7; 32]));
        let shown = format!("{key:?}");
        assert_eq!(shown, format!("NetworkKey({})", key.fingerprint()));
        assert!(!shown.contains("0707"), "{shown}");
    }
}
