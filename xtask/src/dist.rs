//! `cargo xtask dist`: the release binary (probe embedded) packed as a `.deb` and an `.rpm`
//! from one file list: the binary, the systemd unit (installed, never enabled: no maintainer
//! script at all), the default config as a conffile at `/etc/guardian/guardian.toml`, docs, man
//! pages (`clap_mangen`) and bash/zsh/fish completions (`clap_complete`), both written by the
//! binary's hidden `generate-assets`. `cargo xtask unit-check` runs `systemd-analyze verify` and
//! `security --offline=yes` on the shipped unit and keeps the exposure figure in
//! docs/service.md.
//!
//! The .deb is built with `dpkg-deb --build` from a staged tree rather than cargo-deb: cargo-deb
//! is a few hundred crates to compile on every fresh CI machine, dpkg-deb is already there, and
//! the file list stays here, next to the .rpm's. The .rpm is written by the `rpm` crate (what
//! cargo-generate-rpm uses), so no rpmbuild is needed on a Debian host.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

#[derive(clap::Args)]
pub struct DistArgs {
    /// Where the packages go.
    #[arg(long, default_value = "target/dist")]
    out: PathBuf,
    /// Package this binary instead of building the release one (CI packs its debug build to
    /// check the file list fast); it need not embed the probe.
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Only the .deb.
    #[arg(long)]
    deb_only: bool,
}

/// What a file is, for the package managers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Binary,
    /// Kept across upgrades when the administrator changed it.
    Conffile,
    Doc,
    Plain,
}

/// One file of the packages: where it comes from and where it goes on Debian and RPM systems.
struct Entry {
    src: PathBuf,
    deb: String,
    rpm: String,
    role: Role,
}

impl Entry {
    fn new(src: PathBuf, dest: &str, role: Role) -> Entry {
        Entry {
            src,
            deb: dest.to_string(),
            rpm: dest.to_string(),
            role,
        }
    }

    fn mode(&self) -> u32 {
        if self.role == Role::Binary {
            0o755
        } else {
            0o644
        }
    }
}

pub fn run(workspace: &Path, args: &DistArgs) -> anyhow::Result<ExitCode> {
    let binary = match &args.binary {
        Some(b) => std::path::absolute(b)?,
        None => {
            // Builds the probe, then guardian-user in release mode, and fails unless the
            // probe is embedded.
            crate::build_ebpf::run(workspace, true)?;
            workspace.join("target/release/guardian")
        }
    };
    let version_line = output(Command::new(&binary).arg("--version"))?;
    println!("packing {}: {}", binary.display(), version_line.trim());
    let version = env!("CARGO_PKG_VERSION");
    let out = workspace.join(&args.out);
    let stage = out.join("stage");
    if stage.exists() {
        std::fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    }
    let assets = stage.join("assets");
    std::fs::create_dir_all(&assets)?;
    run_ok(Command::new(&binary).arg("generate-assets").arg(&assets))?;
    let config = assets.join("guardian.toml");
    std::fs::write(
        &config,
        output(Command::new(&binary).args(["config", "default"]))?,
    )?;
    let entries = file_list(workspace, &binary, &assets)?;
    let deb = build_deb(&stage, &out, &entries, version)?;
    println!("wrote {}", deb.display());
    if !args.deb_only {
        let rpm = build_rpm(&out, &entries, version)?;
        println!("wrote {}", rpm.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Everything the packages hold. Man pages are gzipped here (both distributions expect that).
fn file_list(workspace: &Path, binary: &Path, assets: &Path) -> anyhow::Result<Vec<Entry>> {
    let mut list = vec![
        Entry::new(binary.to_path_buf(), "/usr/bin/guardian", Role::Binary),
        Entry::new(
            workspace.join("deploy/systemd/guardian.service"),
            "/usr/lib/systemd/system/guardian.service",
            Role::Plain,
        ),
        Entry::new(
            assets.join("guardian.toml"),
            "/etc/guardian/guardian.toml",
            Role::Conffile,
        ),
        Entry::new(
            assets.join("guardian.bash"),
            "/usr/share/bash-completion/completions/guardian",
            Role::Plain,
        ),
        Entry {
            src: assets.join("_guardian"),
            deb: "/usr/share/zsh/vendor-completions/_guardian".into(),
            rpm: "/usr/share/zsh/site-functions/_guardian".into(),
            role: Role::Plain,
        },
        Entry::new(
            assets.join("guardian.fish"),
            "/usr/share/fish/vendor_completions.d/guardian.fish",
            Role::Plain,
        ),
    ];
    for doc in [
        "README.md",
        "ARCHITECTURE.md",
        "docs/service.md",
        "docs/config.md",
        "docs/serve.md",
        "docs/tasks.md",
        "docs/retention.md",
        "docs/artifacts.md",
        "docs/sources.md",
    ] {
        let src = workspace.join(doc);
        let name = Path::new(doc)
            .file_name()
            .context("doc file name")?
            .to_string_lossy()
            .into_owned();
        list.push(Entry::new(
            src,
            &format!("/usr/share/doc/guardian/{name}"),
            Role::Doc,
        ));
    }
    let mut pages: Vec<PathBuf> = std::fs::read_dir(assets)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "1"))
        .collect();
    pages.sort();
    if pages.is_empty() {
        bail!(
            "generate-assets wrote no man page into {}",
            assets.display()
        );
    }
    for page in pages {
        run_ok(Command::new("gzip").args(["-9nf"]).arg(&page))?;
        let name = page
            .file_name()
            .context("man page name")?
            .to_string_lossy()
            .into_owned();
        list.push(Entry::new(
            page.with_file_name(format!("{name}.gz")),
            &format!("/usr/share/man/man1/{name}.gz"),
            Role::Doc,
        ));
    }
    for e in &list {
        if !e.src.is_file() {
            bail!("{} (for {}) is missing", e.src.display(), e.deb);
        }
    }
    Ok(list)
}

/// The Debian architecture of this machine.
fn deb_arch() -> anyhow::Result<String> {
    Ok(output(Command::new("dpkg").arg("--print-architecture"))?
        .trim()
        .to_string())
}

/// Stages the tree (files, DEBIAN/control, DEBIAN/conffiles; no maintainer scripts, so nothing
/// is enabled or started) and packs it with `dpkg-deb --root-owner-group`.
fn build_deb(
    stage: &Path,
    out: &Path,
    entries: &[Entry],
    version: &str,
) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let root = stage.join("deb");
    let mut installed_bytes = 0u64;
    let mut conffiles = String::new();
    for e in entries {
        let dest = root.join(e.deb.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().context("dest dir")?)?;
        std::fs::copy(&e.src, &dest)
            .with_context(|| format!("copying {} to {}", e.src.display(), dest.display()))?;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(e.mode()))?;
        installed_bytes += std::fs::metadata(&dest)?.len();
        if e.role == Role::Conffile {
            conffiles.push_str(&e.deb);
            conffiles.push('\n');
        }
    }
    let debian = root.join("DEBIAN");
    std::fs::create_dir_all(&debian)?;
    let arch = deb_arch()?;
    std::fs::write(
        debian.join("control"),
        format!(
            "Package: guardian\n\
             Version: {version}\n\
             Architecture: {arch}\n\
             Maintainer: Guardian maintainers <guardian@localhost>\n\
             Section: admin\n\
             Priority: optional\n\
             Installed-Size: {}\n\
             Depends: libc6\n\
             Description: keeps build and agent nodes from running out of disk\n \
             A daemon that watches free space, forecasts growth and deletes regenerable\n \
             artifacts and idle project dirs by policy, with a write-ahead audit log.\n \
             The systemd unit is installed but not enabled: edit\n \
             /etc/guardian/guardian.toml, then `guardian install-service` or\n \
             `systemctl enable --now guardian`.\n",
            installed_bytes.div_ceil(1024)
        ),
    )?;
    std::fs::write(debian.join("conffiles"), conffiles)?;
    let deb = out.join(format!("guardian_{version}_{arch}.deb"));
    run_ok(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zgzip", "--build"])
            .arg(&root)
            .arg(&deb),
    )?;
    Ok(deb)
}

/// The same files as an .rpm (gzip payload: every rpm since RHEL 5 reads it); the config is
/// `%config(noreplace)`, no scriptlets (nothing enabled).
fn build_rpm(out: &Path, entries: &[Entry], version: &str) -> anyhow::Result<PathBuf> {
    let arch = std::env::consts::ARCH;
    let mut builder = rpm::PackageBuilder::new(
        "guardian",
        version,
        "MIT OR Apache-2.0",
        arch,
        "Keeps build and agent nodes from running out of disk",
    )
    .using_config(rpm::BuildConfig::v4().compression(rpm::CompressionType::Gzip))
    .description(
        "A daemon that watches free space, forecasts growth and deletes regenerable artifacts \
         and idle project dirs by policy, with a write-ahead audit log. The systemd unit is \
         installed but not enabled.",
    );
    for e in entries {
        let mut options = rpm::FileOptions::new(e.rpm.clone()).mode(rpm::FileMode::regular(
            u16::try_from(e.mode()).context("file mode")?,
        ));
        options = match e.role {
            Role::Conffile => options.is_config_noreplace(),
            Role::Doc => options.is_doc(),
            Role::Binary | Role::Plain => options,
        };
        builder = builder
            .with_file(&e.src, options)
            .with_context(|| format!("adding {} to the rpm", e.src.display()))?;
    }
    let package = builder.build().context("building the rpm")?;
    let path = out.join(format!("guardian-{version}-1.{arch}.rpm"));
    package
        .write_file(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

#[derive(clap::Args)]
pub struct UnitCheckArgs {
    /// The binary the checked unit runs (systemd-analyze verify needs ExecStart= to exist).
    #[arg(long, default_value = "target/debug/guardian")]
    binary: PathBuf,
    /// Write the exposure figure into docs/service.md (otherwise a stale figure fails).
    #[arg(long)]
    write_doc: bool,
}

const DOC_BEGIN: &str = "<!-- unit-check:begin (cargo xtask unit-check --write-doc) -->";
const DOC_END: &str = "<!-- unit-check:end -->";

/// `systemd-analyze verify` and `security --offline=yes` on deploy/systemd/guardian.service (a
/// copy whose ExecStart= names `binary`).
pub fn unit_check(workspace: &Path, args: &UnitCheckArgs) -> anyhow::Result<ExitCode> {
    let binary = std::path::absolute(workspace.join(&args.binary))?;
    if !binary.is_file() {
        bail!(
            "{} does not exist: build it first (cargo build -p guardian-user)",
            binary.display()
        );
    }
    let template = std::fs::read_to_string(workspace.join("deploy/systemd/guardian.service"))?;
    let unit = template.replace(
        "ExecStart=/usr/bin/guardian ",
        &format!("ExecStart={} ", binary.display()),
    );
    if unit == template {
        bail!("deploy/systemd/guardian.service has no `ExecStart=/usr/bin/guardian …` line");
    }
    let dir = workspace.join("target/unit-check");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("guardian.service");
    std::fs::write(&path, unit)?;
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .context("running systemd-analyze (package systemd)")?;
    let complaints = String::from_utf8_lossy(&verify.stderr);
    if !verify.status.success() || !complaints.trim().is_empty() {
        bail!("systemd-analyze verify {}: {complaints}", path.display());
    }
    println!("systemd-analyze verify: ok");
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&path)
        .output()
        .context("running systemd-analyze security")?;
    let text = String::from_utf8_lossy(&security.stdout);
    let exposure = parse_exposure(&text).with_context(|| {
        format!(
            "no overall exposure in systemd-analyze security's output: {text}{}",
            String::from_utf8_lossy(&security.stderr)
        )
    })?;
    println!("systemd-analyze security --offline=yes: exposure {exposure}");
    let systemd = output(Command::new("systemd-analyze").arg("--version"))?;
    let systemd = systemd.lines().next().unwrap_or("").trim().to_string();
    let block = format!(
        "{DOC_BEGIN}\n`systemd-analyze security --offline=yes` of the shipped unit: overall \
         exposure **{exposure}** ({systemd}).\n{DOC_END}"
    );
    let doc_path = workspace.join("docs/service.md");
    let doc = std::fs::read_to_string(&doc_path)?;
    let (start, end) = match (doc.find(DOC_BEGIN), doc.find(DOC_END)) {
        (Some(s), Some(e)) if s < e => (s, e + DOC_END.len()),
        _ => bail!("docs/service.md has no unit-check block"),
    };
    if doc[start..end] == block {
        println!("docs/service.md: up to date");
    } else if args.write_doc {
        let updated = format!("{}{block}{}", &doc[..start], &doc[end..]);
        std::fs::write(&doc_path, updated)?;
        println!("docs/service.md: exposure written");
    } else {
        bail!(
            "docs/service.md states another exposure than the unit has ({exposure}): run \
             `cargo xtask unit-check --write-doc`"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `3.8 OK` from "→ Overall exposure level for guardian.service: 3.8 OK 🙂".
fn parse_exposure(text: &str) -> Option<String> {
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))?;
    let after = line.rsplit_once(": ")?.1;
    let words: Vec<&str> = after.split_whitespace().take(2).collect();
    (words.len() == 2 && words[0].parse::<f64>().is_ok()).then(|| words.join(" "))
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run_ok(cmd: &mut Command) -> anyhow::Result<()> {
    output(cmd).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposure_is_read_from_the_summary_line() {
        let text = "✗ PrivateNetwork= ...  0.5\n\n→ Overall exposure level for guardian.service: 3.8 OK 🙂\n";
        assert_eq!(parse_exposure(text).as_deref(), Some("3.8 OK"));
        assert_eq!(parse_exposure("nothing"), None);
    }
}
