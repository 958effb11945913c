//! The broadcaster key on disk (libp2p protobuf encoding). The key is the
//! stream's identity: keep the file to keep the stream id across restarts.

use std::{fs, io, path::Path};

use libp2p::identity::Keypair;

/// Loads the key at `path`, or makes one and writes it there (mode 0600).
pub fn load_or_create(path: &Path) -> io::Result<Keypair> {
    match fs::read(path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a libp2p key: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key
                .to_protobuf_encoding()
                .map_err(|e| io::Error::other(e.to_string()))?;
            write_private(path, &bytes)?;
            Ok(key)
        }
        Err(e) => Err(e),
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_survives_a_restart_and_garbage_is_refused() {
        let dir = std::env::temp_dir().join(format!("shoal-key-{}", std::process::id()));
        let _ = fs::remove_file(&dir);
        let a = load_or_create(&dir).unwrap();
        let b = load_or_create(&dir).unwrap();
        assert_eq!(a.public(), b.public());
        fs::write(&dir, b"not a key").unwrap();
        assert!(load_or_create(&dir).is_err());
        fs::remove_file(&dir).unwrap();
    }
}
