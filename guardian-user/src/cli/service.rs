//! `guardian install-service`: writes the systemd unit (deploy/systemd/guardian.service, with
//! `ExecStart=` pointing at this binary and the config, `ReadWritePaths=` filled from the
//! config's workspaces and Guardian's own dirs) or, on macOS, a launchd plist for
//! `/Library/LaunchDaemons`; prints the commands that enable it. `generate-assets` (hidden)
//! writes the man page and shell completions the packages ship.
//!
//! Never enables, starts or reloads anything: it writes one file (or, with `--dry-run`, none)
//! and says what to run. Rendering is pure (`render_unit`, `render_plist`).

use anyhow::Context;
use guardian::config::Config;
use guardian::textpath::shown;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The unit as shipped; `render_unit` fills it in.
pub const UNIT_TEMPLATE: &str = include_str!("../../../deploy/systemd/guardian.service");
/// The unit's file name.
pub const UNIT_NAME: &str = "guardian.service";
/// Where an administrator's units go.
pub const SYSTEMD_DIR: &str = "/etc/systemd/system";
/// launchd's label and the plist's directory.
pub const LAUNCHD_LABEL: &str = "guardian";
pub const LAUNCHD_DIR: &str = "/Library/LaunchDaemons";
/// The config a service reads when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/guardian/guardian.toml";

/// Which service manager to write for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Systemd,
    Launchd,
}

impl Kind {
    /// The service manager of the OS Guardian was built for.
    pub fn native() -> Kind {
        if cfg!(target_os = "macos") {
            Kind::Launchd
        } else {
            Kind::Systemd
        }
    }
}

/// What the rendered file names.
#[derive(Debug)]
pub struct ServiceInputs {
    pub binary: PathBuf,
    pub config: PathBuf,
    /// The dirs Guardian writes in (systemd: `ReadWritePaths=`).
    pub writable: Vec<PathBuf>,
}

/// A path the service file cannot name safely.
#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {why}")]
pub struct RenderError {
    what: &'static str,
    path: String,
    why: &'static str,
}

/// The dirs the service writes in: each workspace, the audit log's and the state dir, the task
/// DB's dir and task areas, the serve socket's dir, and the journal dir when the vacuum runs.
/// Sorted, without duplicates; nested paths are kept (each names itself).
pub fn writable_paths(config: &Config) -> Vec<PathBuf> {
    let mut set = BTreeSet::new();
    for ws in &config.workspaces {
        set.insert(ws.path.clone());
    }
    if let Some(dir) = config.daemon.audit_log.parent() {
        set.insert(dir.to_path_buf());
    }
    set.insert(config.daemon.state_dir.clone());
    if !config.daemon.journal_vacuum.is_empty() {
        set.insert(config.daemon.journal_dir.clone());
    }
    if let Some(db) = &config.tasks.db {
        if let Some(dir) = db.parent() {
            set.insert(dir.to_path_buf());
        }
    }
    for area in &config.tasks.task_areas {
        set.insert(area.clone());
    }
    if let Some(dir) = config.serve.unix.as_deref().and_then(Path::parent) {
        set.insert(dir.to_path_buf());
    }
    set.into_iter().filter(|p| p.is_absolute()).collect()
}

/// One path as a systemd unit word: `%` doubled (specifiers), `$` doubled where `dollar`
/// (ExecStart= expands variables), double-quoted when it holds spaces. Quotes, backslashes,
/// control characters and non-UTF-8 bytes are refused: no escaping of ours should decide what
/// a root service may write.
fn unit_word(what: &'static str, path: &Path, dollar: bool) -> Result<String, RenderError> {
    let refuse = |why| RenderError {
        what,
        path: shown(path).to_string(),
        why,
    };
    let text = path
        .to_str()
        .ok_or_else(|| refuse("is not UTF-8; a unit file cannot name it"))?;
    if text
        .chars()
        .any(|c| c.is_control() || matches!(c, '"' | '\'' | '\\'))
    {
        return Err(refuse(
            "holds a quote, backslash or control character; a unit file cannot name it safely",
        ));
    }
    let mut word = text.replace('%', "%%");
    if dollar {
        word = word.replace('$', "$$");
    }
    Ok(if word.contains(' ') {
        format!("\"{word}\"")
    } else {
        word
    })
}

/// The unit: the template with `ExecStart=` running `binary` on `config`, and one
/// `ReadWritePaths=-PATH` per writable dir (the `-`: a workspace that does not exist yet does not
/// stop the service from starting) where the template has its examples.
pub fn render_unit(template: &str, inputs: &ServiceInputs) -> Result<String, RenderError> {
    let exec = format!(
        "ExecStart={} run --config {}",
        unit_word("binary", &inputs.binary, true)?,
        unit_word("config", &inputs.config, true)?
    );
    let mut rw = Vec::new();
    for p in &inputs.writable {
        rw.push(format!(
            "ReadWritePaths=-{}",
            unit_word("writable path", p, false)?
        ));
    }
    let mut out = String::with_capacity(template.len() + 256);
    let mut rw_done = false;
    for line in template.lines() {
        if line.starts_with("ExecStart=") {
            out.push_str(&exec);
            out.push('\n');
        } else if line.starts_with("ReadWritePaths=") {
            if !rw_done {
                for l in &rw {
                    out.push_str(l);
                    out.push('\n');
                }
                rw_done = true;
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(out)
}

fn xml_text(what: &'static str, path: &Path) -> Result<String, RenderError> {
    let text = path.to_str().ok_or_else(|| RenderError {
        what,
        path: shown(path).to_string(),
        why: "is not UTF-8; a plist cannot name it",
    })?;
    if text.chars().any(char::is_control) {
        return Err(RenderError {
            what,
            path: shown(path).to_string(),
            why: "holds a control character; a plist cannot name it",
        });
    }
    Ok(text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;"))
}

/// The launchd plist: `guardian run --config CONFIG` as root, kept alive, at boot.
pub fn render_plist(inputs: &ServiceInputs) -> Result<String, RenderError> {
    let binary = xml_text("binary", &inputs.binary)?;
    let config = xml_text("config", &inputs.config)?;
    Ok(format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>Label</key>
	<string>{LAUNCHD_LABEL}</string>
	<key>ProgramArguments</key>
	<array>
		<string>{binary}</string>
		<string>run</string>
		<string>--config</string>
		<string>{config}</string>
	</array>
	<key>EnvironmentVariables</key>
	<dict>
		<key>GUARDIAN_LOG</key>
		<string>info</string>
	</dict>
	<key>RunAtLoad</key>
	<true/>
	<key>KeepAlive</key>
	<true/>
	<key>ProcessType</key>
	<string>Interactive</string>
	<key>StandardErrorPath</key>
	<string>/var/log/guardian/guardian.log</string>
</dict>
</plist>
"#
    ))
}

/// The commands that enable and start what was written at `path`.
pub fn enable_commands(kind: Kind, path: &Path) -> Vec<String> {
    match kind {
        Kind::Systemd => vec![
            "systemctl daemon-reload".into(),
            "systemctl enable --now guardian.service".into(),
        ],
        Kind::Launchd => vec![
            format!("launchctl bootstrap system {}", shown(path)),
            format!("launchctl enable system/{LAUNCHD_LABEL}"),
        ],
    }
}

/// Options of `install-service`.
pub struct InstallArgs {
    pub config: Option<PathBuf>,
    pub dry_run: bool,
    pub kind: Kind,
    pub output_dir: Option<PathBuf>,
    pub binary: Option<PathBuf>,
}

/// `guardian install-service`.
pub fn install_service(args: InstallArgs) -> anyhow::Result<ExitCode> {
    let config_path = args
        .config
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    let config_path = std::path::absolute(&config_path)
        .with_context(|| format!("config {}", shown(&config_path)))?;
    let config = super::load_config(Some(&config_path)).map_err(|e| {
        super::UsageError(format!(
            "{e}\n(the service reads {}; write one with `guardian config default > {}` and edit it)",
            shown(&config_path),
            shown(&config_path)
        ))
    })?;
    let binary = match args.binary {
        Some(b) => std::path::absolute(&b)?,
        None => std::env::current_exe().context("cannot tell where this binary is")?,
    };
    let inputs = ServiceInputs {
        binary,
        config: config_path,
        writable: writable_paths(&config),
    };
    let (text, name, default_dir) = match args.kind {
        Kind::Systemd => (
            render_unit(UNIT_TEMPLATE, &inputs),
            UNIT_NAME.to_string(),
            SYSTEMD_DIR,
        ),
        Kind::Launchd => (
            render_plist(&inputs),
            format!("{LAUNCHD_LABEL}.plist"),
            LAUNCHD_DIR,
        ),
    };
    let text = text.map_err(|e| super::UsageError(e.to_string()))?;
    let dir = args
        .output_dir
        .unwrap_or_else(|| PathBuf::from(default_dir));
    let path = dir.join(name);
    if args.dry_run {
        println!("# would write {} (dry run: nothing written)", shown(&path));
        print!("{text}");
    } else {
        write_service_file(&dir, &path, &text)?;
        println!("wrote {}", shown(&path));
    }
    println!("# not enabled, not started; to do so, run:");
    for cmd in enable_commands(args.kind, &path) {
        println!("{cmd}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `text` to `path` through a temp file in `dir` renamed over it; an error names the
/// path and what to do.
fn write_service_file(dir: &Path, path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let hint = "run as root, pick another --output-dir, or see it with --dry-run";
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("cannot write {}: {} ({hint})", shown(path), shown(dir)))?;
    if !meta.is_dir() {
        anyhow::bail!(
            "cannot write {}: {} is not a directory",
            shown(path),
            shown(dir)
        );
    }
    let mut tmp =
        tempfile_in(dir).with_context(|| format!("cannot write {} ({hint})", shown(path)))?;
    let result = (|| -> std::io::Result<()> {
        tmp.1.write_all(text.as_bytes())?;
        tmp.1.sync_all()?;
        std::fs::rename(&tmp.0, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp.0);
        return Err(anyhow::anyhow!(
            "cannot write {}: {e} ({hint})",
            shown(path)
        ));
    }
    Ok(())
}

/// A new file `.guardian-install-<random>` in `dir`, mode 0644, created `O_EXCL`.
fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = format!(
        ".guardian-install-{}",
        guardian::fsys::files::random_suffix()?
    );
    let path = dir.join(name);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&path)?;
    Ok((path, file))
}

/// `guardian generate-assets DIR`: `guardian.1` (and one page per subcommand), and completions
/// for bash (`guardian.bash`), zsh (`_guardian`) and fish (`guardian.fish`).
pub fn generate_assets(cmd: clap::Command, dir: &Path) -> anyhow::Result<ExitCode> {
    use clap_complete::Shell;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", shown(dir)))?;
    let cmd = cmd.name("guardian");
    clap_mangen::generate_to(cmd.clone(), dir)
        .with_context(|| format!("writing man pages into {}", shown(dir)))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = cmd.clone();
        clap_complete::generate_to(shell, &mut cmd, "guardian", dir)
            .with_context(|| format!("writing {shell} completions into {}", shown(dir)))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(writable: &[&str]) -> ServiceInputs {
        ServiceInputs {
            binary: "/opt/guardian/bin/guardian".into(),
            config: "/etc/guardian/guardian.toml".into(),
            writable: writable.iter().map(PathBuf::from).collect(),
        }
    }

    #[test]
    fn the_unit_names_each_writable_dir_once_and_the_binary() {
        let unit = render_unit(UNIT_TEMPLATE, &inputs(&["/srv/a", "/srv/b c", "/w/100%"])).unwrap();
        let rw: Vec<&str> = unit
            .lines()
            .filter(|l| l.starts_with("ReadWritePaths="))
            .collect();
        assert_eq!(
            rw,
            [
                "ReadWritePaths=-/srv/a",
                "ReadWritePaths=-\"/srv/b c\"",
                "ReadWritePaths=-/w/100%%"
            ]
        );
        assert!(unit.contains(
            "\nExecStart=/opt/guardian/bin/guardian run --config /etc/guardian/guardian.toml\n"
        ));
        assert!(
            !unit.contains("/home/worker/dispatch"),
            "template examples replaced"
        );
        assert!(unit.contains("Type=notify") && unit.contains("WatchdogSec="));
    }

    #[test]
    fn a_path_a_unit_cannot_name_safely_is_refused_with_its_name() {
        let e = render_unit(UNIT_TEMPLATE, &inputs(&["/srv/a\nExecStartPre=/bin/sh"])).unwrap_err();
        assert!(e.to_string().contains("writable path"), "{e}");
        let e = render_unit(UNIT_TEMPLATE, &inputs(&["/srv/\"x"])).unwrap_err();
        assert!(e.to_string().contains("quote"), "{e}");
    }

    #[test]
    fn the_plist_escapes_xml_and_bootstraps_into_system() {
        let mut i = inputs(&[]);
        i.config = "/etc/g&<x>.toml".into();
        let plist = render_plist(&i).unwrap();
        assert!(plist.contains("<string>/etc/g&amp;&lt;x&gt;.toml</string>"));
        assert!(plist.contains("<key>KeepAlive</key>"));
        let cmds = enable_commands(
            Kind::Launchd,
            Path::new("/Library/LaunchDaemons/guardian.plist"),
        );
        assert_eq!(
            cmds[0],
            "launchctl bootstrap system /Library/LaunchDaemons/guardian.plist"
        );
    }

    #[test]
    fn the_shipped_unit_never_hides_processes() {
        for line in UNIT_TEMPLATE.lines().filter(|l| !l.starts_with('#')) {
            assert!(
                !line.starts_with("ProtectProc=") && !line.starts_with("ProcSubset="),
                "{line}: hides the processes that protect work dirs"
            );
            assert!(!line.starts_with("PrivateTmp="), "{line}");
        }
    }
}
