//! Neyman allocation of samples over coalition sizes, shared by the paired and the SVARM
//! samplers.
//!
//! A stratified estimator's variance is `sum_u a_u / (N p_u)` when a share `p_u` of `N`
//! samples goes to sampling unit `u` (a size, or a class `{s, n - s}` of sizes) and `a_u` is
//! that unit's variance cost; it is smallest for `p_u ~ sqrt(a_u)`. The costs come from
//! variances measured on the samples so far, so they are noisy: each size's variance is shrunk
//! towards the mean over sizes, and a share of the samples stays uniform.

/// Share of the samples still drawn uniformly over the sizes after a reallocation, so that a
/// unit whose variance was underestimated early keeps being sampled.
pub(super) const UNIFORM_SHARE: f64 = 0.25;

/// Prior weight, in degrees of freedom, of the mean over sizes when a size's variance is
/// estimated for the allocation.
pub(super) const VARIANCE_PRIOR_DF: f64 = 20.0;

/// The running sums of `weights`, a distribution for [`Rng::categorical`](crate::rng::Rng::categorical).
pub(super) fn cumulative(weights: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut acc = 0.0;
    weights
        .map(|x| {
            acc += x;
            acc
        })
        .collect()
}

/// Variance per size relative to the mean over the sizes, summed over the objectives.
///
/// `var[j][s]` is objective `j`'s variance at size `s` (NaN where unknown), `df[s]` its degrees
/// of freedom; sizes for which `sampled(s)` is false are left at 0. An unknown variance is the
/// mean over sizes; each is shrunk towards that mean with [`VARIANCE_PRIOR_DF`].
pub(super) fn relative_variances(var: &[Vec<f64>], df: &[f64], sampled: impl Fn(usize) -> bool) -> Vec<f64> {
    let sizes = df.len();
    let mut sigma2 = vec![0.0f64; sizes];
    for var_j in var {
        let known: Vec<f64> = (0..sizes).filter(|&s| sampled(s)).map(|s| var_j[s]).filter(|v| v.is_finite()).collect();
        let mean = known.iter().sum::<f64>() / known.len().max(1) as f64;
        if mean.is_nan() || mean <= 0.0 {
            continue;
        }
        for s in (0..sizes).filter(|&s| sampled(s)) {
            let v = if var_j[s].is_finite() { var_j[s] } else { mean };
            sigma2[s] += (df[s] * v + VARIANCE_PRIOR_DF * mean) / (df[s] + VARIANCE_PRIOR_DF) / mean;
        }
    }
    sigma2
}

/// The cumulative distribution over sampling units that mixes the Neyman allocation for the
/// costs `cost` (`p ~ sqrt(cost)`) with the share [`UNIFORM_SHARE`] of the allocation
/// `uniform` (unnormalised); `None` when the costs carry no information (all zero or not finite).
pub(super) fn neyman_cdf(cost: &[f64], uniform: &[f64]) -> Option<Vec<f64>> {
    let root: Vec<f64> = cost.iter().map(|a| a.max(0.0).sqrt()).collect();
    let total: f64 = root.iter().sum();
    if total.is_nan() || total <= 0.0 || !total.is_finite() {
        return None;
    }
    let uniform_total: f64 = uniform.iter().sum();
    Some(cumulative(
        root.iter().zip(uniform).map(|(a, u)| (1.0 - UNIFORM_SHARE) * a / total + UNIFORM_SHARE * u / uniform_total),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neyman_follows_the_root_of_the_costs_above_the_uniform_floor() {
        let cdf = neyman_cdf(&[4.0, 1.0, 0.0], &[1.0, 1.0, 1.0]).unwrap();
        let p: Vec<f64> = cdf.iter().scan(0.0, |prev, &c| Some(c - std::mem::replace(prev, c))).collect();
        let floor = UNIFORM_SHARE / 3.0;
        assert!((p[0] - (0.75 * 2.0 / 3.0 + floor)).abs() < 1e-12);
        assert!((p[1] - (0.75 / 3.0 + floor)).abs() < 1e-12);
        assert!((p[2] - floor).abs() < 1e-12);
        assert!((cdf[2] - 1.0).abs() < 1e-12);
        assert!(neyman_cdf(&[0.0, 0.0], &[1.0, 1.0]).is_none());
    }

    #[test]
    fn unknown_and_noisy_variances_lean_on_the_mean_over_sizes() {
        let var = vec![vec![f64::NAN, 1.0, 3.0, f64::NAN]];
        let df = vec![0.0, 1e9, 0.0, 0.0];
        let s = relative_variances(&var, &df, |s| s > 0);
        assert_eq!(s[0], 0.0, "a size not sampled");
        assert!((s[1] - 0.5).abs() < 1e-6, "well measured: its own variance over the mean 2");
        assert!((s[2] - 1.0).abs() < 1e-12, "no degrees of freedom: the mean");
        assert!((s[3] - 1.0).abs() < 1e-12, "unknown: the mean");
    }
}
