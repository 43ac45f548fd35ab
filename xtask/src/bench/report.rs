//! Results: timing statistics, the machine description, the console summary and the sections
//! of docs/benchmarks.md.

use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// Wall times of the measured runs of one tool.
#[derive(Clone, Debug, Default)]
pub struct Timings {
    pub runs: Vec<Duration>,
}

impl Timings {
    pub fn best(&self) -> Duration {
        self.runs.iter().copied().min().unwrap_or_default()
    }

    pub fn median(&self) -> Duration {
        let mut sorted = self.runs.clone();
        sorted.sort();
        match sorted.len() {
            0 => Duration::ZERO,
            n if n % 2 == 1 => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
        }
    }

    pub fn list(&self) -> String {
        self.runs
            .iter()
            .map(|d| format!("{:.3}", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub struct Machine {
    pub nproc: usize,
    pub kernel: String,
    pub cpu: String,
    pub memory: String,
}

impl Machine {
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<u64>().ok())
            .map(|kib| format!("{:.1} GiB", kib as f64 / (1 << 20) as f64))
            .unwrap_or_else(|| "unknown".into());
        Machine {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: rustix::system::uname()
                .release()
                .to_string_lossy()
                .into_owned(),
            cpu,
            memory,
        }
    }
}

/// One measured tool.
pub struct Tool {
    /// Short name: `du`, `rm`, `guardian`.
    pub name: &'static str,
    /// What was run, `DIR` standing for the tree.
    pub command: String,
    pub timings: Timings,
}

/// One comparison: guardian against a reference tool.
pub struct Comparison {
    /// Marker name in docs/benchmarks.md (`scan`, `delete`).
    pub key: &'static str,
    pub title: String,
    /// What was measured and how, one paragraph.
    pub method: String,
    pub tree: String,
    pub filesystem: String,
    pub reference: Tool,
    pub guardian: Tool,
    /// Largest guardian/reference ratio (of medians) that meets the goal.
    pub goal: f64,
    /// Extra lines (checks) for the section.
    pub notes: Vec<String>,
    /// Why the results cannot count (the tools disagreed), if they cannot.
    pub invalid: Option<String>,
}

impl Comparison {
    pub fn ratio_median(&self) -> f64 {
        ratio(
            self.guardian.timings.median(),
            self.reference.timings.median(),
        )
    }

    pub fn ratio_best(&self) -> f64 {
        ratio(self.guardian.timings.best(), self.reference.timings.best())
    }

    pub fn passed(&self) -> bool {
        self.invalid.is_none() && self.ratio_median() <= self.goal
    }

    pub fn verdict(&self) -> &'static str {
        if self.invalid.is_some() {
            "INVALID (results differ)"
        } else if self.passed() {
            "pass"
        } else {
            "MISS"
        }
    }

    /// The console summary.
    pub fn print(&self) {
        println!("== {} ==", self.title);
        println!("tree: {}", self.tree);
        for tool in [&self.reference, &self.guardian] {
            let t = &tool.timings;
            println!(
                "  {:<58} best {:>7.3} s  median {:>7.3} s  ({})",
                tool.command,
                t.best().as_secs_f64(),
                t.median().as_secs_f64(),
                t.list()
            );
        }
        println!(
            "  ratio guardian/{}: {:.2}x median, {:.2}x best; goal <= {:.2}x: {}",
            self.reference.name,
            self.ratio_median(),
            self.ratio_best(),
            self.goal,
            self.verdict()
        );
        for n in self.notes.iter().chain(&self.invalid) {
            println!("  {n}");
        }
    }

    /// The markdown between this comparison's markers.
    pub fn markdown(&self, machine: &Machine, run: &RunInfo) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "## {}\n", self.title);
        let _ = writeln!(s, "{}\n", wrap(&self.method, "", 100));
        let _ = writeln!(s, "| Machine | |");
        let _ = writeln!(s, "|---|---|");
        let _ = writeln!(s, "| CPUs (`nproc`) | {} |", machine.nproc);
        let _ = writeln!(s, "| CPU model | {} |", machine.cpu);
        let _ = writeln!(s, "| Memory | {} |", machine.memory);
        let _ = writeln!(s, "| Kernel (`uname -r`) | {} |", machine.kernel);
        let _ = writeln!(s, "| Filesystem | {} |", self.filesystem);
        let _ = writeln!(s, "| Tree | {} |", self.tree);
        let _ = writeln!(s, "| Measured | {} |", run.when);
        let _ = writeln!(s, "| Guardian | {} |", run.revision);
        let _ = writeln!(s, "| Command | `{}` |\n", run.command);
        let _ = writeln!(s, "| Tool | Command | Best | Median | Runs (s) |");
        let _ = writeln!(s, "|---|---|---:|---:|---|");
        for tool in [&self.reference, &self.guardian] {
            let t = &tool.timings;
            let _ = writeln!(
                s,
                "| {} | `{}` | {:.3} s | {:.3} s | {} |",
                tool.name,
                tool.command,
                t.best().as_secs_f64(),
                t.median().as_secs_f64(),
                t.list()
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "| Ratio guardian/{} (median) | Ratio (best) | Goal | Result |",
            self.reference.name
        );
        let _ = writeln!(s, "|---:|---:|---:|---|");
        let _ = writeln!(
            s,
            "| {:.2}× | {:.2}× | ≤ {:.2}× | {} |",
            self.ratio_median(),
            self.ratio_best(),
            self.goal,
            self.verdict()
        );
        if !self.notes.is_empty() || self.invalid.is_some() {
            let _ = writeln!(s);
            for n in self.notes.iter().chain(&self.invalid) {
                let _ = writeln!(s, "- {}", wrap(n, "  ", 100));
            }
        }
        s
    }
}

/// `text` broken at spaces into lines of at most `width` characters (longer words stay whole),
/// every line after the first starting with `indent`.
fn wrap(text: &str, indent: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line_len = 0;
    for word in text.split_whitespace() {
        let len = word.chars().count();
        if line_len > 0 && line_len + 1 + len > width {
            out.push('\n');
            out.push_str(indent);
            line_len = indent.len();
        } else if line_len > 0 {
            out.push(' ');
            line_len += 1;
        }
        out.push_str(word);
        line_len += len;
    }
    out
}

fn ratio(a: Duration, b: Duration) -> f64 {
    if b.is_zero() {
        f64::INFINITY
    } else {
        a.as_secs_f64() / b.as_secs_f64()
    }
}

/// Facts about this run shared by every section.
pub struct RunInfo {
    pub when: String,
    pub revision: String,
    pub command: String,
}

const DOC_HEADER: &str = "# Benchmarks

Guardian's performance goals, measured on a real machine. The sections between
`<!-- bench:NAME -->` markers are written by `cargo xtask bench --write-doc` (as root; see
`xtask/src/bench/`); rerun it to refresh them. Everything outside the markers is kept.

Method, for every section: warm page, dentry and inode caches (nothing is dropped), release
build, the real `guardian` binary or the release-built library, each tool run the same number
of times on identical trees, runs of the two tools interleaved. The goal is checked on the ratio
of the medians.
";

/// Replaces (or appends) the marked section `key` of the markdown file at `path` with `body`.
pub fn write_section(path: &Path, key: &str, body: &str) -> Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => DOC_HEADER.to_string(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let new = replace_section(&old, key, body);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, new).with_context(|| format!("cannot write {}", path.display()))
}

/// `text` with the block between the markers of `key` replaced by `body` (appended at the end,
/// with its markers, when the markers are missing).
fn replace_section(text: &str, key: &str, body: &str) -> String {
    let open = format!("<!-- bench:{key} -->");
    let close = format!("<!-- /bench:{key} -->");
    let block = format!("{open}\n{}\n{close}", body.trim_end());
    match text.find(&open) {
        Some(start) => match text[start..].find(&close) {
            Some(len) => format!(
                "{}{}{}",
                &text[..start],
                block,
                &text[start + len + close.len()..]
            ),
            None => format!("{}{}\n", &text[..start], block),
        },
        None => format!("{}\n\n{block}\n", text.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_replaced_in_place_and_the_rest_is_kept() {
        let doc = "# B\n\nintro\n\n<!-- bench:scan -->\nold scan\n<!-- /bench:scan -->\n\n\
                   ## Probe\n\nhand-written\n";
        let new = replace_section(doc, "scan", "new scan\n");
        assert_eq!(
            new,
            "# B\n\nintro\n\n<!-- bench:scan -->\nnew scan\n<!-- /bench:scan -->\n\n\
             ## Probe\n\nhand-written\n"
        );
        let added = replace_section(&new, "delete", "rm");
        assert!(added.starts_with(&new.trim_end().to_string()));
        assert!(added.ends_with("\n\n<!-- bench:delete -->\nrm\n<!-- /bench:delete -->\n"));
        assert_eq!(replace_section(&added, "delete", "rm"), added);
    }

    #[test]
    fn wrap_breaks_at_spaces_and_indents() {
        assert_eq!(wrap("aa bb cc dd", "  ", 5), "aa bb\n  cc\n  dd");
        assert_eq!(wrap("a verylongword b", "", 4), "a\nverylongword\nb");
    }

    #[test]
    fn median_and_best() {
        let t = Timings {
            runs: [3, 1, 2, 10].map(Duration::from_secs).to_vec(),
        };
        assert_eq!(t.best(), Duration::from_secs(1));
        assert_eq!(t.median(), Duration::from_millis(2_500));
    }
}
