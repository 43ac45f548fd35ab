//! The files the server reads or makes: the bearer token and a webhook's CA file (read with the
//! care of Guardian's other files: `read_guarded`) and the Unix socket (a stale socket of
//! Guardian's own is replaced, anything else at the path is left alone and reported).

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Largest token file read.
const MAX_TOKEN_BYTES: u64 = 4096;

/// Reads the token from `path`: a regular file (no symlink followed, never blocking on a FIFO),
/// owned by Guardian's user or root, readable or writable by nobody else, in a directory no
/// other user can swap it in; trimmed, non-empty, printable ASCII.
pub fn read(path: &Path) -> Result<String, String> {
    let shown = crate::textpath::escape(path);
    if let Some(dir) = path.parent() {
        // Checks the dir and every ancestor (owner, mode) without creating anything.
        crate::fsys::files::OwnDir::open(dir, false)
            .map_err(|e| format!("{shown}: its directory cannot be trusted: {e}"))?;
    }
    let bytes = read_guarded(
        path,
        MAX_TOKEN_BYTES,
        0o077,
        "a token must be readable by its owner only (chmod 600)",
    )?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| format!("{shown} is not text"))?
        .trim();
    if text.is_empty() {
        return Err(format!("{shown} is empty"));
    }
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{shown}: a token is printable ASCII without spaces"
        ));
    }
    Ok(text.to_string())
}

/// Reads a small file Guardian trusts: a regular file (no symlink followed, never blocking on a
/// FIFO) of at most `max_bytes`, owned by Guardian's user or root, with none of the `forbidden`
/// mode bits (`why` says what they would allow).
pub(super) fn read_guarded(
    path: &Path,
    max_bytes: u64,
    forbidden: u32,
    why: &str,
) -> Result<Vec<u8>, String> {
    let shown = crate::textpath::escape(path);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| format!("cannot open {shown}: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot stat {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(format!(
            "{shown} is owned by uid {}, not by Guardian's user (uid {me}) or root",
            meta.uid()
        ));
    }
    if meta.mode() & forbidden != 0 {
        return Err(format!(
            "{shown} has mode {:o}: {why}",
            meta.mode() & 0o7777
        ));
    }
    let mut bytes = Vec::new();
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if bytes.len() as u64 > max_bytes {
        return Err(format!("{shown} is larger than {max_bytes} bytes"));
    }
    Ok(bytes)
}

/// Binds the Unix socket at `path`: a leftover socket owned by Guardian's user is replaced;
/// any other file there is an error. The socket is made mode 0660.
pub fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener, String> {
    let shown = crate::textpath::escape(path);
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            let me = rustix::process::geteuid().as_raw();
            if !meta.file_type().is_socket() || meta.uid() != me {
                return Err(format!(
                    "{shown} exists and is not a socket of Guardian's own: left alone"
                ));
            }
            std::fs::remove_file(path).map_err(|e| format!("cannot remove {shown}: {e}"))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot stat {shown}: {e}")),
    }
    let listener =
        tokio::net::UnixListener::bind(path).map_err(|e| format!("cannot bind {shown}: {e}"))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| format!("cannot chmod {shown}: {e}"))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_token_readable_by_others_or_empty_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "s3cret\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read(&p).unwrap_err();
        assert!(e.contains("mode 644"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        // tempdir lives under /tmp (sticky, 1777): an ancestor others can write but not swap.
        assert_eq!(read(&p).unwrap(), "s3cret");
        std::fs::write(&p, "  \n").unwrap();
        assert!(read(&p).unwrap_err().contains("empty"));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert!(read(&link).is_err());
    }
}
