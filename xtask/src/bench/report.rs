//! Results: timing statistics, the machine description, the console summary and the sections
//! of docs/benchmarks.md.

use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

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
        s += &machine_table(
            machine,
            &[
                ("Filesystem", self.filesystem.clone()),
                ("Tree", self.tree.clone()),
            ],
            run,
        );
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

/// The table every section starts with: the machine, the section's own `rows` (filesystem,
/// workload), then when, which revision and with which command it was measured. Ends with a
/// blank line.
pub fn machine_table(machine: &Machine, rows: &[(&str, String)], run: &RunInfo) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "| Machine | |");
    let _ = writeln!(s, "|---|---|");
    let _ = writeln!(s, "| CPUs (`nproc`) | {} |", machine.nproc);
    let _ = writeln!(s, "| CPU model | {} |", machine.cpu);
    let _ = writeln!(s, "| Memory | {} |", machine.memory);
    let _ = writeln!(s, "| Kernel (`uname -r`) | {} |", machine.kernel);
    for (name, value) in rows {
        let _ = writeln!(s, "| {name} | {value} |");
    }
    let _ = writeln!(s, "| Measured | {} |", run.when);
    let _ = writeln!(s, "| Guardian | {} |", run.revision);
    let _ = writeln!(s, "| Command | `{}` |\n", run.command);
    s
}

/// Nearest-rank percentile `p` (0–100] of `values` (unsorted): the smallest value at least
/// `p` % of the values are not above. With 20 values, p99 is the maximum.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Lowest and highest of `values` (`(+inf, -inf)` when empty).
pub fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// A distribution-free 95% confidence interval for the median of `values` (unsorted): the
/// order statistics `k` and `n + 1 - k` (1-based), with `k` the largest rank for which
/// `P(Binomial(n, ½) < k) ≤ 2.5%`. With 31 values: the 10th and 22nd smallest; with 15, the 4th
/// and 12th. `None` below 6 values.
pub fn median_ci95(values: &[f64]) -> Option<(f64, f64)> {
    let n = values.len();
    let (mut k, mut below, mut p) = (0, 0.0, 0.5f64.powi(n as i32));
    for j in 0..n {
        if below + p > 0.025 {
            break;
        }
        below += p;
        k = j + 1;
        p *= (n - j) as f64 / (j + 1) as f64;
    }
    if k == 0 {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    Some((sorted[k - 1], sorted[n - k]))
}

/// Median of `values` (unsorted; the mean of the two middle ones for an even count).
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// `text` broken at spaces into lines of at most `width` characters (longer words stay whole),
/// every line after the first starting with `indent`.
pub fn wrap(text: &str, indent: &str, width: usize) -> String {
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

/// CPU time of the whole machine and of this process with its waited-for children, to tell
/// how much else ran while a section was measured.
pub struct CpuUse {
    at: Instant,
    /// user + nice + system + irq + softirq of all CPUs, in ticks.
    busy: u64,
    steal: u64,
    /// This process and the children it has waited for (dd, the daemons), in ticks.
    own: u64,
}

impl CpuUse {
    pub fn now() -> CpuUse {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let cpu: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        let field = |i: usize| cpu.get(i).copied().unwrap_or(0);
        let own = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|t| {
                let rest = t.get(t.rfind(')')? + 1..)?.to_string();
                let f: Vec<u64> = rest
                    .split_whitespace()
                    .map(|v| v.parse().unwrap_or(0))
                    .collect();
                // Fields 14–17 (utime, stime, cutime, cstime); `rest` starts at field 3.
                Some(f.get(11..15)?.iter().sum())
            })
            .unwrap_or(0);
        CpuUse {
            at: Instant::now(),
            busy: field(0) + field(1) + field(2) + field(5) + field(6),
            steal: field(7),
            own,
        }
    }

    /// CPU seconds the rest of the machine (processes other than this one and the children it
    /// has waited for, and kernel threads) used since `self`, and the seconds elapsed.
    pub fn others_since(&self) -> (f64, f64) {
        let now = CpuUse::now();
        let hz = rustix::param::clock_ticks_per_second() as f64;
        let others =
            now.busy.saturating_sub(self.busy) as f64 - now.own.saturating_sub(self.own) as f64;
        (others / hz, self.at.elapsed().as_secs_f64())
    }

    /// "0.01 CPUs …; steal 0.0 %": [`Self::others_since`] as a sentence.
    pub fn describe_since(&self) -> String {
        let (others, secs) = self.others_since();
        let now = CpuUse::now();
        let hz = rustix::param::clock_ticks_per_second() as f64;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        format!(
            "{:.2} CPUs on average over {:.0} s (other processes, and kernel threads such as \
             those freeing unmounted tmpfs pages and unloaded BPF maps); steal {:.1} %",
            (others / secs.max(1e-3)).max(0.0),
            secs,
            now.steal.saturating_sub(self.steal) as f64 / hz / secs.max(1e-3) / cpus * 100.0
        )
    }
}

/// Waits (up to `max`) until the machine is idle (under 0.05 CPUs used by anything but this
/// process and its waited-for children): other sessions share the machine, and the kernel
/// tears down a stopped daemon's marks, watches and BPF maps in worker threads.
pub fn wait_quiet(max: Duration) {
    let deadline = Instant::now() + max;
    loop {
        let before = CpuUse::now();
        std::thread::sleep(Duration::from_millis(100));
        let (others, secs) = before.others_since();
        if others / secs < 0.05 || Instant::now() > deadline {
            return;
        }
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

Method, for the scan and delete sections: warm page, dentry and inode caches (nothing is
dropped), release build, the real `guardian` binary or the release-built library, each tool run
the same number of times on identical trees, runs of the two tools interleaved. The goal is
checked on the ratio of the medians. The other sections describe their own method.
";

/// Replaces (or appends) the marked section `key` of docs/benchmarks.md-like `path` with `body`.
pub fn write_section(path: &Path, key: &str, body: &str) -> Result<()> {
    let (open, close) = section_markers(key);
    write_marked(path, (&open, &close), body, DOC_HEADER)
}

/// The marker comments around section `key`.
pub fn section_markers(key: &str) -> (String, String) {
    (
        format!("<!-- bench:{key} -->"),
        format!("<!-- /bench:{key} -->"),
    )
}

/// Replaces the block between `markers` in the markdown file at `path` with `body` (appends it
/// when the markers are missing; a missing file starts as `header`). Text outside is kept.
pub fn write_marked(path: &Path, markers: (&str, &str), body: &str, header: &str) -> Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => header.to_string(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let new = replace_marked(&old, markers, body);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, new).with_context(|| format!("cannot write {}", path.display()))
}

/// `text` with the block between `open` and `close` replaced by `body` (appended at the end,
/// with its markers, when the markers are missing).
fn replace_marked(text: &str, (open, close): (&str, &str), body: &str) -> String {
    let block = format!("{open}\n{}\n{close}", body.trim_end());
    match text.find(open) {
        Some(start) => match text[start..].find(close) {
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
    fn median_interval_takes_the_binomial_order_statistics() {
        let ascending: Vec<f64> = (1..=31).map(f64::from).collect();
        let mut shuffled = ascending.clone();
        shuffled.reverse();
        shuffled.swap(3, 20);
        assert_eq!(median_ci95(&shuffled), Some((10.0, 22.0)));
        assert_eq!(median_ci95(&ascending[..15]), Some((4.0, 12.0)));
        assert_eq!(median_ci95(&ascending[..8]), Some((1.0, 8.0)));
        assert_eq!(median_ci95(&ascending[..6]), Some((1.0, 6.0)));
        assert_eq!(median_ci95(&ascending[..5]), None);
    }

    #[test]
    fn sections_are_replaced_in_place_and_the_rest_is_kept() {
        let doc = "# B\n\nintro\n\n<!-- bench:scan -->\nold scan\n<!-- /bench:scan -->\n\n\
                   ## Probe\n\nhand-written\n";
        let section = |text: &str, key: &str, body: &str| {
            let (open, close) = section_markers(key);
            replace_marked(text, (&open, &close), body)
        };
        let new = section(doc, "scan", "new scan\n");
        assert_eq!(
            new,
            "# B\n\nintro\n\n<!-- bench:scan -->\nnew scan\n<!-- /bench:scan -->\n\n\
             ## Probe\n\nhand-written\n"
        );
        let added = section(&new, "delete", "rm");
        assert!(added.starts_with(&new.trim_end().to_string()));
        assert!(added.ends_with("\n\n<!-- bench:delete -->\nrm\n<!-- /bench:delete -->\n"));
        assert_eq!(section(&added, "delete", "rm"), added);
    }

    #[test]
    fn wrap_breaks_at_spaces_and_indents() {
        assert_eq!(wrap("aa bb cc dd", "  ", 5), "aa bb\n  cc\n  dd");
        assert_eq!(wrap("a verylongword b", "", 4), "a\nverylongword\nb");
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<f64> = (1..=20).rev().map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 10.0);
        assert_eq!(percentile(&v, 90.0), 18.0);
        assert_eq!(percentile(&v, 99.0), 20.0);
        assert_eq!(percentile(&v, 100.0), 20.0);
        assert_eq!(percentile(&[3.0], 50.0), 3.0);
        assert!(percentile(&[], 50.0).is_nan());
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[5.0, 1.0, 3.0]), 3.0);
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
