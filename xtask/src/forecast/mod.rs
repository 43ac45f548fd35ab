//! `cargo xtask forecast-eval`: Guardian's forecaster (`guardian::predict`) against
//! predict_linear-style baselines on deterministic traces: synthetic families (steady,
//! accelerating, bursty, cron fill-and-clean sawtooth, log rotation, idle weekend then a burst,
//! fast sawtooth) and replays of recordings of real tools (xtask/traces/, `forecast-record`).
//! Reports, per family and method, the ETA error (MAPE) before real crossings, false alarms
//! (and per hour), missed crossings and the warning time; `--write-doc` puts the tables into
//! docs/forecast.md (between the `<!-- forecast:results -->` markers) and Guardian against the
//! node_exporter baseline into docs/benchmarks.md (between `<!-- bench:forecast -->` and
//! `<!-- /bench:forecast -->`). Pure computation.

mod doc;
mod eval;
mod methods;
pub mod record;
mod recorded;
mod results;
mod rng;
mod traces;

use anyhow::{bail, Context, Result};
use eval::{Summary, ETA_WINDOW, FALSE_ALARM_HORIZON};
use methods::{Kind, Setup};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;
use traces::{Family, Trace, HOUR, THRESHOLD};

/// Defaults of `--instances`, `--seed` and `--lead-time`.
const INSTANCES: u32 = 16;
const SEED: u64 = 1;
const LEAD_TIME: f64 = 3600.0;

#[derive(clap::Args, Debug)]
pub struct ForecastArgs {
    /// Write the results into docs/forecast.md and the harness table into docs/benchmarks.md.
    #[arg(long)]
    write_doc: bool,
    /// Instances generated per family (3 of every 8 do not cross).
    #[arg(long, default_value_t = INSTANCES)]
    instances: u32,
    /// Seed of the generators.
    #[arg(long, default_value_t = SEED)]
    seed: u64,
    /// Only these families (names, or `synthetic` / `recorded` for each group), e.g.
    /// `--families recorded,fast-sawtooth`.
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    families: Vec<String>,
    /// Lead time Guardian needs before the threshold, seconds.
    #[arg(long, default_value_t = LEAD_TIME)]
    lead_time: f64,
    /// Write the generated traces as JSON lines into this directory.
    #[arg(long, value_name = "DIR")]
    dump: Option<PathBuf>,
    /// Evaluate these trace files (JSON lines) instead of generating traces.
    #[arg(long, value_name = "FILE")]
    trace: Vec<PathBuf>,
    /// Print one line per trace and method.
    #[arg(long)]
    verbose: bool,
    /// Print the timeline of one trace (every sample where an alarm changes, and every
    /// `--every` samples) instead of the table.
    #[arg(long, value_name = "TRACE")]
    inspect: Option<String>,
    /// Sampling of `--inspect`.
    #[arg(long, default_value_t = 60)]
    every: usize,
    /// Override a `guardian::predict::Params` field for Guardian's forecaster, e.g.
    /// `--param horizon_ratio=2` (value in JSON).
    #[arg(long, value_name = "KEY=VALUE")]
    param: Vec<String>,
}

fn params(args: &ForecastArgs) -> Result<guardian::predict::Params> {
    let mut v = serde_json::to_value(guardian::predict::Params::default())?;
    for kv in &args.param {
        let (k, val) = kv.split_once('=').context("--param wants KEY=VALUE")?;
        let val: serde_json::Value =
            serde_json::from_str(val).with_context(|| format!("--param {k}: not JSON"))?;
        match v.get_mut(k) {
            Some(slot) => *slot = val,
            None => bail!("--param: no field {k} in Params"),
        }
    }
    serde_json::from_value(v).context("--param")
}

pub fn run(args: &ForecastArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let params = params(args)?;
    if args.write_doc && (!args.trace.is_empty() || !args.families.is_empty()) {
        bail!("--write-doc documents every generated family; drop --trace and --families");
    }
    let traces: Vec<Trace> = if args.trace.is_empty() {
        let families = families(&args.families)?;
        let mut traces = Vec::new();
        for f in families {
            for i in 0..instances(f, args.instances) {
                traces.push(traces::generate(f, i, args.seed)?);
            }
        }
        traces
    } else {
        args.trace
            .iter()
            .map(|p| Trace::read(p))
            .collect::<Result<_>>()?
    };
    if let Some(dir) = &args.dump {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for t in &traces {
            let path = dir.join(format!("{}.jsonl", t.name));
            std::fs::write(&path, t.to_jsonl())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        eprintln!("wrote {} traces to {}", traces.len(), dir.display());
    }

    if let Some(name) = &args.inspect {
        let trace = traces
            .iter()
            .find(|t| &t.name == name)
            .with_context(|| format!("no trace {name}"))?;
        inspect(trace, args, &params);
        return Ok(ExitCode::SUCCESS);
    }

    // Every (trace, method) pair is independent: score them on all CPUs.
    let jobs: Vec<(usize, usize)> = (0..traces.len())
        .flat_map(|t| (0..Kind::ALL.len()).map(move |m| (t, m)))
        .collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut scores: Vec<Option<eval::Score>> = vec![None; jobs.len()];
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let j = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&(t, m)) = jobs.get(j) else {
                            return done;
                        };
                        let trace = &traces[t];
                        let setup = setup_for(trace, args);
                        let mut method = Kind::ALL[m].build(setup, &params);
                        done.push((j, eval::score(trace, setup, method.as_mut())));
                    }
                })
            })
            .collect();
        for w in workers {
            for (j, s) in w.join().expect("scoring thread") {
                scores[j] = Some(s);
            }
        }
    });

    // family → method → summary
    let mut table: BTreeMap<String, Vec<Summary>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for (&(t, m), s) in jobs.iter().zip(&scores) {
        let (trace, kind) = (&traces[t], Kind::ALL[m]);
        let s = s.as_ref().expect("every job scored");
        let row = table.entry(trace.family_name.clone()).or_insert_with(|| {
            order.push(trace.family_name.clone());
            vec![Summary::default(); Kind::ALL.len()]
        });
        if args.verbose {
            let mape = if s.ape_n > 0 {
                100.0 * s.ape_sum / s.ape_n as f64
            } else {
                f64::NAN
            };
            eprintln!(
                "{:<18} {:<14} crossed {:<5} missed {:<5} false {:>3} mape {:>5.1}% warn {}",
                trace.name,
                kind.short(),
                s.crossed,
                s.missed,
                s.false_alarms,
                mape,
                s.warning.map(results::span).unwrap_or_else(|| "-".into())
            );
            if !s.false_alarm_at.is_empty() {
                let at: Vec<String> = s
                    .false_alarm_at
                    .iter()
                    .map(|t| format!("{:.1}", t / HOUR))
                    .collect();
                eprintln!("{:>20} false alarms at (h): {}", "", at.join(" "));
            }
        }
        row[m].add(s);
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Hours of trace scored per family (each up to its first crossing), for false alarms per
    // hour.
    let mut watched: BTreeMap<String, f64> = BTreeMap::new();
    for t in &traces {
        let threshold = setup_for(t, args).threshold;
        let end = t
            .free
            .iter()
            .position(|&f| f < threshold)
            .map_or(t.t.last(), |k| t.t.get(k));
        let span = end.copied().unwrap_or(0.0) - t.t.first().copied().unwrap_or(0.0);
        *watched.entry(t.family_name.clone()).or_default() += span / HOUR;
    }
    let results = results::render(args, &order, &table, &watched, traces.len(), elapsed);
    println!("{results}");
    if args.write_doc {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap_or(Path::new(".."));
        let path = root.join("docs/forecast.md");
        doc::write_results(&path, &results)?;
        eprintln!("wrote {}", path.display());
        let run = doc::Run {
            command: &command(args),
            seed: args.seed,
            instances: args.instances,
            recorded_instances: instances(Family::RecCargo, args.instances),
            traces: traces.len(),
            lead_time_h: args.lead_time / HOUR,
            elapsed_s: elapsed,
        };
        let section = doc::bench_section(&run, &order, &table);
        let path = root.join("docs/benchmarks.md");
        doc::write_bench_section(&path, &section)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The command line that reproduces this run (the options that change the results).
pub fn command(args: &ForecastArgs) -> String {
    let mut c = String::from("cargo xtask forecast-eval");
    if args.write_doc {
        c += " --write-doc";
    }
    if args.instances != INSTANCES {
        let _ = write!(c, " --instances {}", args.instances);
    }
    if args.seed != SEED {
        let _ = write!(c, " --seed {}", args.seed);
    }
    if args.lead_time != LEAD_TIME {
        let _ = write!(c, " --lead-time {}", args.lead_time);
    }
    for p in &args.param {
        let _ = write!(c, " --param '{p}'");
    }
    c
}

fn setup_for(trace: &Trace, args: &ForecastArgs) -> Setup {
    // Traces sampled faster than a minute are the daemon's scale: its lead time, and the ETA
    // window and false-alarm horizon in the same ratio to it as 12 h and 24 h to an hour.
    let fast = trace.interval_s > 0.0 && trace.interval_s < 60.0;
    Setup {
        capacity: trace.capacity,
        threshold: THRESHOLD * trace.capacity,
        floor: 0.40 * trace.capacity,
        lead_time: if fast { FAST_LEAD_TIME } else { args.lead_time },
        eta_window: if fast { FAST_ETA_WINDOW } else { ETA_WINDOW },
        false_alarm_horizon: if fast {
            FAST_FALSE_ALARM_HORIZON
        } else {
            FALSE_ALARM_HORIZON
        },
    }
}

/// The families `--families` names (all when empty).
fn families(names: &[String]) -> Result<Vec<Family>> {
    if names.is_empty() {
        return Ok(Family::ALL.to_vec());
    }
    let mut out = Vec::new();
    for name in names {
        let picked: Vec<Family> = match name.as_str() {
            "synthetic" => Family::ALL
                .into_iter()
                .filter(|f| f.recording().is_none())
                .collect(),
            "recorded" => Family::ALL
                .into_iter()
                .filter(|f| f.recording().is_some())
                .collect(),
            _ => match Family::ALL.into_iter().find(|f| f.name() == name) {
                Some(f) => vec![f],
                None => bail!(
                    "--families: no family {name} (families: {}; or synthetic, recorded)",
                    Family::ALL.map(Family::name).join(", ")
                ),
            },
        };
        for f in picked {
            if !out.contains(&f) {
                out.push(f);
            }
        }
    }
    Ok(out)
}

/// Instances of a family: `--instances`, halved for the recorded families (an hour at 4
/// samples a second each; 8 placements of the threshold with the default 16).
fn instances(family: Family, instances: u32) -> u32 {
    if family.recording().is_some() {
        instances.div_ceil(2)
    } else {
        instances
    }
}

/// Lead time for traces sampled faster than a minute, seconds (the daemon's auto lead time on
/// a test disk is about 8 s).
pub const FAST_LEAD_TIME: f64 = 10.0;
/// ETA window and false-alarm horizon of those traces: 12 and 24 lead times (2 and 4 min), as
/// 12 h and 24 h are for the minute traces' 1 h.
pub const FAST_ETA_WINDOW: f64 = 12.0 * FAST_LEAD_TIME;
pub const FAST_FALSE_ALARM_HORIZON: f64 = 24.0 * FAST_LEAD_TIME;

fn inspect(trace: &Trace, args: &ForecastArgs, params: &guardian::predict::Params) {
    let setup = setup_for(trace, args);
    let mut methods: Vec<_> = Kind::ALL.iter().map(|k| k.build(setup, params)).collect();
    let crossing = trace
        .free
        .iter()
        .position(|&f| f < setup.threshold)
        .map(|k| trace.t[k]);
    println!(
        "{} capacity {:.0} GiB, crossing {:?} h",
        trace.name,
        trace.capacity / (1u64 << 30) as f64,
        crossing.map(|c| c / HOUR)
    );
    let fmt = |e: Option<f64>| {
        e.map(|e| format!("{:7.2}", e / HOUR))
            .unwrap_or_else(|| "      -".into())
    };
    let mut last = vec![false; methods.len()];
    for (k, &t) in trace.t.iter().enumerate() {
        let outs: Vec<_> = methods
            .iter_mut()
            .map(|m| m.step(t, trace.free[k]))
            .collect();
        let changed = outs.iter().zip(&last).any(|(o, l)| o.alarm != *l);
        if k % args.every == 0 || changed {
            let mut line = format!(
                "{:7.2}h free {:5.2}% truth {}",
                t / HOUR,
                100.0 * trace.free[k] / trace.capacity,
                fmt(crossing.map(|c| c - t))
            );
            for (kind, o) in Kind::ALL.iter().zip(&outs) {
                line += &format!(
                    " | {} {} {} {}",
                    &kind.short()[..4],
                    fmt(o.eta50),
                    fmt(o.eta90),
                    if o.alarm { "A" } else { "." }
                );
            }
            println!("{line}");
        }
        last = outs.iter().map(|o| o.alarm).collect();
    }
}
