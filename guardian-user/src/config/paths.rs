//! The config's path keys checked by their text alone (pure: no IO): every path is absolute,
//! has no `.`/`..` component in its raw text (`Path::components` would silently drop a `.`), no
//! NUL; repeated and trailing slashes are normalized away so every key spells a directory the
//! same way. Workspaces are not `/` or a system directory and do not overlap; the audit log and
//! the state dir are not inside a workspace, nor a workspace inside the state dir.
//! The same checks by identity, for paths that exist, live in `ondisk.rs`.

use super::{Config, KeyError};
use crate::textpath::shown;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The longest path a key may hold (Linux `PATH_MAX`, terminating NUL included).
const PATH_MAX: usize = 4095;
/// The longest component (Linux `NAME_MAX`).
const NAME_MAX: usize = 255;

/// Directories that are never a workspace themselves (a workspace *below* one, such as
/// `/home/worker/dispatch` or `/var/lib/builds`, is fine): each child of a workspace is a
/// project Guardian may delete whole.
pub const SYSTEM_DIRS: &[&str] = &[
    "/",
    "/bin",
    "/boot",
    "/boot/efi",
    "/dev",
    "/dev/shm",
    "/efi",
    "/etc",
    "/home",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/lost+found",
    "/media",
    "/mnt",
    "/nix",
    "/nix/store",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/run/user",
    "/sbin",
    "/snap",
    "/sys",
    "/tmp",
    "/usr",
    "/usr/bin",
    "/usr/include",
    "/usr/lib",
    "/usr/lib32",
    "/usr/lib64",
    "/usr/libexec",
    "/usr/libx32",
    "/usr/local",
    "/usr/local/bin",
    "/usr/local/lib",
    "/usr/sbin",
    "/usr/share",
    "/usr/src",
    "/var",
    "/var/backups",
    "/var/cache",
    "/var/lib",
    "/var/local",
    "/var/lock",
    "/var/log",
    "/var/mail",
    "/var/opt",
    "/var/run",
    "/var/spool",
    "/var/tmp",
];

/// Kernel interfaces: nothing at or below them is ever a workspace.
pub const KERNEL_TREES: &[&str] = &["/proc", "/sys"];

/// The normalized spelling of a path key: absolute, no `.`/`..`, no NUL, no empty component,
/// within `PATH_MAX`/`NAME_MAX`. `Err` says what is wrong.
pub fn normalize(path: &Path) -> Result<PathBuf, String> {
    let raw = path.as_os_str().as_bytes();
    let quoted = shown(path);
    if raw.is_empty() {
        return Err("must not be empty".into());
    }
    if raw.contains(&0) {
        return Err(format!("`{quoted}` contains a NUL byte"));
    }
    if raw.first() != Some(&b'/') {
        return Err(format!("`{quoted}` must be an absolute path"));
    }
    if raw.len() > PATH_MAX {
        return Err(format!(
            "`{quoted}` is longer than {PATH_MAX} bytes, the longest path Linux accepts"
        ));
    }
    let mut out = String::from("/");
    let text = path
        .to_str()
        .ok_or_else(|| format!("`{quoted}` is not valid UTF-8"))?;
    for part in text.split('/').filter(|p| !p.is_empty()) {
        if part == "." || part == ".." {
            return Err(format!(
                "`{quoted}` must not contain `{part}` components: write the path it stands for"
            ));
        }
        if part.len() > NAME_MAX {
            return Err(format!(
                "`{quoted}` has a component longer than {NAME_MAX} bytes"
            ));
        }
        if !out.ends_with('/') {
            out.push('/');
        }
        out.push_str(part);
    }
    Ok(PathBuf::from(out))
}

/// Why `path` (normalized) cannot be a workspace by its text, if it cannot.
pub fn system_dir_problem(path: &Path) -> Option<String> {
    if path == Path::new("/") {
        return Some("the filesystem root `/` cannot be a workspace".into());
    }
    if let Some(tree) = KERNEL_TREES.iter().find(|t| path.starts_with(t)) {
        return Some(format!(
            "`{}` is in {tree}, a kernel interface: it cannot be a workspace",
            shown(path)
        ));
    }
    SYSTEM_DIRS.contains(&path.to_str()?).then(|| {
        format!(
            "`{}` is a system directory and cannot be a workspace (each child of a workspace \
             may be deleted whole): use a directory below it, e.g. `{}/builds`",
            shown(path),
            shown(path)
        )
    })
}

/// `a.b.c` → `["a", "b", "c"]`.
fn key(dotted: &str) -> Vec<String> {
    dotted.split('.').map(str::to_string).collect()
}

/// How two normalized paths relate by their text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overlap {
    Same,
    /// The first is inside the second.
    Inside,
    /// The first contains the second.
    Contains,
}

pub fn overlap(a: &Path, b: &Path) -> Option<Overlap> {
    if a == b {
        Some(Overlap::Same)
    } else if a.starts_with(b) {
        Some(Overlap::Inside)
    } else if b.starts_with(a) {
        Some(Overlap::Contains)
    } else {
        None
    }
}

/// The message for workspace `later_key` overlapping workspace `earlier_key`.
pub fn workspace_overlap_message(
    how: Overlap,
    later: &Path,
    earlier_key: &str,
    earlier: &Path,
    by_identity: bool,
) -> String {
    let how_text = match how {
        Overlap::Same => "is the same directory as",
        Overlap::Inside => "is inside",
        Overlap::Contains => "contains",
    };
    let identity = if by_identity {
        " (by device and inode: a bind mount or another spelling of it)"
    } else {
        ""
    };
    format!(
        "`{}` {how_text} {earlier_key} (`{}`){identity}: workspaces must not overlap, or the outer \
         one's projects would include the inner workspace and its protected entries",
        shown(later),
        shown(earlier)
    )
}

impl Config {
    /// Rewrites every path key to its normalized spelling; `Err` names the first bad key.
    pub(super) fn normalize_paths(&mut self) -> Result<(), KeyError> {
        let fix = |path: &mut PathBuf, at: Vec<String>| -> Result<(), KeyError> {
            *path = normalize(path).map_err(|m| (at, m))?;
            Ok(())
        };
        fix(&mut self.daemon.audit_log, key("daemon.audit_log"))?;
        fix(&mut self.daemon.state_dir, key("daemon.state_dir"))?;
        if let Some(dir) = &mut self.daemon.runtime_dir {
            fix(dir, key("daemon.runtime_dir"))?;
        }
        fix(&mut self.daemon.journal_dir, key("daemon.journal_dir"))?;
        for (i, ws) in self.workspaces.iter_mut().enumerate() {
            fix(&mut ws.path, key(&format!("workspaces.{i}.path")))?;
        }
        if let Some(db) = &mut self.tasks.db {
            fix(db, key("tasks.db"))?;
        }
        for (field, list) in [
            ("task_areas", &mut self.tasks.task_areas),
            ("scratch_areas", &mut self.tasks.scratch_areas),
        ] {
            for path in list.iter_mut() {
                fix(path, key(&format!("tasks.{field}")))?;
            }
        }
        for (i, limit) in self.tasks.usage_limits.iter_mut().enumerate() {
            fix(
                &mut limit.workspace,
                key(&format!("tasks.usage_limits.{i}.workspace")),
            )?;
        }
        Ok(())
    }

    /// The lexical path rules (paths already normalized).
    pub(super) fn validate_paths(&self) -> Result<(), KeyError> {
        let audit = &self.daemon.audit_log;
        if audit == Path::new("/") || SYSTEM_DIRS.contains(&audit.to_str().unwrap_or_default()) {
            return Err((
                key("daemon.audit_log"),
                format!("`{}` is a directory, not a log file", shown(audit)),
            ));
        }
        let mut own = vec![(&self.daemon.state_dir, "daemon.state_dir")];
        if let Some(runtime) = &self.daemon.runtime_dir {
            own.push((runtime, "daemon.runtime_dir"));
        }
        for (dir, at) in &own {
            if SYSTEM_DIRS.contains(&dir.to_str().unwrap_or_default()) {
                return Err((
                    key(at),
                    format!(
                        "`{}` is a system directory: give Guardian a directory of its own, e.g. \
                         /var/lib/guardian",
                        shown(dir)
                    ),
                ));
            }
        }
        for (i, ws) in self.workspaces.iter().enumerate() {
            let at = || key(&format!("workspaces.{i}.path"));
            if let Some(problem) = system_dir_problem(&ws.path) {
                return Err((at(), problem));
            }
            for (j, earlier) in self.workspaces.iter().enumerate().take(i) {
                if let Some(how) = overlap(&ws.path, &earlier.path) {
                    return Err((
                        at(),
                        workspace_overlap_message(
                            how,
                            &ws.path,
                            &format!("workspaces.{j}.path"),
                            &earlier.path,
                            false,
                        ),
                    ));
                }
            }
        }
        for (i, ws) in self.workspaces.iter().enumerate() {
            let ws_key = format!("workspaces.{i}.path");
            if audit.starts_with(&ws.path) {
                return Err((
                    key("daemon.audit_log"),
                    inside_workspace_message("audit log", audit, &ws_key, &ws.path, false),
                ));
            }
            for (dir, at) in &own {
                if dir.starts_with(&ws.path) {
                    return Err((
                        key(at),
                        inside_workspace_message("state dir", dir, &ws_key, &ws.path, false),
                    ));
                }
                if ws.path.starts_with(dir) {
                    return Err((
                        key(&ws_key),
                        workspace_in_state_message(&ws.path, dir, at, false),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The message for the audit log or state dir (`what`) inside workspace `ws_key`.
pub fn inside_workspace_message(
    what: &str,
    path: &Path,
    ws_key: &str,
    ws: &Path,
    by_identity: bool,
) -> String {
    let identity = if by_identity {
        " (by device and inode)"
    } else {
        ""
    };
    format!(
        "the {what} `{}` is inside {ws_key} (`{}`){identity}: a cleanup rule or a phase-2 \
         deletion could remove it; keep Guardian's own files outside every workspace",
        shown(path),
        shown(ws)
    )
}

/// The message for a workspace inside (or equal to) the state dir.
pub fn workspace_in_state_message(ws: &Path, state: &Path, at: &str, by_identity: bool) -> String {
    let identity = if by_identity {
        " (by device and inode)"
    } else {
        ""
    };
    format!(
        "`{}` is inside {at} (`{}`){identity}: Guardian would clean its own state",
        shown(ws),
        shown(state)
    )
}
