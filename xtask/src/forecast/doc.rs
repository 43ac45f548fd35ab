//! `--write-doc`: the results section of docs/forecast.md and the forecast section of
//! docs/benchmarks.md, each between its own marker comments (everything outside them is kept),
//! with the marker writer and machine table of `cargo xtask bench`.

use super::eval::Summary;
use super::methods::Kind;
use crate::bench::report::{self, machine_table, Machine, RunInfo};
use crate::bench::{command_line, revision};
use anyhow::Result;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// docs/forecast.md: the results section.
pub const RESULTS: (&str, &str) = ("<!-- forecast:results -->", "<!-- /forecast:results -->");
/// docs/benchmarks.md: the key of the harness table's section.
pub const BENCH_KEY: &str = "forecast";

/// Writes the results section of docs/forecast.md.
pub fn write_results(path: &Path, results: &str) -> Result<()> {
    report::write_marked(path, RESULTS, results, "# Forecasting\n")
}

/// Writes the harness table's section of docs/benchmarks.md.
pub fn write_bench_section(path: &Path, section: &str) -> Result<()> {
    report::write_section(path, BENCH_KEY, section)
}

/// What the forecast section of docs/benchmarks.md needs to know about the run.
pub struct Run<'a> {
    /// The command line, as it can be re-run.
    pub command: &'a str,
    pub seed: u64,
    pub instances: u32,
    /// Placements per recorded family.
    pub recorded_instances: u32,
    pub traces: usize,
    pub lead_time_h: f64,
    pub elapsed_s: f64,
}

/// The forecast section of docs/benchmarks.md: Guardian against the node_exporter baseline
/// per family, with the goal of issue 4 checked.
pub fn bench_section(
    run: &Run,
    order: &[String],
    table: &BTreeMap<String, Vec<Summary>>,
) -> String {
    let of = |row: &[Summary], kind: Kind| {
        row[Kind::ALL.iter().position(|k| *k == kind).expect("kind")].clone()
    };
    let pct = |v: Option<f64>| v.map_or_else(|| "–".into(), |v| format!("{v:.1} %"));
    let mut s = String::new();
    let intro = format!(
        "Written by `cargo xtask forecast-eval --write-doc` (xtask/src/forecast/); \
         docs/forecast.md has the method, the trace families and the full table, with two more \
         baselines. {} traces: {} per synthetic family, 7 days each at one sample a minute \
         (fast-sawtooth: 4 h at one a second), and {} placements per replay of a recording of a \
         real tool (rec-*: an hour at 4 samples a second), each fed to every method sample by \
         sample up to its first crossing of `cleanup_free` (20 % of the size free); the traces \
         sampled faster than a minute have a lead time of 10 s, an ETA window of 2 min and a \
         false-alarm horizon of 4 min. node_exporter: predict_linear over the last 6 h, alarm when the line \
         24 h ahead is under the threshold and free space under 40 % of the size, `for: 1h`. \
         Guardian: `predict::Forecaster` with its defaults and `TriggerRule`: P90 time to the \
         threshold under the lead time ({:.1} h) and free space under the same 40 % floor. ETA \
         MAPE: mean absolute percentage error of the P50 time to the threshold (the line's, for \
         node_exporter) at every sample at most 12 h before a real crossing, each error capped \
         at 100 % (no ETA counts 100 %). False alarms: alarm episodes with no crossing within \
         the next 24 h (in parentheses, the instances with one). Missed: crossings with no \
         alarm raised at least the lead time before. P50 / P90 early: share of those samples \
         where the forecast is not later than the truth. Pure computation on all CPUs: {:.1} s \
         ({} build).",
        run.traces,
        run.instances,
        run.recorded_instances,
        run.lead_time_h,
        run.elapsed_s,
        if cfg!(debug_assertions) {
            "dev"
        } else {
            "release"
        }
    );
    let _ = writeln!(
        s,
        "## Forecast: Guardian's `predict` vs node_exporter's predict_linear rule\n\n{}\n",
        report::wrap(&intro, "", 100)
    );
    let recorded = order.iter().filter(|f| f.starts_with("rec-")).count();
    let traces = format!(
        "{} ({} synthetic families × {}, {} recorded × {}), seed {}",
        run.traces,
        order.len() - recorded,
        run.instances,
        recorded,
        run.recorded_instances,
        run.seed
    );
    let info = RunInfo {
        when: command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default(),
        revision: revision(&["guardian-user/src/predict", "xtask/src/forecast"]),
        command: run.command.to_string(),
    };
    s.push_str(&machine_table(
        &Machine::detect(),
        &[("Traces", traces)],
        &info,
    ));
    let _ = writeln!(
        s,
        "| Family (crossing/instances) | Method | ETA MAPE | False alarms | Missed | P50 early | P90 early |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|");
    let mut goals = Vec::new();
    for (family, row) in order.iter().filter_map(|f| table.get_key_value(f)) {
        let (ne, g) = (of(row, Kind::NodeExporter), of(row, Kind::Guardian));
        for (k, (name, x)) in [("node_exporter", &ne), ("Guardian", &g)]
            .iter()
            .enumerate()
        {
            let label = if k == 0 {
                format!("{family} ({}/{})", x.crossings, x.instances)
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "| {label} | {name} | {} | {} ({}) | {}/{} | {} | {} |",
                pct(x.mape()),
                x.false_alarms,
                x.falsely_alarmed,
                x.missed,
                x.crossings,
                pct(x.share(x.p50_early)),
                pct(x.share(x.p90_early))
            );
        }
        let lower = g.mape().unwrap_or(100.0) < ne.mape().unwrap_or(100.0);
        let fewer =
            g.false_alarms < ne.false_alarms || (g.false_alarms == 0 && ne.false_alarms == 0);
        goals.push((
            format!("{family}: lower ETA MAPE"),
            format!("{} vs {}", pct(g.mape()), pct(ne.mape())),
            lower,
        ));
        goals.push((
            format!("{family}: fewer false alarms"),
            format!("{} vs {}", g.false_alarms, ne.false_alarms),
            fewer,
        ));
    }
    let _ = writeln!(
        s,
        "\n| Goal (issue 4): Guardian vs node_exporter | Measured | Result |\n|---|---:|---|"
    );
    for (goal, measured, ok) in goals {
        let _ = writeln!(
            s,
            "| {goal} | {measured} | {} |",
            if ok { "pass" } else { "MISS" }
        );
    }
    s
}
