//! The judge's statistics: canary against stable with a Mann–Whitney U test and an effect-size
//! bound, as Spinnaker Kayenta's NetflixACAJudge does, reduced to one signal at a time.
//!
//! This module owns the pure arithmetic: ranks with ties, the U statistic, its two-sided
//! p-value (normal approximation with tie and continuity corrections), the effect size and the
//! Pass / Marginal / Fail verdict. It never reads a clock, never touches the proxy (the judge
//! provider, `crate::provider::judge`, collects the samples) and never decides what a verdict
//! does to a rollout (the metric's conditions do).
//!
//! The rules, in full (also in `docs/analysis.md`):
//! - **Test.** Mann–Whitney U, two-sided, on the per-request samples of both versions. Ties get
//!   average ranks and the variance its tie correction; a continuity correction of ½ is applied
//!   (the normal approximation is sound from about 20 samples per side, which is why
//!   `minSamples` defaults to 50). When every sample of both versions is the same value the
//!   test cannot tell them apart and the p-value is 1 (Kayenta adds noise instead).
//! - **Down-sampling.** More than [`MAX_SAMPLES_PER_SIDE`] samples on a side are reduced to
//!   that many evenly spaced order statistics, which keeps the distribution's shape and is
//!   deterministic.
//! - **Effect.** Latency: the relative increase of the canary's median over stable's,
//!   `(canary − stable) / stable`. Errors: the increase of the canary's failure rate over
//!   stable's, relative to stable's rate but never to less than [`ERROR_RATE_FLOOR`] (1 %):
//!   `(canary − stable) / max(stable, 1 %)`. So when stable fails less than 1 % of requests
//!   (often 0 %), the effect is the increase in percentage points: `allowedIncrease = 0.1`
//!   tolerates +0.1 pp, and 0 % against 5 % is an effect of 5.0.
//! - **Verdict.** Significant means `p < 1 − confidence`. Fail: significant and the effect is
//!   above `allowedIncrease`. Marginal: significant and the effect is above half of
//!   `allowedIncrease`. Otherwise Pass — in particular a canary that is better (negative
//!   effect) always passes, and so does one whose difference is not significant.

use std::cmp::Ordering;
use std::fmt;

/// The largest number of samples per version the test ranks; more are down-sampled.
pub const MAX_SAMPLES_PER_SIDE: usize = 5000;

/// The failure rate below which the errors effect is measured in percentage points rather than
/// relative to stable's rate (see the module docs).
pub const ERROR_RATE_FLOOR: f64 = 0.01;

/// The share of `allowedIncrease` above which a significant difference is Marginal.
pub const MARGINAL_SHARE: f64 = 0.5;

/// The continuity correction applied to U before the normal approximation.
const CONTINUITY_CORRECTION: f64 = 0.5;

/// The judge's verdict, the value bound to `result` in the metric's conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No significant difference, the canary is better, or it is worse by no more than half of
    /// `allowedIncrease`.
    Pass,
    /// Significantly worse, by more than half of `allowedIncrease` but not more than all of it:
    /// a human should look.
    Marginal,
    /// Significantly worse, by more than `allowedIncrease`.
    Fail,
}

impl Verdict {
    /// `Pass`, `Marginal` or `Fail`, the text the default conditions compare with.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "Pass",
            Verdict::Marginal => "Marginal",
            Verdict::Fail => "Fail",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// The result of a Mann–Whitney U test of canary against stable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitney {
    /// U of the canary: how many (canary, stable) pairs have the canary higher, ties counting ½.
    pub u: f64,
    /// The normal deviate, positive when the canary tends to be higher.
    pub z: f64,
    /// Two-sided p-value.
    pub p_value: f64,
    /// Stable samples ranked (after down-sampling).
    pub stable_samples: usize,
    /// Canary samples ranked (after down-sampling).
    pub canary_samples: usize,
}

/// Everything the judge computed, for the verdict and for the measurement's message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judgement {
    /// The test.
    pub test: MannWhitney,
    /// Stable's figure: median latency in seconds, or failure rate (0–1).
    pub stable_figure: f64,
    /// The canary's figure, like `stable_figure`.
    pub canary_figure: f64,
    /// The effect size (see the module docs); positive means the canary is worse.
    pub effect: f64,
    /// The verdict.
    pub verdict: Verdict,
}

/// What the judge is asked: the confidence and the tolerated increase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    /// Confidence level of the test, e.g. 0.95.
    pub confidence: f64,
    /// Largest tolerated effect, e.g. 0.1.
    pub allowed_increase: f64,
}

/// The Mann–Whitney U test of `canary` against `stable` (two-sided, normal approximation with
/// tie and continuity corrections). Non-finite samples are ignored. With no samples on a side,
/// or every sample equal, the p-value is 1.
pub fn mann_whitney(stable: &[f64], canary: &[f64]) -> MannWhitney {
    let stable = prepared(stable);
    let canary = prepared(canary);
    let (stable_count, canary_count) = (stable.len(), canary.len());
    let not_different = |u: f64| MannWhitney {
        u,
        z: 0.0,
        p_value: 1.0,
        stable_samples: stable_count,
        canary_samples: canary_count,
    };
    if stable_count == 0 || canary_count == 0 {
        return not_different(0.0);
    }
    // Rank the pooled samples; `true` marks a canary sample.
    let mut pooled: Vec<(f64, bool)> = stable
        .iter()
        .map(|value| (*value, false))
        .chain(canary.iter().map(|value| (*value, true)))
        .collect();
    pooled.sort_by(|left, right| left.0.partial_cmp(&right.0).unwrap_or(Ordering::Equal));
    let total = pooled.len();
    let mut canary_rank_sum = 0.0;
    let mut tie_term = 0.0;
    let mut start = 0;
    while start < total {
        let mut end = start + 1;
        while end < total && pooled[end].0 == pooled[start].0 {
            end += 1;
        }
        // Ranks are 1-based; the tied run start..end shares the average of its ranks.
        let tied = (end - start) as f64;
        let average_rank = (start + 1 + end) as f64 / 2.0;
        let canaries = pooled[start..end]
            .iter()
            .filter(|(_, canary)| *canary)
            .count();
        canary_rank_sum += average_rank * canaries as f64;
        tie_term += tied * tied * tied - tied;
        start = end;
    }
    let (m, n, total) = (stable_count as f64, canary_count as f64, total as f64);
    let u = canary_rank_sum - n * (n + 1.0) / 2.0;
    let mean = m * n / 2.0;
    let variance = m * n / 12.0 * ((total + 1.0) - tie_term / (total * (total - 1.0)));
    if variance <= 0.0 || !variance.is_finite() {
        return not_different(u);
    }
    let deviation = u - mean;
    let corrected = (deviation.abs() - CONTINUITY_CORRECTION).max(0.0);
    let z = corrected.copysign(deviation) / variance.sqrt();
    let p_value = erfc(z.abs() / std::f64::consts::SQRT_2).clamp(0.0, 1.0);
    MannWhitney {
        u,
        z,
        p_value,
        stable_samples: stable_count,
        canary_samples: canary_count,
    }
}

/// Judge latency samples (seconds): the effect is the relative increase of the median.
pub fn judge_latency(stable: &[f64], canary: &[f64], bounds: Bounds) -> Judgement {
    let test = mann_whitney(stable, canary);
    let stable_figure = median(stable);
    let canary_figure = median(canary);
    let effect = relative_increase(stable_figure, canary_figure);
    Judgement {
        test,
        stable_figure,
        canary_figure,
        effect,
        verdict: decide(test.p_value, effect, bounds),
    }
}

/// Judge failures: `(failures, requests)` of each version. The effect is the increase of the
/// failure rate relative to stable's, measured in percentage points below [`ERROR_RATE_FLOOR`].
pub fn judge_errors(stable: (u64, u64), canary: (u64, u64), bounds: Bounds) -> Judgement {
    let test = mann_whitney(
        &binary_samples(stable.0, stable.1),
        &binary_samples(canary.0, canary.1),
    );
    let rate = |(failures, requests): (u64, u64)| {
        if requests == 0 {
            0.0
        } else {
            failures.min(requests) as f64 / requests as f64
        }
    };
    let stable_figure = rate(stable);
    let canary_figure = rate(canary);
    let effect = (canary_figure - stable_figure) / stable_figure.max(ERROR_RATE_FLOOR);
    Judgement {
        test,
        stable_figure,
        canary_figure,
        effect,
        verdict: decide(test.p_value, effect, bounds),
    }
}

/// The verdict from the p-value and the effect (see the module docs).
pub fn decide(p_value: f64, effect: f64, bounds: Bounds) -> Verdict {
    let significant = p_value < 1.0 - bounds.confidence;
    // A NaN effect (no figures) is not "worse", so it passes like a better canary.
    let worse = effect.partial_cmp(&0.0) == Some(Ordering::Greater);
    if !significant || !worse {
        return Verdict::Pass;
    }
    if effect > bounds.allowed_increase {
        Verdict::Fail
    } else if effect > bounds.allowed_increase * MARGINAL_SHARE {
        Verdict::Marginal
    } else {
        Verdict::Pass
    }
}

/// The median of the finite samples (NaN when there are none).
pub fn median(samples: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted.sort_by(|left, right| left.partial_cmp(right).unwrap_or(Ordering::Equal));
    let middle = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    }
}

/// `(canary − stable) / stable`; a stable figure of zero makes any increase infinite.
fn relative_increase(stable: f64, canary: f64) -> f64 {
    if !(stable.is_finite() && canary.is_finite()) {
        return 0.0;
    }
    if stable > 0.0 {
        (canary - stable) / stable
    } else if canary > stable {
        f64::INFINITY
    } else {
        0.0
    }
}

/// `failures` ones and `requests − failures` zeros, already in order.
fn binary_samples(failures: u64, requests: u64) -> Vec<f64> {
    let failures = failures.min(requests);
    let zeros = usize::try_from(requests - failures).unwrap_or(usize::MAX);
    let ones = usize::try_from(failures).unwrap_or(usize::MAX);
    // Only the proportion matters to the test, so a side is built at most at the size the test
    // ranks, keeping the proportion exact to one sample.
    let (zeros, ones) = scale_to(zeros, ones, MAX_SAMPLES_PER_SIDE);
    let mut samples = vec![0.0; zeros];
    samples.resize(zeros + ones, 1.0);
    samples
}

/// `(a, b)` scaled down proportionally so that their sum is at most `limit`.
fn scale_to(a: usize, b: usize, limit: usize) -> (usize, usize) {
    let sum = a.saturating_add(b);
    if sum <= limit {
        return (a, b);
    }
    let scaled_b = ((b as f64) * (limit as f64) / (sum as f64)).round() as usize;
    (limit - scaled_b.min(limit), scaled_b.min(limit))
}

/// The finite samples, sorted, and down-sampled to at most [`MAX_SAMPLES_PER_SIDE`] evenly
/// spaced order statistics.
fn prepared(samples: &[f64]) -> Vec<f64> {
    let mut sorted: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    sorted.sort_by(|left, right| left.partial_cmp(right).unwrap_or(Ordering::Equal));
    if sorted.len() <= MAX_SAMPLES_PER_SIDE {
        return sorted;
    }
    let length = sorted.len();
    (0..MAX_SAMPLES_PER_SIDE)
        .map(|index| {
            // The middle of each of MAX_SAMPLES_PER_SIDE equal slices of the order statistics.
            let position = (2 * index + 1) * length / (2 * MAX_SAMPLES_PER_SIDE);
            sorted[position.min(length - 1)]
        })
        .collect()
}

/// The complementary error function, with a fractional error below 1.2e-7 everywhere
/// (Chebyshev fitting, Numerical Recipes §6.2) — far finer than any decision here needs.
pub fn erfc(x: f64) -> f64 {
    const COEFFICIENTS: [f64; 10] = [
        -1.265_512_23,
        1.000_023_68,
        0.374_091_96,
        0.096_784_18,
        -0.186_288_06,
        0.278_868_07,
        -1.135_203_98,
        1.488_515_87,
        -0.822_152_23,
        0.170_872_77,
    ];
    let magnitude = x.abs();
    let t = 1.0 / (1.0 + 0.5 * magnitude);
    let polynomial = COEFFICIENTS
        .iter()
        .rev()
        .fold(0.0, |accumulated, coefficient| {
            accumulated * t + coefficient
        });
    let value = t * (-magnitude * magnitude + polynomial).exp();
    if x >= 0.0 {
        value
    } else {
        2.0 - value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erfc_matches_table_values() {
        // Abramowitz & Stegun table 7.1.
        for (x, expected) in [
            (0.0, 1.0),
            (0.5, 0.479_500_122),
            (1.0, 0.157_299_207),
            (2.0, 0.004_677_735),
            (-1.0, 1.842_700_793),
        ] {
            assert!((erfc(x) - expected).abs() < 1e-6, "erfc({x}) = {}", erfc(x));
        }
    }

    #[test]
    fn down_sampling_keeps_the_shape() {
        let samples: Vec<f64> = (0..20_000).map(f64::from).collect();
        let prepared = prepared(&samples);
        assert_eq!(prepared.len(), MAX_SAMPLES_PER_SIDE);
        assert!((median(&prepared) - median(&samples)).abs() < 5.0);
        assert_eq!(scale_to(9_900, 100, 5_000), (4_950, 50));
    }
}
