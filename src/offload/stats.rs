//! The one definition of the summaries the offloading tools print: quantiles by nearest rank.
//!
//! The `q` quantile of n values is the ⌈q·n⌉-th smallest (at least the first): always one of the
//! measured values, never an interpolation. The median is the 0.5 quantile, so of an even number
//! of values it is the lower middle one (of [1, 2, 3, 4]: 2) — in the plot, the summary, `advise`
//! and `tune` alike.

/// The `q` quantile (0..=1) of `values` by nearest rank; `None` when there are none.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// The median ([`quantile`] 0.5).
pub fn median(values: &[f64]) -> Option<f64> {
    quantile(values, 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_with_one_definition_of_the_median() {
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.5), Some(2.0));
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.95), Some(4.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.0), "the lower middle");
        assert_eq!(quantile(&[5.0], 0.0), Some(5.0));
        assert_eq!(quantile(&[1.0, 2.0], 1.0), Some(2.0));
        assert_eq!(median(&[]), None);
    }
}
