//! `predict` on plain data: no IO, no clock, deterministic noise.

use super::*;

const GIB: f64 = (1u64 << 30) as f64;
const MIB: f64 = (1u64 << 20) as f64;
const MINUTE: f64 = 60.0;
const HOUR: f64 = 3600.0;

/// A small deterministic noise source (SplitMix64 → roughly normal).
struct Noise(u64);

impl Noise {
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Sum of 12 uniforms − 6: mean 0, sd 1.
    fn normal(&mut self) -> f64 {
        (0..12).map(|_| self.unit()).sum::<f64>() - 6.0
    }
}

/// A filesystem of `size` bytes sampled every `dt` seconds; `used(t)` gives the used bytes.
struct Disk {
    size: f64,
    f: Forecaster,
    t: f64,
    used: f64,
}

impl Disk {
    fn new(size: f64) -> Disk {
        Disk {
            size,
            f: Forecaster::default(),
            t: 0.0,
            used: 0.0,
        }
    }

    fn sample(&mut self, t: f64, used: f64) {
        self.t = t;
        self.used = used;
        self.f.observe(t, used.max(0.0) as u64);
    }

    fn free(&self) -> u64 {
        (self.size - self.used).max(0.0) as u64
    }

    fn forecast(&self, thresholds: &[u64]) -> Forecast {
        self.f.forecast(self.t, self.free(), thresholds)
    }

    fn eta(&self, threshold: u64) -> Eta {
        self.forecast(&[threshold]).eta[0].clone()
    }
}

fn within(actual: f64, expected: f64, tolerance: f64) -> bool {
    (actual - expected).abs() <= tolerance * expected
}

#[test]
fn steady_fill_gives_the_eta_within_5_percent() {
    // 1 TiB, 40 % used, filling at 5 MB/s with 200 MiB of noise; threshold 20 % free.
    let size = 1024.0 * GIB;
    let rate = 5e6;
    let threshold = (0.2 * size) as u64;
    let mut noise = Noise(1);
    let mut disk = Disk::new(size);
    let mut t = 0.0;
    while t <= 12.0 * HOUR {
        disk.sample(t, 0.4 * size + rate * t + 200.0 * MIB * noise.normal());
        t += MINUTE;
    }
    let eta = disk.eta(threshold);
    let truth = (0.6 * size - rate * disk.t - threshold as f64) / rate;
    let p50 = eta.p50_s.expect("a steady fill has an ETA");
    assert!(
        within(p50, truth, 0.05),
        "P50 {p50:.0} s, truth {truth:.0} s"
    );
    assert!(within(eta.rate_bps, rate, 0.05), "rate {}", eta.rate_bps);
    let p90 = eta.p90_s.expect("and a pessimistic one");
    assert!(p90 <= p50 && p90 > 0.5 * truth, "P90 {p90:.0} s");
}

#[test]
fn steady_fill_with_irregular_sampling() {
    // Samples every 1–120 s (a daemon that reads on events and polls when idle).
    let size = 200.0 * GIB;
    let rate = 2e6;
    let threshold = (0.1 * size) as u64;
    let mut noise = Noise(2);
    let mut disk = Disk::new(size);
    let mut t = 0.0;
    while t <= 8.0 * HOUR {
        disk.sample(t, 0.3 * size + rate * t + 20.0 * MIB * noise.normal());
        t += 1.0 + 119.0 * noise.unit();
    }
    let truth = (disk.free() as f64 - threshold as f64) / rate;
    let p50 = disk.eta(threshold).p50_s.expect("ETA");
    assert!(
        within(p50, truth, 0.05),
        "P50 {p50:.0} s, truth {truth:.0} s"
    );
}

#[test]
fn a_cleanup_resets_the_level_and_is_not_negative_growth() {
    let size = 1024.0 * GIB;
    let rate = 5e6;
    let threshold = (0.2 * size) as u64;
    let mut disk = Disk::new(size);
    let mut noise = Noise(3);
    let mut t = 0.0;
    let mut used = 0.5 * size;
    while t <= 6.0 * HOUR {
        disk.sample(t, used + 100.0 * MIB * noise.normal());
        used += rate * MINUTE;
        t += MINUTE;
    }
    // Someone deletes 200 GiB at once, then the fill goes on.
    used -= 200.0 * GIB;
    for _ in 0..30 {
        disk.sample(t, used + 100.0 * MIB * noise.normal());
        used += rate * MINUTE;
        t += MINUTE;
    }
    assert!(disk.f.events().last_reset_bytes > 190.0 * GIB);
    let eta = disk.eta(threshold);
    assert!(within(eta.rate_bps, rate, 0.05), "rate {}", eta.rate_bps);
    let truth = (disk.free() as f64 - threshold as f64) / rate;
    let p50 = eta.p50_s.expect("still growing");
    assert!(
        within(p50, truth, 0.05),
        "P50 {p50:.0} s, truth {truth:.0} s"
    );

    // Guardian's own cleanup, announced with `reset`: a reset too, whatever its size.
    let before = disk.f.events().resets;
    used -= 5.0 * GIB;
    disk.t = t;
    disk.used = used;
    disk.f.reset(t, used as u64);
    assert_eq!(disk.f.events().resets, before + 1);
    t += MINUTE;
    used += rate * MINUTE;
    disk.sample(t, used);
    assert!(within(disk.eta(threshold).rate_bps, rate, 0.05));
}

/// The documented bound: one burst (a jump in a single sample, of any size) moves the P50 ETA
/// by at most 5 % from the ETA of the new free space at the old rate, i.e. it does not change
/// the rate by more than 5 %.
const BURST_BOUND: f64 = 0.05;

#[test]
fn a_single_burst_moves_the_p50_eta_by_at_most_the_bound() {
    let size = 1024.0 * GIB;
    let rate = 6e6;
    let threshold = (0.2 * size) as u64;
    for (k, burst) in [1.0, 10.0, 50.0, 150.0].into_iter().enumerate() {
        let mut disk = Disk::new(size);
        let mut noise = Noise(10 + k as u64);
        let mut t = 0.0;
        let mut used = 0.4 * size;
        while t <= 8.0 * HOUR {
            disk.sample(t, used + 100.0 * MIB * noise.normal());
            used += rate * MINUTE;
            t += MINUTE;
        }
        let before = disk.eta(threshold);
        // One sample jumps by `burst` GiB (an image pull, a core dump) and it stays.
        used += burst * GIB;
        for _ in 0..10 {
            disk.sample(t, used + 100.0 * MIB * noise.normal());
            used += rate * MINUTE;
            t += MINUTE;
            let after = disk.eta(threshold);
            let ideal = (disk.free() as f64 - threshold as f64) / before.rate_bps;
            let p50 = after.p50_s.expect("ETA");
            assert!(
                within(p50, ideal, BURST_BOUND),
                "burst {burst} GiB: P50 {p50:.0} s, ideal {ideal:.0} s (before {:?})",
                before.p50_s
            );
        }
        assert!(disk.f.events().bursts >= 1, "burst {burst} GiB");
    }
}

#[test]
fn a_burst_that_is_removed_again_leaves_nothing() {
    let size = 512.0 * GIB;
    let rate = 2e6;
    let threshold = (0.2 * size) as u64;
    let mut disk = Disk::new(size);
    let mut t = 0.0;
    let mut used = 0.4 * size;
    let mut noise = Noise(20);
    while t <= 6.0 * HOUR {
        disk.sample(t, used + 50.0 * MIB * noise.normal());
        used += rate * MINUTE;
        t += MINUTE;
    }
    let before = disk.eta(threshold).rate_bps;
    // A 30 GiB temporary file for 10 minutes, three times.
    for _ in 0..3 {
        for k in 0..40 {
            let temp = if k < 10 { 30.0 * GIB } else { 0.0 };
            disk.sample(t, used + temp + 50.0 * MIB * noise.normal());
            used += rate * MINUTE;
            t += MINUTE;
        }
    }
    let after = disk.eta(threshold).rate_bps;
    assert!(within(after, before, 0.05), "rate {before} → {after}");
}

#[test]
fn a_cron_sawtooth_that_never_crosses_raises_no_alarm_once_learned() {
    // Every hour a job fills a scratch dir with 5 % of the disk and a cron wipe removes it;
    // just before the wipe only 3 % is left above the threshold: 36 min at the fill rate,
    // inside the 1 h lead time, but the wipe always comes first.
    let size = 1024.0 * GIB;
    let threshold = (0.20 * size) as u64;
    let rule = TriggerRule {
        lead_time_s: HOUR,
        floor_free: (0.4 * size) as u64,
    };
    let fill = 0.05 * size;
    let base = 0.72 * size; // 28 % free after a wipe, 23 % before
    let mut disk = Disk::new(size);
    let mut noise = Noise(30);
    let mut alarms_after_learning = 0;
    let mut t = 0.0;
    while t <= 24.0 * HOUR {
        let phase = t % HOUR;
        disk.sample(t, base + fill * phase / HOUR + 200.0 * MIB * noise.normal());
        let forecast = disk.forecast(&[threshold]);
        if t > 4.0 * HOUR && rule.check(&forecast).is_some() {
            alarms_after_learning += 1;
        }
        t += MINUTE;
    }
    let forecast = disk.forecast(&[threshold]);
    assert!(
        forecast.cycle_s.is_some_and(|p| within(p, HOUR, 0.05)),
        "cycle {:?}",
        forecast.cycle_s
    );
    // No crossing in sight: none, or one far away (noise taken for a drift of the wipes).
    let week = 7.0 * 86_400.0;
    assert!(
        forecast.eta[0].p50_s.is_none_or(|s| s > week),
        "{forecast:?}"
    );
    assert_eq!(alarms_after_learning, 0);
}

#[test]
fn a_cron_that_stops_is_noticed() {
    // The same sawtooth; after 12 h the wipe stops coming and the fill crosses 36 min after
    // the wipe that did not come.
    let size = 1024.0 * GIB;
    let threshold = (0.20 * size) as u64;
    let rule = TriggerRule {
        lead_time_s: HOUR,
        floor_free: (0.4 * size) as u64,
    };
    let fill = 0.05 * size;
    let base = 0.72 * size;
    let mut disk = Disk::new(size);
    let mut first_alarm = None;
    let mut t = 0.0;
    while disk.free() > threshold {
        let used = if t < 12.0 * HOUR {
            base + fill * (t % HOUR) / HOUR
        } else {
            base + fill * (t - 11.0 * HOUR) / HOUR
        };
        disk.sample(t, used);
        if t > 4.0 * HOUR
            && first_alarm.is_none()
            && rule.check(&disk.forecast(&[threshold])).is_some()
        {
            first_alarm = Some(t);
        }
        t += MINUTE;
    }
    let crossing = disk.t;
    let alarm = first_alarm.expect("the missing wipe is noticed before the crossing");
    assert!(
        alarm > 12.0 * HOUR - 1.0,
        "no alarm while the cron ran ({alarm} s)"
    );
    // Noticed as soon as the wipe is overdue, a few minutes after it was due.
    assert!(
        crossing - alarm >= 20.0 * MINUTE,
        "alarm {alarm} s, crossing {crossing} s"
    );
}

#[test]
fn idle_gives_no_eta() {
    // Two days without growth, 300 MiB of noise: no P50 (or one beyond a week: a short window
    // can take noise for slow growth, never for growth that matters), no P90 within a day,
    // never a trigger, and no ETA at all once the long scales have seen enough.
    let size = 512.0 * GIB;
    let threshold = (0.2 * size) as u64;
    let rule = TriggerRule {
        lead_time_s: HOUR,
        floor_free: (0.4 * size) as u64,
    };
    let mut disk = Disk::new(size);
    let mut noise = Noise(40);
    let mut t = 0.0;
    let day = 86_400.0;
    while t <= 48.0 * HOUR {
        disk.sample(t, 0.65 * size + 300.0 * MIB * noise.normal());
        let forecast = disk.forecast(&[threshold]);
        let eta = &forecast.eta[0];
        assert!(eta.p50_s.is_none_or(|s| s > 7.0 * day), "at {t} s: {eta:?}");
        assert!(eta.p90_s.is_none_or(|s| s > day), "at {t} s: {eta:?}");
        assert!(rule.check(&forecast).is_none());
        t += MINUTE;
    }
    assert_eq!(disk.eta(threshold).p50_s, None);
}

#[test]
fn a_writer_that_starts_after_an_idle_weekend_is_followed() {
    // Idle for two days, then 100 MB/s; the threshold is 3 h of writing away.
    let size = 2048.0 * GIB;
    let threshold = (0.2 * size) as u64;
    let rate = 100e6;
    let start_used = size - threshold as f64 - rate * 3.0 * HOUR;
    let mut disk = Disk::new(size);
    let mut noise = Noise(50);
    let mut t = 0.0;
    while t <= 48.0 * HOUR {
        disk.sample(t, start_used + 100.0 * MIB * noise.normal());
        t += MINUTE;
    }
    let mut used = start_used;
    for minute in 1..=120 {
        used += rate * MINUTE;
        disk.sample(t, used + 100.0 * MIB * noise.normal());
        t += MINUTE;
        let eta = disk.eta(threshold);
        let truth = (180 - minute) as f64 * MINUTE;
        if minute >= 65 {
            // The pessimistic time follows once a window long enough to vouch for the time
            // left has seen the writer (30 min for 2 h at the default reach ratio of 4)…
            let p90 = eta.p90_s.expect("P90");
            assert!(
                p90 <= 1.1 * truth,
                "minute {minute}: P90 {p90:.0} s, truth {truth:.0} s"
            );
        }
        if minute == 120 {
            // …and the median once the backtest has seen the faster scales do better.
            let p50 = eta.p50_s.expect("P50");
            assert!(
                within(p50, truth, 0.15),
                "P50 {p50:.0} s, truth {truth:.0} s"
            );
        }
    }
}

#[test]
fn daemon_scale_the_trigger_fires_a_lead_time_before_the_crossing() {
    // The end-to-end scenario: 1 GiB filesystem, samples every 250 ms, idle for a minute,
    // then a writer at 20 MB/s. cleanup_free 20 %, floor 40 %, lead time 3 s.
    let size = GIB;
    let threshold = (0.2 * size) as u64;
    let rule = TriggerRule {
        lead_time_s: 3.0,
        floor_free: (0.4 * size) as u64,
    };
    let mut disk = Disk::new(size);
    let mut t = 0.0;
    let mut used = 0.2 * size;
    let mut trigger = None;
    while disk.free() > threshold || disk.t == 0.0 {
        if t > 60.0 {
            used += 20e6 * 0.25;
        }
        disk.sample(t, used);
        if trigger.is_none() {
            trigger = rule.check(&disk.forecast(&[threshold]));
        }
        t += 0.25;
    }
    let trigger = trigger.expect("the forecast triggers before the threshold");
    let crossing = disk.t;
    assert!(
        crossing - trigger.at >= 3.0,
        "trigger at {} s, crossing at {crossing} s: {}",
        trigger.at,
        trigger.describe()
    );
}

#[test]
fn the_trigger_needs_the_floor_and_the_lead_time() {
    let forecast = |free: u64, p90: Option<f64>| Forecast {
        at: 100.0,
        free_bytes: free,
        rate_bps: 1e6,
        eta: vec![Eta {
            threshold: 200,
            p50_s: p90.map(|s| 2.0 * s),
            p90_s: p90,
            rate_bps: 1e6,
            window_s: 600.0,
        }],
        samples: 100,
        cycle_s: None,
        pattern: None,
        outer_pattern: None,
    };
    let rule = TriggerRule {
        lead_time_s: 60.0,
        floor_free: 400,
    };
    // Close, under the floor: triggers, and says why.
    let t = rule.check(&forecast(300, Some(30.0))).expect("trigger");
    assert_eq!((t.threshold, t.p90_s, t.free_bytes), (200, 30.0, 300));
    assert!(t.describe().contains("P90 30s"), "{}", t.describe());
    // Fast growth far from the thresholds (above the floor): nothing.
    assert!(rule.check(&forecast(500, Some(30.0))).is_none());
    // Under the floor but not within the lead time: nothing.
    assert!(rule.check(&forecast(300, Some(120.0))).is_none());
    assert!(rule.check(&forecast(300, None)).is_none());
    // Already crossed: the reactive path's business.
    assert!(rule.check(&forecast(150, Some(0.0))).is_none());
}

#[test]
fn forecasts_serialize() {
    let mut disk = Disk::new(100.0 * GIB);
    for k in 0..200 {
        disk.sample(k as f64 * 10.0, 50.0 * GIB + k as f64 * 1e8);
    }
    let forecast = disk.forecast(&[(10.0 * GIB) as u64, (5.0 * GIB) as u64]);
    let json = serde_json::to_value(&forecast).expect("serialize");
    assert_eq!(json["eta"].as_array().map(Vec::len), Some(2));
    assert!(json["eta"][0]["p50_s"].is_number());
    let back: Forecast = serde_json::from_value(json).expect("deserialize");
    assert_eq!(back, forecast);
    let params: Params = serde_json::from_str(r#"{"horizon_ratio": 2}"#).expect("partial params");
    assert_eq!(params.horizon_ratio, 2.0);
    assert_eq!(params.z90, Params::default().z90);
}

#[test]
fn samples_out_of_order_are_ignored() {
    let mut f = Forecaster::default();
    f.observe(10.0, 100);
    f.observe(5.0, 50);
    f.observe(10.0, 60);
    f.observe(f64::NAN, 60);
    assert_eq!(f.samples(), 1);
    let forecast = f.forecast(10.0, 1000, &[500]);
    assert_eq!(forecast.eta[0].p50_s, None);
    assert_eq!(f.forecast(10.0, 400, &[500]).eta[0].p50_s, Some(0.0));
}

#[test]
fn bursts_that_stay_are_growth() {
    // Most of the growth comes in bursts that stay (1–3 GiB every 40 minutes, an image pull or
    // a build's artifacts), some in temporary files that are removed again (10 GiB for 20
    // minutes every 3 hours), over a slow background: after a day and a half the rate is the
    // bursts' and the background's, neither the temporary files' nor short of the largest
    // burst (within 5 %).
    let size = 2048.0 * GIB;
    let threshold = (0.2 * size) as u64;
    let background = 0.2e6;
    let mut disk = Disk::new(size);
    let mut noise = Noise(60);
    let mut used = 0.6 * size;
    let mut kept = 0.0;
    let mut t = 0.0;
    while t <= 36.0 * HOUR {
        let minute = (t / MINUTE) as u64;
        if minute % 40 == 39 {
            let burst = (1.0 + 2.0 * noise.unit()) * GIB;
            used += burst;
            kept += burst;
        }
        let temporary = if minute % 180 >= 100 && minute % 180 < 120 {
            10.0 * GIB
        } else {
            0.0
        };
        used += background * MINUTE;
        disk.sample(t, used + temporary + 50.0 * MIB * noise.normal());
        t += MINUTE;
    }
    let rate = background + kept / disk.t;
    let measured = disk.f.rate_bps(disk.free());
    assert!(
        within(measured, rate, 0.05),
        "rate {measured:.0}, truth {rate:.0}"
    );
    // 270 GiB from the threshold: P50 is the fill's, a little earlier as a temporary file
    // may cross once the margin is down to its size.
    let eta = disk.eta(threshold);
    let margin = disk.free() as f64 - threshold as f64;
    let p50 = eta.p50_s.expect("growing");
    let (fill, reachable) = (margin / rate, (margin - 10.0 * GIB) / rate);
    assert!(
        p50 > 0.98 * reachable && p50 < 1.02 * fill,
        "P50 {p50:.0} s, fill {fill:.0} s"
    );
}

#[test]
fn temporary_files_larger_than_the_margin_cross_by_themselves() {
    // A slow fill (1 MB/s) and, every 1–3 hours (irregularly: no cycle), a 20 GiB temporary
    // file for 10 minutes. With 15 GiB left, the next one crosses: it comes within about
    // 2 h·ln 2 with probability ½ and 2 h·ln(1/0.9) ≈ 13 minutes with probability 0.1, so the
    // trigger (lead time 1 h) fires although the fill alone would take over 4 hours.
    let size = 512.0 * GIB;
    let threshold = (0.2 * size) as u64;
    let rule = TriggerRule {
        lead_time_s: HOUR,
        floor_free: (0.4 * size) as u64,
    };
    let rate = 1e6;
    let mut disk = Disk::new(size);
    let mut noise = Noise(70);
    let base = size - threshold as f64 - 15.0 * GIB - rate * 24.0 * HOUR;
    let (mut t, mut next, mut files) = (0.0, HOUR, 0);
    while t <= 24.0 * HOUR {
        if t >= next + 10.0 * MINUTE {
            next += HOUR + 2.0 * HOUR * noise.unit();
            files += 1;
        }
        let temporary = if t >= next { 20.0 * GIB } else { 0.0 };
        disk.sample(t, base + rate * t + temporary + 50.0 * MIB * noise.normal());
        t += MINUTE;
    }
    assert!(disk.free() > threshold, "ends between two temporary files");
    let forecast = disk.forecast(&[threshold]);
    assert_eq!(forecast.cycle_s, None, "{files} temporary files");
    let eta = &forecast.eta[0];
    let (p50, p90) = (eta.p50_s.expect("P50"), eta.p90_s.expect("P90"));
    let fill = (disk.free() - threshold) as f64 / rate;
    assert!(fill > 4.0 * HOUR);
    let every = 24.0 * HOUR / files as f64;
    assert!(
        within(p50, every * 2f64.ln(), 0.25),
        "P50 {p50:.0} s, every {every:.0} s"
    );
    assert!(p90 < 0.5 * HOUR, "P90 {p90:.0} s");
    assert!(rule.check(&forecast).is_some());
    // With more left than the temporary files (25 GiB), they cannot cross until the fill has
    // brought the margin down to their size (2.9 h): P50 is the fill's, or a little earlier.
    let far = threshold - (10.0 * GIB) as u64;
    let eta = disk.eta(far);
    let fill = (disk.free() - far) as f64 / rate;
    let p50 = eta.p50_s.expect("P50");
    let reachable = fill - 20.0 * GIB / rate;
    assert!(
        p50 > reachable && p50 <= 1.001 * fill,
        "P50 {p50:.0} s, fill {fill:.0} s"
    );
    assert!(eta.p90_s.is_some_and(|p90| p90 > reachable), "{eta:?}");
}
