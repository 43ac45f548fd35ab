//! The forecasters under test, behind one interface: the predict_linear baselines, a plain Holt
//! model, and Guardian's `predict`.

use guardian::predict::{Forecaster, Params, TriggerRule};
use std::collections::VecDeque;

/// What the evaluation needs to know about a filesystem.
#[derive(Clone, Copy)]
pub struct Setup {
    pub capacity: f64,
    /// cleanup_free, bytes.
    pub threshold: f64,
    /// The AND-floor, bytes (40 % of the capacity, as node_exporter).
    pub floor: f64,
    /// Time needed to clean before the threshold, seconds.
    pub lead_time: f64,
    /// The ETA error is measured this close to a crossing, seconds.
    pub eta_window: f64,
    /// An alarm not followed by a crossing within this is false, seconds.
    pub false_alarm_horizon: f64,
}

/// A method's answer after one sample.
#[derive(Clone, Copy, Default)]
pub struct Output {
    /// Median time until free < threshold, seconds.
    pub eta50: Option<f64>,
    /// Pessimistic time (methods without one repeat `eta50`).
    pub eta90: Option<f64>,
    /// The method's alarm (its trigger rule) is raised.
    pub alarm: bool,
}

pub trait Method {
    fn step(&mut self, t: f64, free: f64) -> Output;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// node_exporter's rule: predict_linear(avail[6h], 24h) < threshold AND avail < 40 %,
    /// `for: 1h`.
    NodeExporter,
    /// The same 6 h least-squares line with Guardian's trigger (ETA < lead time AND avail under
    /// the floor): the model without the rule's 24 h horizon.
    LinearLead,
    /// Plain Holt (level + trend, no event handling), ETA < lead time AND under the floor.
    Holt,
    /// `guardian::predict` as issue 4 left it (no transient patterns, no acceleration), with
    /// `TriggerRule`: today's model, the baseline of issue 17.
    Today,
    /// `guardian::predict` with `TriggerRule`.
    Guardian,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::NodeExporter,
        Kind::LinearLead,
        Kind::Holt,
        Kind::Today,
        Kind::Guardian,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::NodeExporter => "node_exporter (6h fit, 24h, for 1h)",
            Kind::LinearLead => "6h fit, ETA < lead",
            Kind::Holt => "Holt, ETA < lead",
            Kind::Today => "Guardian, issue 4 model",
            Kind::Guardian => "Guardian predict",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Kind::NodeExporter => "node_exporter",
            Kind::LinearLead => "linear-lead",
            Kind::Holt => "holt",
            Kind::Today => "issue4",
            Kind::Guardian => "guardian",
        }
    }

    pub fn build(self, setup: Setup, params: &Params) -> Box<dyn Method> {
        match self {
            Kind::NodeExporter => Box::new(Linear::new(setup, true)),
            Kind::LinearLead => Box::new(Linear::new(setup, false)),
            Kind::Holt => Box::new(Holt::new(setup)),
            Kind::Today => Box::new(Guardian::new(
                setup,
                Params {
                    transients: false,
                    accelerate: false,
                    ..params.clone()
                },
            )),
            Kind::Guardian => Box::new(Guardian::new(setup, params.clone())),
        }
    }
}

/// Least squares over the last 6 h, as Prometheus' predict_linear (running sums, times and
/// values relative to the first sample).
struct Linear {
    setup: Setup,
    node_exporter: bool,
    window: VecDeque<(f64, f64)>,
    origin: Option<(f64, f64)>,
    sums: [f64; 5], // n, Σx, Σy, Σxx, Σxy
    since: Option<f64>,
}

const RANGE: f64 = 6.0 * 3600.0;
const HORIZON: f64 = 24.0 * 3600.0;
const FOR: f64 = 3600.0;

impl Linear {
    fn new(setup: Setup, node_exporter: bool) -> Linear {
        Linear {
            setup,
            node_exporter,
            window: VecDeque::new(),
            origin: None,
            sums: [0.0; 5],
            since: None,
        }
    }

    fn add(&mut self, x: f64, y: f64, sign: f64) {
        let s = &mut self.sums;
        s[0] += sign;
        s[1] += sign * x;
        s[2] += sign * y;
        s[3] += sign * x * x;
        s[4] += sign * x * y;
    }

    /// (value of the line at `t`, slope).
    fn fit(&self, t: f64) -> Option<(f64, f64)> {
        let [n, sx, sy, sxx, sxy] = self.sums;
        let (t0, y0) = self.origin?;
        if self.window.len() < 2 {
            return None;
        }
        let vxx = sxx - sx * sx / n;
        if vxx <= 0.0 {
            return None;
        }
        let slope = (sxy - sx * sy / n) / vxx;
        let (xm, ym) = (sx / n, sy / n);
        Some((y0 + ym + slope * (t - t0 - xm), slope))
    }
}

impl Method for Linear {
    fn step(&mut self, t: f64, free: f64) -> Output {
        let (t0, y0) = *self.origin.get_or_insert((t, free));
        let (x, y) = (t - t0, free - y0);
        self.window.push_back((x, y));
        self.add(x, y, 1.0);
        while self
            .window
            .front()
            .is_some_and(|(x, _)| *x < t - t0 - RANGE)
        {
            let (x, y) = self.window.pop_front().expect("front exists");
            self.add(x, y, -1.0);
        }
        let s = self.setup;
        let Some((now, slope)) = self.fit(t) else {
            self.since = None;
            return Output::default();
        };
        let eta = (slope < 0.0).then(|| ((now - s.threshold) / -slope).max(0.0));
        let alarm = if self.node_exporter {
            let condition = now + slope * HORIZON < s.threshold && free < s.floor;
            if condition {
                self.since.get_or_insert(t);
            } else {
                self.since = None;
            }
            self.since.is_some_and(|since| t - since >= FOR)
        } else {
            free < s.floor && eta.is_some_and(|e| e < s.lead_time)
        };
        Output {
            eta50: eta,
            eta90: eta,
            alarm,
        }
    }
}

/// Holt's linear method on used bytes, time constants 10 min (level) and 2 h (trend), exact
/// for irregular steps; no special case for drops or bursts.
struct Holt {
    setup: Setup,
    state: Option<(f64, f64, f64)>, // (t, level, trend)
}

impl Holt {
    fn new(setup: Setup) -> Holt {
        Holt { setup, state: None }
    }
}

impl Method for Holt {
    fn step(&mut self, t: f64, free: f64) -> Output {
        let s = self.setup;
        let used = s.capacity - free;
        let (level, trend) = match self.state {
            None => (used, 0.0),
            Some((t0, level, trend)) => {
                let dt = t - t0;
                let a = 1.0 - (-dt / 600.0).exp();
                let b = 1.0 - (-dt / 7200.0).exp();
                let predicted = level + trend * dt;
                let new_level = predicted + a * (used - predicted);
                let new_trend = trend + b * ((new_level - level) / dt - trend);
                (new_level, new_trend)
            }
        };
        self.state = Some((t, level, trend));
        let eta = (trend > 0.0).then(|| ((free - s.threshold) / trend).max(0.0));
        Output {
            eta50: eta,
            eta90: eta,
            alarm: free < s.floor && eta.is_some_and(|e| e < s.lead_time),
        }
    }
}

pub struct Guardian {
    setup: Setup,
    forecaster: Forecaster,
    rule: TriggerRule,
}

impl Guardian {
    pub fn new(setup: Setup, params: Params) -> Guardian {
        Guardian {
            setup,
            forecaster: Forecaster::new(params),
            rule: TriggerRule {
                lead_time_s: setup.lead_time,
                floor_free: setup.floor as u64,
            },
        }
    }
}

impl Method for Guardian {
    fn step(&mut self, t: f64, free: f64) -> Output {
        let s = self.setup;
        let free_bytes = free.max(0.0) as u64;
        self.forecaster
            .observe(t, (s.capacity - free).max(0.0) as u64);
        let forecast = self
            .forecaster
            .forecast(t, free_bytes, &[s.threshold as u64]);
        let eta = &forecast.eta[0];
        Output {
            eta50: eta.p50_s,
            eta90: eta.p90_s,
            alarm: self.rule.check(&forecast).is_some(),
        }
    }
}
