//! Tests of the tooth detector and the pattern (`transient.rs`), on sampled sawtooth shapes.

use super::*;

const MB: f64 = 1e6;
/// Issue 17's tooth.
const TOOTH: Shape = Shape {
    amp: 120.0 * MB,
    rise: 3.0,
    rest: 5.0,
};

/// A sawtooth sampled every `dt`: from `base`, `amp` written over `rise` seconds, deleted
/// at once, then `rest` seconds flat; `teeth` of them from `t0`. Returns the end time.
/// Shape of a sawtooth: `amp` written over `rise` seconds, deleted at once, then `rest`
/// seconds flat.
#[derive(Clone, Copy)]
struct Shape {
    amp: f64,
    rise: f64,
    rest: f64,
}

fn sawtooth(d: &mut Teeth, t0: f64, dt: f64, base: f64, shape: &Shape, teeth: usize) -> f64 {
    let Shape { amp, rise, rest } = *shape;
    let period = rise + dt + rest;
    let mut t = t0;
    while t < t0 + period * teeth as f64 {
        let phase = (t - t0) % period;
        let y = if phase < rise {
            base + amp * phase / rise
        } else if phase < rise + dt {
            base + amp
        } else {
            base
        };
        d.push(t, y, MB, false);
        t += dt;
    }
    t
}

#[test]
fn locks_on_within_three_periods_at_any_period() {
    // 0.25 s samples with 8 s teeth, up to a minute's samples with daily teeth.
    for (dt, rise, rest) in [
        (0.25, 3.0, 5.0),
        (1.0, 20.0, 40.0),
        (10.0, 600.0, 3000.0),
        (60.0, 6.0 * 3600.0, 18.0 * 3600.0),
    ] {
        let mut d = Teeth::default();
        let end = sawtooth(
            &mut d,
            0.0,
            dt,
            500.0 * MB,
            &Shape {
                amp: 120.0 * MB,
                rise,
                rest,
            },
            2,
        );
        assert!(
            d.pattern(end).is_none(),
            "two teeth are no pattern yet ({dt})"
        );
        let end = sawtooth(
            &mut d,
            end,
            dt,
            500.0 * MB,
            &Shape {
                amp: 120.0 * MB,
                rise,
                rest,
            },
            1,
        );
        let p = d
            .pattern(end)
            .unwrap_or_else(|| panic!("locked after three ({dt}, {rise})"));
        assert_eq!(p.teeth, 3);
        let period = rise + dt + rest;
        assert!((p.period_s - period).abs() <= 2.0 * dt, "{p:?}");
        assert!(
            (p.amplitude_p90 - 120.0 * MB).abs() <= 120.0 * MB * dt / rise + 1.0,
            "{p:?}"
        );
        assert!(
            (p.rise_max_s - rise).abs() <= 2.0 * dt + 0.02 * rise,
            "{p:?}"
        );
        assert_eq!(p.drift_bps, 0.0);
        // Stale after a few periods without a tooth.
        assert!(d.pattern(end + 5.0 * period).is_none());
    }
}

#[test]
fn the_pattern_holds_while_a_peak_stays_above_the_threshold() {
    let mut d = Teeth::default();
    let end = sawtooth(&mut d, 0.0, 0.25, 500.0 * MB, &TOOTH, 4);
    // Mid-tooth: 60 MB up after 1.5 s.
    let mut t = end;
    for k in 0..=6 {
        d.push(t, 500.0 * MB + 10.0 * MB * k as f64, MB, false);
        t += 0.25;
    }
    let p = d.pattern(t).expect("locked");
    assert!((p.excursion - 60.0 * MB).abs() < 1.0, "{p:?}");
    // 365 MB free at the base, 305 now: a peak as large as the largest seen (5 % more for
    // sampling) leaves 239 MB; threshold 215 MB holds, 240 MB does not.
    assert!(p.holds(305.0 * MB, 215.0 * MB, 8.0));
    assert!(p.holds(305.0 * MB, 238.0 * MB, 8.0));
    assert!(!p.holds(305.0 * MB, 240.0 * MB, 8.0));
    // A rise larger than any tooth: danger.
    let mut big = p.clone();
    big.excursion = 130.0 * MB;
    assert!(!big.holds(235.0 * MB, 100.0 * MB, 8.0));
    // A rise longer than any tooth's (a steady fill): danger.
    let mut long = p.clone();
    long.excursion_s = 6.0;
    assert!(!long.holds(305.0 * MB, 100.0 * MB, 8.0));
    // Teeth rising for longer than the lead time are trusted only with room for a drop
    // that does not come: 42 MB/s × (2 s + half the 3 s rise) = 147 MB above the peak.
    assert!(!p.holds(305.0 * MB, 215.0 * MB, 2.0));
    assert!(p.holds(305.0 * MB, 90.0 * MB, 2.0));
    // Drift over the lead time counts.
    let mut drifting = p;
    drifting.drift_bps = 5.0 * MB;
    assert!(!drifting.holds(305.0 * MB, 215.0 * MB, 8.0));
}

#[test]
fn a_tooth_larger_than_the_p90_tooth_is_danger() {
    // One tooth of 120 MB among fifteen of 100 MB: the nearest-rank P90 is 100 MB, but the
    // next may be as large as the largest.
    let mut d = Teeth::default();
    let mut t = sawtooth(&mut d, 0.0, 0.25, 500.0 * MB, &TOOTH, 1);
    let small = Shape {
        amp: 100.0 * MB,
        ..TOOTH
    };
    t = sawtooth(&mut d, t, 0.25, 500.0 * MB, &small, 15);
    let p = d.pattern(t).expect("locked");
    assert!((p.amplitude_p90 - 100.0 * MB).abs() < 1.0, "{p:?}");
    // At rest, 400 MB free: a 120 MB peak leaves 280 MB.
    assert!(!p.holds(400.0 * MB, 285.0 * MB, 8.0));
    assert!(p.holds(400.0 * MB, 270.0 * MB, 8.0));
}

#[test]
fn teeth_that_grow_each_time_are_danger_before_they_pass_the_largest() {
    // Teeth of 60, 70 … 120 MB every 8.25 s: the next is ~130 MB, and the one after
    // ~140 MB, though none larger than 120 MB has been seen.
    let mut d = Teeth::default();
    let mut t = 0.0;
    for k in 0..7 {
        let shape = Shape {
            amp: (60.0 + 10.0 * f64::from(k)) * MB,
            ..TOOTH
        };
        t = sawtooth(&mut d, t, 0.25, 500.0 * MB, &shape, 1);
    }
    let p = d.pattern(t).expect("locked");
    assert!(p.height_growth_bps > 1.0 * MB, "{p:?}");
    // 400 MB free at rest: the largest seen (plus 5 %) leaves 274 MB, the grown tooth
    // ~260 MB.
    assert!(!p.holds(400.0 * MB, 272.0 * MB, 8.0));
    assert!(p.holds(400.0 * MB, 250.0 * MB, 8.0));
    // Equal teeth do not grow.
    let mut d = Teeth::default();
    let t = sawtooth(&mut d, 0.0, 0.25, 500.0 * MB, &TOOTH, 7);
    let p = d.pattern(t).expect("locked");
    assert!(p.height_growth_bps < 0.01 * MB, "{p:?}");
}

/// npm ci-like: from `base`, 64 MB written in four steps of 16 MB, each followed by a
/// 5 s pause, then deleted; one tooth every 30 s from `t`.
fn paused_tooth(d: &mut Teeth, mut t: f64, base: f64) -> f64 {
    for step in 1..=4 {
        for _ in 0..20 {
            d.push(t, base + 16.0 * MB * f64::from(step), MB, false);
            t += 0.25;
        }
    }
    for _ in 0..40 {
        d.push(t, base, MB, false);
        t += 0.25;
    }
    t
}

#[test]
fn a_rise_that_pauses_on_its_way_up_is_one_tooth() {
    let mut d = Teeth::default();
    let mut t = 0.0;
    for _ in 0..4 {
        t = paused_tooth(&mut d, t, 500.0 * MB);
    }
    let p = d.pattern(t).expect("locked");
    assert!((p.height_max - 64.0 * MB).abs() < 1.0, "{p:?}");
    // Halfway up the next one, after a pause: within the pattern, measured from its base.
    for _ in 0..40 {
        d.push(t, 532.0 * MB, MB, false);
        t += 0.25;
    }
    let p = d.pattern(t).expect("locked");
    assert!((p.excursion - 32.0 * MB).abs() < 1.0, "{p:?}");
    assert!(p.within(), "{p:?}");
}

#[test]
fn runs_of_teeth_keep_their_pattern_over_pauses_like_those_seen() {
    // Runs of three teeth 8.25 s apart, 100 s of quiet between runs.
    let mut d = Teeth::default();
    let mut t = 0.0;
    for _ in 0..3 {
        t = sawtooth(&mut d, t, 0.25, 500.0 * MB, &TOOTH, 3);
        for _ in 0..400 {
            d.push(t, 500.0 * MB, MB, false);
            t += 0.25;
        }
    }
    // The first tooth of the fourth run: the pause before it was as long as those seen.
    t = sawtooth(&mut d, t, 0.25, 500.0 * MB, &TOOTH, 1);
    assert!(d.pattern(t).is_some(), "forgotten over a familiar pause");
    // Three teeth with nothing seen before them are no pattern when irregular.
    let mut d = Teeth::default();
    let mut t = sawtooth(&mut d, 0.0, 0.25, 500.0 * MB, &TOOTH, 2);
    for _ in 0..400 {
        d.push(t, 500.0 * MB, MB, false);
        t += 0.25;
    }
    t = sawtooth(&mut d, t, 0.25, 500.0 * MB, &TOOTH, 1);
    assert!(d.pattern(t).is_none());
}

#[test]
fn growth_with_drops_is_not_transient_and_a_steady_fill_makes_no_tooth() {
    // Each drop takes back only a third: growth, not a pattern.
    let mut d = Teeth::default();
    let mut t = 0.0;
    let mut base = 0.0;
    for _ in 0..6 {
        for k in 0..12 {
            d.push(t, base + 10.0 * MB * k as f64, MB, false);
            t += 1.0;
        }
        base += 80.0 * MB;
        d.push(t, base, MB, false);
        t += 1.0;
    }
    assert!(d.pattern(t).is_none());
    let mut d = Teeth::default();
    for k in 0..1000 {
        d.push(k as f64, 20.0 * MB * k as f64, MB, false);
    }
    assert!(d.pattern(1000.0).is_none());
}

#[test]
fn irregular_teeth_are_no_pattern() {
    let mut d = Teeth::default();
    let mut t = 0.0;
    for rest in [5.0, 60.0, 2.0, 30.0] {
        t = sawtooth(&mut d, t, 0.25, 500.0 * MB, &Shape { rest, ..TOOTH }, 1);
    }
    assert!(d.pattern(t).is_none());
}

#[test]
fn our_own_cleanups_are_no_teeth() {
    // A fill, then Guardian's cleanup, five times: no pattern.
    let mut d = Teeth::default();
    let mut t = 0.0;
    for _ in 0..5 {
        for k in 0..12 {
            d.push(t, 500.0 * MB + 10.0 * MB * k as f64, MB, false);
            t += 0.25;
        }
        d.push(t, 500.0 * MB, MB, true);
        t += 0.25;
        for _ in 0..20 {
            d.push(t, 500.0 * MB, MB, false);
            t += 0.25;
        }
    }
    assert!(d.pattern(t).is_none());
}

#[test]
fn a_file_kept_between_teeth_moves_the_base() {
    let mut d = Teeth::default();
    let end = sawtooth(&mut d, 0.0, 0.25, 500.0 * MB, &TOOTH, 4);
    // 19 MB kept, then the level rests: the next tooth starts from there.
    let mut t = end;
    for _ in 0..14 {
        d.push(t, 519.0 * MB, MB, false);
        t += 0.25;
    }
    let end = sawtooth(&mut d, t, 0.25, 519.0 * MB, &TOOTH, 2);
    let p = d.pattern(end).expect("still locked");
    assert!((p.amplitude_max - 120.0 * MB).abs() < 1.0, "{p:?}");
    assert!((p.base - 519.0 * MB).abs() < 1.0, "{p:?}");
    // The kept file is in the base, not a rate: the next peak is judged from the base
    // alone (1 pp of a 1 GiB disk above the threshold holds).
    assert_eq!(p.drift_bps, 0.0, "{p:?}");
    let threshold = 215.0 * MB;
    let free_at_peak = threshold + 10.7 * MB;
    let free = free_at_peak + 120.0 * MB - p.excursion;
    assert!(p.holds(free, threshold, 7.0), "{p:?}");
}

#[test]
fn a_rise_whose_first_step_is_within_the_noise_starts_from_the_rest_level() {
    // Steps of 10 MB per sample, under half of a 25 MB noise step: the tooth's first file
    // is no plateau's level, however long the rest before it was.
    let mut d = Teeth::default();
    let mut t = 0.0;
    let rest = 500.0 * MB;
    for _ in 0..5 {
        for k in 0..=12 {
            d.push(t, rest + 10.0 * MB * k as f64, 25.0 * MB, false);
            t += 0.25;
        }
        for _ in 0..20 {
            d.push(t, rest, 25.0 * MB, false);
            t += 0.25;
        }
    }
    for k in 0..=5 {
        d.push(t, rest + 10.0 * MB * k as f64, 25.0 * MB, false);
        t += 0.25;
    }
    let p = d.pattern(t).expect("locked");
    assert!((p.base - rest).abs() < 1.0, "{p:?}");
    assert!((p.excursion - 50.0 * MB).abs() < 1.0, "{p:?}");
    assert!((p.height_max - 120.0 * MB).abs() < 1.0, "{p:?}");
}

#[test]
fn a_fill_under_the_teeth_is_a_drift_also_with_a_kept_file_among_its_steps() {
    // 2 MB kept after every tooth (a fill underneath), and 19 MB once.
    let mut d = Teeth::default();
    let mut t = 0.0;
    let mut base = 500.0 * MB;
    for k in 0..8 {
        t = sawtooth(&mut d, t, 0.25, base, &TOOTH, 1);
        base += if k == 4 { 21.0 * MB } else { 2.0 * MB };
        for _ in 0..4 {
            d.push(t, base, MB, false);
            t += 0.25;
        }
    }
    let p = d.pattern(t).expect("locked");
    // Each tooth: its shape, one sample at the peak, and the second at the kept level.
    let period = TOOTH.rise + 0.25 + TOOTH.rest + 1.0;
    let fill = 2.0 * MB / period;
    assert!((p.drift_bps - fill).abs() < 0.2 * fill, "{p:?} vs {fill}");
}

/// Samples (1 s apart, from `t`) of one loop of nested teeth: 20 s quiet at 0, an install
/// rising to 60 MB in three steps with pauses, three test runs of 60 MB on top of it (10 s up,
/// taken back to 62 MB, 15 s rest), then everything removed.
fn nested_loop(t: f64) -> Vec<(f64, f64)> {
    let mut level = vec![0.0; 20];
    for step in 1..=3 {
        level.extend([f64::from(step) * 20.0 * MB; 3]);
    }
    for _ in 0..3 {
        level.extend((1..=10).map(|s| 62.0 * MB + 58.0 * MB * f64::from(s) / 10.0));
        level.extend([62.0 * MB; 15]);
    }
    level
        .into_iter()
        .enumerate()
        .map(|(i, y)| (t + i as f64, y))
        .collect()
}

#[test]
fn the_outer_teeth_of_nested_ones_make_a_pattern_of_their_own() {
    let (mut inner, mut outer) = (Teeth::default(), Teeth::outer());
    let mut t = 0.0;
    for _ in 0..4 {
        for (at, y) in nested_loop(t) {
            inner.push(at, y, MB, false);
            outer.push(at, y, MB, false);
            t = at + 1.0;
        }
    }
    // The next loop, up to 110 MB in its first test run (the install, then 48 MB of the run).
    for (at, y) in nested_loop(t).into_iter().take(20 + 9 + 8) {
        inner.push(at, y, MB, false);
        outer.push(at, y, MB, false);
        t = at;
    }
    let p = inner
        .pattern(t)
        .expect("the test runs lock the first detector");
    assert!(p.height_max < 70.0 * MB, "{p:?}");
    assert!(
        !p.within(),
        "the install and the run on it exceed any test run: {p:?}"
    );
    let o = outer
        .pattern(t)
        .expect("four whole loops lock the outer detector");
    assert!((o.height_max - 120.0 * MB).abs() < 2.0 * MB, "{o:?}");
    assert!((o.excursion - 108.4 * MB).abs() < 1.0 * MB, "{o:?}");
    assert!(o.within(), "{o:?}");
    // 1 GB disk, 700 MB used before the loop: the loop's peak leaves 180 MB free.
    let free = 1000.0 * MB - 700.0 * MB - o.excursion;
    assert!(
        o.holds(free, 100.0 * MB, 10.0),
        "a threshold far under the peaks: {o:?}"
    );
    assert!(
        !o.holds(free, 178.0 * MB, 10.0),
        "a threshold just under them: {o:?}"
    );
    // A rise larger than any loop is danger again.
    for s in 1..=20 {
        outer.push(t + f64::from(s), 120.0 * MB + f64::from(s) * MB, MB, false);
    }
    let o = outer.pattern(t + 20.0).expect("still locked");
    assert!(!o.within(), "{o:?}");
}

#[test]
fn on_plain_teeth_the_outer_detector_finds_the_same_teeth() {
    let (mut inner, mut outer) = (Teeth::default(), Teeth::outer());
    let end = sawtooth(&mut inner, 0.0, 0.25, 500.0 * MB, &TOOTH, 6);
    sawtooth(&mut outer, 0.0, 0.25, 500.0 * MB, &TOOTH, 6);
    let (p, o) = (inner.pattern(end).unwrap(), outer.pattern(end).unwrap());
    assert_eq!(
        (
            p.teeth,
            p.period_s,
            p.amplitude_p90,
            p.height_max,
            p.rise_max_s
        ),
        (
            o.teeth,
            o.period_s,
            o.amplitude_p90,
            o.height_max,
            o.rise_max_s
        )
    );
}
