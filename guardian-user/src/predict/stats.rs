//! Small order statistics the pattern detectors share (`cycle.rs`: regular drops,
//! `transient.rs`: teeth): the median, the deviations around it, and nearest-rank quantiles.
//! Pure functions over plain slices; an empty slice gives 0.

/// The median of `v` (sorted in place); 0 when empty.
pub(super) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => v[n / 2],
        _ => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

/// The largest absolute deviation of `v` from `center`; 0 when empty.
pub(super) fn max_deviation(v: &[f64], center: f64) -> f64 {
    v.iter().map(|x| (x - center).abs()).fold(0.0, f64::max)
}

/// The root mean square deviation of `v` from `center`; 0 when empty.
pub(super) fn rms_deviation(v: &[f64], center: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    (v.iter().map(|x| (x - center).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
}

/// Whether every value of `v` is within `tolerance` × `center` of `center` (intervals of a
/// regular schedule around their median); false for a center that is not positive.
pub(super) fn regular(v: &[f64], center: f64, tolerance: f64) -> bool {
    center > 0.0 && max_deviation(v, center) <= tolerance * center
}

/// The nearest-rank `q` quantile of `v` (sorted in place): the smallest value with at least a
/// share `q` of the values at or below it, so the largest of fewer than `1 / (1 − q)`
/// values; 0 when empty.
pub(super) fn nearest_rank(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    // ceil(q·n) in 1..=n; q·n is small and positive, so the cast cannot wrap.
    let rank = (q.clamp(0.0, 1.0) * n as f64).ceil().max(1.0) as usize;
    v[rank.min(n) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn deviations_around_a_center() {
        let v = [8.0, 10.0, 13.0];
        assert_eq!(max_deviation(&v, 10.0), 3.0);
        assert!((rms_deviation(&v, 10.0) - (13.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(rms_deviation(&[], 10.0), 0.0);
        assert!(regular(&v, 10.0, 0.3));
        assert!(!regular(&v, 10.0, 0.25));
        assert!(!regular(&v, 0.0, 1.0));
    }

    #[test]
    fn nearest_rank_is_the_largest_of_few_values() {
        assert_eq!(nearest_rank(&mut [5.0, 1.0, 3.0], 0.9), 5.0);
        let mut ten: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(nearest_rank(&mut ten, 0.9), 9.0);
        assert_eq!(nearest_rank(&mut ten, 0.0), 1.0);
        assert_eq!(nearest_rank(&mut [], 0.9), 0.0);
    }
}
