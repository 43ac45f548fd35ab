//! Paths as text, losslessly. File names are bytes: a task can create a dir whose name is not
//! UTF-8 or holds a newline. Everything Guardian writes — the audit log, the state files, JSON
//! output, log lines — shows a path through [`escape`], and everything it reads back goes through
//! [`unescape`], so any byte string survives the round trip and no name can forge a log line.
//!
//! The escaping: a backslash is written `\\`; a byte that is not part of valid UTF-8, a control
//! byte (below 0x20, and 0x7f) is written `\xNN` (two lower-case hex digits). Every other
//! character is itself, so ordinary paths read as they are. The mapping is one-to-one: `\` only
//! ever starts one of the two escapes.

use serde::{Deserialize, Deserializer, Serializer};
use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// The text of `path`, escaped (see the module doc).
pub fn escape(path: &Path) -> String {
    escape_bytes(path.as_os_str().as_bytes())
}

/// The text of a byte string, escaped (see the module doc).
pub fn escape_bytes(mut bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    while !bytes.is_empty() {
        let (valid, rest) = match std::str::from_utf8(bytes) {
            Ok(all) => (all, &[][..]),
            Err(e) => {
                let (ok, rest) = bytes.split_at(e.valid_up_to());
                // The first `valid_up_to` bytes are valid UTF-8 by definition.
                (std::str::from_utf8(ok).unwrap_or_default(), rest)
            }
        };
        for c in valid.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => push_hex(&mut out, c as u8),
                c => out.push(c),
            }
        }
        if let Some((&bad, tail)) = rest.split_first() {
            push_hex(&mut out, bad);
            bytes = tail;
        } else {
            bytes = rest;
        }
    }
    out
}

fn push_hex(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('\\');
    out.push('x');
    out.push(HEX[(b >> 4) as usize] as char);
    out.push(HEX[(b & 15) as usize] as char);
}

/// Why a text is not an escaped path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not an escaped path: {why}")]
pub struct UnescapeError {
    pub text: String,
    pub why: &'static str,
}

/// The bytes an [`escape`]d text stands for.
pub fn unescape(text: &str) -> Result<PathBuf, UnescapeError> {
    let err = |why| UnescapeError {
        text: text.to_string(),
        why,
    };
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            Some(b'x') => {
                let hex = bytes
                    .get(i + 2..i + 4)
                    .ok_or_else(|| err("`\\x` needs two hex digits"))?;
                let hex =
                    std::str::from_utf8(hex).map_err(|_| err("`\\x` needs two hex digits"))?;
                let b =
                    u8::from_str_radix(hex, 16).map_err(|_| err("`\\x` needs two hex digits"))?;
                out.push(b);
                i += 4;
            }
            _ => return Err(err("a backslash must start `\\\\` or `\\xNN`")),
        }
    }
    Ok(PathBuf::from(OsString::from_vec(out)))
}

/// `Display` of a path, escaped: for log lines and human output.
pub struct Shown<'a>(pub &'a Path);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape(self.0))
    }
}

/// Shows `path` escaped, e.g. `tracing::warn!(path = %shown(&p), ...)` or `format!("{}", shown(&p))`.
pub fn shown(path: &Path) -> Shown<'_> {
    Shown(path)
}

/// Serde for one path: `#[serde(with = "crate::textpath")]`.
pub fn serialize<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&escape(path))
}

/// Serde for one path: `#[serde(with = "crate::textpath")]`.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let text = String::deserialize(d)?;
    unescape(&text).map_err(serde::de::Error::custom)
}

/// Serde for a list of paths: `#[serde(with = "crate::textpath::list")]`.
pub mod list {
    use super::*;
    use serde::ser::SerializeSeq;

    pub fn serialize<S: Serializer>(paths: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(paths.len()))?;
        for p in paths {
            seq.serialize_element(&escape(p))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|t| unescape(t).map_err(serde::de::Error::custom))
            .collect()
    }
}

/// Serde for an optional path: `#[serde(with = "crate::textpath::option")]`.
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(path: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        match path {
            Some(p) => s.serialize_some(&escape(p)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| unescape(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// A path as a serde value of its own (for maps keyed by path, tuples, `json!`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TextPath(pub PathBuf);

impl serde::Serialize for TextPath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for TextPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize(d).map(TextPath)
    }
}

impl From<&Path> for TextPath {
    fn from(p: &Path) -> Self {
        TextPath(p.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(b: &[u8]) -> PathBuf {
        PathBuf::from(OsString::from_vec(b.to_vec()))
    }

    #[test]
    fn ordinary_paths_read_as_they_are() {
        assert_eq!(
            escape(Path::new("/home/worker/dispatch/alpha")),
            "/home/worker/dispatch/alpha"
        );
        assert_eq!(
            escape(Path::new("/ws/名前 with space")),
            "/ws/名前 with space"
        );
    }

    #[test]
    fn every_byte_string_round_trips() {
        let cases: &[&[u8]] = &[
            b"/ws/bad\xff",
            b"/ws/a\\b",
            b"/ws/\\xff",
            b"/ws/new\nline",
            b"/ws/\x1b[31mred",
            b"\xc3",
            b"\xc3\xa9\xe9",
            b"",
            b"\\",
            b"\x7f\x00\x01",
        ];
        for case in cases {
            let p = bytes(case);
            let text = escape(&p);
            assert!(!text.contains('\n') && !text.contains('\u{1b}'), "{text:?}");
            assert_eq!(unescape(&text).unwrap(), p, "{text:?}");
        }
        // Every two-byte string, exhaustively.
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let p = bytes(&[a, b]);
                assert_eq!(unescape(&escape(&p)).unwrap(), p);
            }
        }
    }

    #[test]
    fn escapes_are_distinct_from_look_alike_names() {
        assert_ne!(escape(&bytes(b"/ws/\xff")), escape(&bytes(b"/ws/\\xff")));
        assert_eq!(escape(&bytes(b"/ws/\xff")), "/ws/\\xff");
        assert_eq!(escape(&bytes(b"/ws/\\xff")), "/ws/\\\\xff");
    }

    #[test]
    fn malformed_escapes_are_errors() {
        for bad in ["\\", "\\q", "\\x", "\\x1", "\\xzz", "a\\"] {
            assert!(unescape(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn serde_round_trips_through_json() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct R {
            #[serde(with = "crate::textpath")]
            path: PathBuf,
            #[serde(with = "crate::textpath::list")]
            more: Vec<PathBuf>,
            #[serde(with = "crate::textpath::option")]
            maybe: Option<PathBuf>,
        }
        let r = R {
            path: bytes(b"/ws/bad\xff"),
            more: vec![bytes(b"/ws/\n"), PathBuf::from("/ok")],
            maybe: Some(bytes(b"\xfe")),
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<R>(&json).unwrap(), r);
    }
}
