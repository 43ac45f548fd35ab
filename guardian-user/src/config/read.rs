//! Reading a config file with limits: only a regular file (a symlink to one is fine), at most
//! [`MAX_CONFIG_BYTES`], valid UTF-8, and never blocking — a FIFO, a device, a socket or a
//! directory is refused before a byte is read, so `guardian config check /dev/zero` neither
//! grows nor hangs.

use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;
use std::path::Path;

/// The largest config file Guardian reads (1 MiB); real ones are a few KiB.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Why a config file could not be read; `line` where the content is at fault.
#[derive(Debug)]
pub(super) struct ReadError {
    pub line: Option<usize>,
    pub message: String,
}

fn fail(message: String) -> ReadError {
    ReadError {
        line: None,
        message,
    }
}

/// What kind of file `kind` is, for the message.
fn kind_name(kind: FileType) -> &'static str {
    match kind {
        FileType::Fifo => "a FIFO (named pipe)",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Directory => "a directory",
        FileType::Socket => "a socket",
        FileType::Symlink => "a symbolic link",
        FileType::RegularFile => "a regular file",
        FileType::Unknown => "of an unknown file type",
    }
}

fn not_regular(kind: FileType) -> ReadError {
    fail(format!(
        "is {}, not a regular file: give the path of a config file",
        kind_name(kind)
    ))
}

/// Reads the whole file at `path` as text, within the limits above.
pub(super) fn read_config_file(path: &Path) -> Result<String, ReadError> {
    // A first look without opening: opening a device can have effects of its own (a tape
    // rewinds, a serial line hangs up) and opening a socket fails with a puzzling ENXIO.
    let st = rustix::fs::stat(path).map_err(|e| fail(format!("cannot read the file: {e}")))?;
    let kind = FileType::from_raw_mode(st.st_mode);
    if kind != FileType::RegularFile {
        return Err(not_regular(kind));
    }
    // Non-blocking, so a file swapped for a FIFO between the two looks cannot hang the open;
    // the fd's own fstat is the one that counts.
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(|e| fail(format!("cannot open the file: {e}")))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| fail(format!("cannot stat the file: {e}")))?;
    let kind = FileType::from_raw_mode(st.st_mode);
    if kind != FileType::RegularFile {
        return Err(not_regular(kind));
    }
    let too_big = || {
        fail(format!(
            "is larger than {MAX_CONFIG_BYTES} bytes (1 MiB), the most a config file may hold"
        ))
    };
    if u64::try_from(st.st_size).map_or(true, |size| size > MAX_CONFIG_BYTES) {
        return Err(too_big());
    }
    // Read at most one byte past the limit: a file that grew after fstat is still bounded.
    let limit = usize::try_from(MAX_CONFIG_BYTES).map_err(|_| too_big())?;
    let mut bytes = vec![0u8; limit + 1];
    let mut len = 0;
    while len < bytes.len() {
        let Some(rest) = bytes.get_mut(len..) else {
            break;
        };
        match rustix::io::read(&fd, rest) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(fail(format!("cannot read the file: {e}"))),
        }
    }
    if len > limit {
        return Err(too_big());
    }
    bytes.truncate(len);
    String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let line = e
            .as_bytes()
            .get(..offset)
            .map_or(1, |b| b.iter().filter(|&&c| c == b'\n').count() + 1);
        ReadError {
            line: Some(line),
            message: format!(
                "is not valid UTF-8 text (byte {offset} is not UTF-8): TOML files are UTF-8"
            ),
        }
    })
}
