//! Parsing what a read of the fanotify queue returns: event metadata and `FAN_REPORT_DFID_NAME`
//! info records → the distinct (directory handle, name) changes, with their event types merged.

use super::super::track::Change;
use rustix::fd::{FromRawFd, OwnedFd};
use std::collections::HashMap;
use std::ffi::{CStr, CString};

/// One change the queue reported: an entry `name` of the directory the handle names, with the
/// union of the event types reported for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Item {
    pub(super) fsid: [u8; 8],
    pub(super) handle_type: i32,
    pub(super) handle: Vec<u8>,
    pub(super) name: CString,
    pub(super) mask: u64,
}

impl Item {
    /// What the events said happened to the name.
    pub(super) fn change(&self) -> Change {
        Change::seen(
            self.mask & libc::FAN_DELETE != 0,
            self.mask & libc::FAN_MOVED_FROM != 0,
            self.mask & libc::FAN_MOVED_TO != 0,
        )
    }

    pub(super) fn cache_key(&self) -> Vec<u8> {
        let mut key = Vec::with_capacity(12 + self.handle.len());
        key.extend_from_slice(&self.fsid);
        key.extend_from_slice(&self.handle_type.to_ne_bytes());
        key.extend_from_slice(&self.handle);
        key
    }
}

/// One read's worth of events.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Parsed {
    pub(super) overflow: bool,
    /// Distinct changes in queue order (the size table re-reads state, so repeats add nothing
    /// but their event types, which are merged).
    pub(super) items: Vec<Item>,
}

pub(super) const METADATA_LEN: usize = std::mem::size_of::<libc::fanotify_event_metadata>();

fn ne_u16(b: &[u8]) -> u16 {
    u16::from_ne_bytes([b[0], b[1]])
}

fn ne_u32(b: &[u8]) -> u32 {
    u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

/// Parses `fanotify_event_metadata` records and their `fanotify_event_info_fid` records (with
/// `FAN_REPORT_DFID_NAME`: fsid, parent directory handle, entry name).
pub(super) fn parse_events(buf: &[u8]) -> Result<Parsed, String> {
    let mut parsed = Parsed::default();
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut rest = buf;
    while rest.len() >= METADATA_LEN {
        let event_len = ne_u32(&rest[0..4]) as usize;
        let vers = rest[4];
        let metadata_len = ne_u16(&rest[6..8]) as usize;
        let mask = u64::from_ne_bytes(rest[8..16].try_into().expect("8 bytes"));
        let fd = ne_u32(&rest[16..20]) as i32;
        if vers != libc::FANOTIFY_METADATA_VERSION {
            return Err(format!(
                "fanotify metadata version {vers}, expected {}",
                libc::FANOTIFY_METADATA_VERSION
            ));
        }
        if metadata_len < METADATA_LEN || event_len < metadata_len || event_len > rest.len() {
            return Err(format!(
                "malformed fanotify event (event_len {event_len}, metadata_len {metadata_len}, \
                 {} bytes left)",
                rest.len()
            ));
        }
        if fd >= 0 {
            // Not expected with FID reporting; never leak one.
            // SAFETY: the kernel handed this descriptor to us.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        if mask & libc::FAN_Q_OVERFLOW != 0 {
            parsed.overflow = true;
        }
        let mut info = &rest[metadata_len..event_len];
        while info.len() >= 4 {
            let info_type = info[0];
            let len = ne_u16(&info[2..4]) as usize;
            if len < 4 || len > info.len() {
                break;
            }
            if let Some(mut item) = parse_dfid_name(info_type, &info[..len]) {
                item.mask = mask;
                let mut key = item.cache_key();
                key.extend_from_slice(item.name.to_bytes_with_nul());
                match seen.get(&key) {
                    Some(&i) => {
                        if let Some(known) = parsed.items.get_mut(i) {
                            known.mask |= mask;
                        }
                    }
                    None => {
                        seen.insert(key, parsed.items.len());
                        parsed.items.push(item);
                    }
                }
            }
            info = &info[len..];
        }
        rest = &rest[event_len..];
    }
    Ok(parsed)
}

/// A `DFID_NAME` info record (header, fsid, `struct file_handle`, NUL-terminated name).
fn parse_dfid_name(info_type: u8, rec: &[u8]) -> Option<Item> {
    if !matches!(
        info_type,
        libc::FAN_EVENT_INFO_TYPE_DFID_NAME
            | libc::FAN_EVENT_INFO_TYPE_OLD_DFID_NAME
            | libc::FAN_EVENT_INFO_TYPE_NEW_DFID_NAME
    ) || rec.len() < 20
    {
        return None;
    }
    let fsid: [u8; 8] = rec[4..12].try_into().ok()?;
    let handle_bytes = ne_u32(&rec[12..16]) as usize;
    let handle_type = ne_u32(&rec[16..20]) as i32;
    let handle = rec.get(20..20 + handle_bytes)?.to_vec();
    let name = CStr::from_bytes_until_nul(rec.get(20 + handle_bytes..)?).ok()?;
    // "." names the directory itself (events on the marked root): no entry to re-read.
    if name.to_bytes().is_empty() || name.to_bytes() == b"." {
        return None;
    }
    Some(Item {
        fsid,
        handle_type,
        handle,
        name: name.to_owned(),
        mask: 0,
    })
}
