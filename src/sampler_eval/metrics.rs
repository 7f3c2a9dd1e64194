//! Scores of a sampler against the ground truth: recall of interesting traces, accuracy of
//! weighted estimates, completeness.

use serde::Serialize;

use super::traffic::Truth;

/// What one sampler kept, per trace.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    /// Spans kept per trace.
    pub(crate) kept_spans: Vec<u32>,
    /// `adjusted_count` of the kept root span (0 when the root was not kept).
    pub(crate) root_weight: Vec<f64>,
}

impl Outcome {
    /// Trace `i` was kept (some of its spans were).
    pub(crate) fn kept(&self, i: usize) -> bool {
        self.kept_spans[i] > 0
    }

    /// Traces kept.
    pub(crate) fn kept_traces(&self) -> u64 {
        self.kept_spans.iter().filter(|&&n| n > 0).count() as u64
    }

    /// Spans kept.
    pub(crate) fn kept_span_total(&self) -> u64 {
        self.kept_spans.iter().map(|&n| u64::from(n)).sum()
    }
}

/// Recall of one class of traces by both samplers.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Recall {
    /// The class, as an identifier.
    pub(crate) key: String,
    /// The class, in words.
    pub(crate) name: String,
    /// Traces in the class.
    pub(crate) traces: u64,
    /// Share kept by the tail sampler (None for an empty class).
    pub(crate) tail: Option<f64>,
    /// Share kept by uniform sampling.
    pub(crate) uniform: Option<f64>,
    /// `tail / uniform`.
    pub(crate) ratio: Option<f64>,
}

/// Recall of the traces `member` selects (traces dropped by a force-drop rule never count).
pub(crate) fn recall(
    key: &str,
    name: &str,
    truths: &[Truth],
    tail: &Outcome,
    uniform: &Outcome,
    member: impl Fn(&Truth) -> bool,
) -> Recall {
    let (mut n, mut t, mut u) = (0u64, 0u64, 0u64);
    for (i, truth) in truths.iter().enumerate() {
        if truth.force_dropped || !member(truth) {
            continue;
        }
        n += 1;
        t += u64::from(tail.kept(i));
        u += u64::from(uniform.kept(i));
    }
    let share = |k: u64| (n > 0).then(|| k as f64 / n as f64);
    let (tail, uniform) = (share(t), share(u));
    let ratio = match (tail, uniform) {
        (Some(t), Some(u)) if u > 0.0 => Some(t / u),
        _ => None,
    };
    Recall {
        key: key.to_owned(),
        name: name.to_owned(),
        traces: n,
        tail,
        uniform,
        ratio,
    }
}

/// A true value and both samplers' estimates of it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Estimate {
    /// The true value.
    pub(crate) truth: f64,
    /// The tail sampler's estimate.
    pub(crate) tail: f64,
    /// Uniform sampling's estimate.
    pub(crate) uniform: f64,
    /// `tail / truth - 1` (None when the truth is 0).
    pub(crate) tail_rel_err: Option<f64>,
    /// `uniform / truth - 1`.
    pub(crate) uniform_rel_err: Option<f64>,
}

impl Estimate {
    fn new(truth: f64, tail: f64, uniform: f64) -> Self {
        let rel = |e: f64| (truth != 0.0).then(|| e / truth - 1.0);
        Self {
            truth,
            tail,
            uniform,
            tail_rel_err: rel(tail),
            uniform_rel_err: rel(uniform),
        }
    }
}

/// Weighted estimates for the traces of one root service (or route).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Accuracy {
    /// Root service (or route).
    pub(crate) name: String,
    /// True root spans (requests).
    pub(crate) traces: u64,
    /// Requests: Σ adjusted_count over kept roots.
    pub(crate) count: Estimate,
    /// Share of errored roots (weighted).
    pub(crate) error_rate: Estimate,
    /// p99 root duration in milliseconds (weighted).
    pub(crate) p99_ms: Estimate,
}

/// Mean (weighted by true traffic) and max of |relative error| over groups.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct ErrorSummary {
    /// Tail sampler, traffic-weighted mean.
    pub(crate) tail_mean: f64,
    /// Tail sampler, max.
    pub(crate) tail_max: f64,
    /// Uniform sampling, traffic-weighted mean.
    pub(crate) uniform_mean: f64,
    /// Uniform sampling, max.
    pub(crate) uniform_max: f64,
}

/// [`ErrorSummary`] of each estimate.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct AccuracySummary {
    /// Request counts.
    pub(crate) count: ErrorSummary,
    /// Error rates.
    pub(crate) error_rate: ErrorSummary,
    /// p99 latencies.
    pub(crate) p99: ErrorSummary,
}

/// Estimates per group (`group` of a trace; traces dropped by a force-drop rule are left out:
/// they are not sampled, so not estimable), largest group first.
pub(crate) fn accuracy(
    truths: &[Truth],
    names: &[String],
    group: impl Fn(&Truth) -> u16,
    tail: &Outcome,
    uniform: &Outcome,
) -> Vec<Accuracy> {
    let mut groups: Vec<Vec<usize>> = vec![Vec::new(); names.len()];
    for (i, t) in truths.iter().enumerate() {
        if !t.force_dropped {
            groups[usize::from(group(t))].push(i);
        }
    }
    let mut out: Vec<Accuracy> = groups
        .iter()
        .enumerate()
        .filter(|(_, g)| !g.is_empty())
        .map(|(gi, members)| {
            let n = members.len() as f64;
            let errors = members.iter().filter(|&&i| truths[i].root_error).count() as f64;
            let durations = |w: &dyn Fn(usize) -> f64| -> Vec<(i64, f64)> {
                members
                    .iter()
                    .map(|&i| (truths[i].root_duration, w(i)))
                    .filter(|&(_, w)| w > 0.0)
                    .collect()
            };
            let est = |o: &Outcome| {
                let w = |i: usize| o.root_weight[i];
                let count: f64 = members.iter().map(|&i| w(i)).sum();
                let errs: f64 = members
                    .iter()
                    .filter(|&&i| truths[i].root_error)
                    .map(|&i| w(i))
                    .sum();
                let rate = if count > 0.0 { errs / count } else { 0.0 };
                let p99 = quantile(durations(&w), 0.99).unwrap_or(0.0);
                (count, rate, p99)
            };
            let (tc, tr, tp) = est(tail);
            let (uc, ur, up) = est(uniform);
            let true_p99 = quantile(durations(&|_| 1.0), 0.99).unwrap_or(0.0);
            let ms = 1e-6;
            Accuracy {
                name: names[gi].clone(),
                traces: members.len() as u64,
                count: Estimate::new(n, tc, uc),
                error_rate: Estimate::new(errors / n, tr, ur),
                p99_ms: Estimate::new(true_p99 * ms, tp * ms, up * ms),
            }
        })
        .collect();
    out.sort_by(|a, b| b.traces.cmp(&a.traces).then_with(|| a.name.cmp(&b.name)));
    out
}

/// Traffic-weighted mean and max |relative error| of each estimate.
pub(crate) fn summarize(rows: &[Accuracy]) -> AccuracySummary {
    let summary = |pick: &dyn Fn(&Accuracy) -> &Estimate| {
        let mut s = ErrorSummary::default();
        let (mut wt, mut wu) = (0.0, 0.0);
        for r in rows {
            let e = pick(r);
            let w = r.traces as f64;
            if let Some(x) = e.tail_rel_err {
                s.tail_mean += w * x.abs();
                s.tail_max = s.tail_max.max(x.abs());
                wt += w;
            }
            if let Some(x) = e.uniform_rel_err {
                s.uniform_mean += w * x.abs();
                s.uniform_max = s.uniform_max.max(x.abs());
                wu += w;
            }
        }
        if wt > 0.0 {
            s.tail_mean /= wt;
        }
        if wu > 0.0 {
            s.uniform_mean /= wu;
        }
        s
    };
    AccuracySummary {
        count: summary(&|r| &r.count),
        error_rate: summary(&|r| &r.error_rate),
        p99: summary(&|r| &r.p99_ms),
    }
}

/// The weighted `q`-quantile: the smallest value whose cumulative weight reaches `q` of the
/// total (with unit weights, the nearest-rank quantile).
pub(crate) fn quantile(mut values: Vec<(i64, f64)>, q: f64) -> Option<f64> {
    values.sort_by_key(|v| v.0);
    let total: f64 = values.iter().map(|v| v.1).sum();
    let target = q * total * (1.0 - 1e-12);
    let mut cum = 0.0;
    for &(v, w) in &values {
        cum += w;
        if cum >= target {
            return Some(v as f64);
        }
    }
    values.last().map(|v| v.0 as f64)
}

/// Trace completeness under the tail sampler.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Completeness {
    /// Traces kept.
    pub(crate) kept_traces: u64,
    /// Of which every span was kept.
    pub(crate) complete_traces: u64,
    /// `complete_traces / kept_traces`.
    pub(crate) fraction: f64,
    /// Traces that had spans delivered late.
    pub(crate) late_traces: u64,
    /// Of which kept.
    pub(crate) late_kept: u64,
    /// Of which kept with every span, the late ones included.
    pub(crate) late_complete: u64,
    /// Late spans kept through the decision cache.
    pub(crate) late_spans_kept: u64,
}

/// How many kept traces were kept whole.
pub(crate) fn completeness(truths: &[Truth], tail: &Outcome, late_spans_kept: u64) -> Completeness {
    let mut c = Completeness {
        kept_traces: 0,
        complete_traces: 0,
        fraction: 0.0,
        late_traces: 0,
        late_kept: 0,
        late_complete: 0,
        late_spans_kept,
    };
    for (i, t) in truths.iter().enumerate() {
        let kept = tail.kept(i);
        let complete = tail.kept_spans[i] == t.spans;
        c.kept_traces += u64::from(kept);
        c.complete_traces += u64::from(kept && complete);
        if t.late_spans > 0 {
            c.late_traces += 1;
            c.late_kept += u64::from(kept);
            c.late_complete += u64::from(kept && complete);
        }
    }
    c.fraction = if c.kept_traces > 0 {
        c.complete_traces as f64 / c.kept_traces as f64
    } else {
        1.0
    };
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_quantile_matches_nearest_rank_with_unit_weights() {
        let v: Vec<(i64, f64)> = (1..=100).map(|i| (i, 1.0)).collect();
        assert_eq!(quantile(v.clone(), 0.99), Some(99.0));
        assert_eq!(quantile(v, 0.5), Some(50.0));
        // One sample standing for 10 outweighs nine others.
        let w = vec![(1, 1.0), (2, 1.0), (3, 10.0)];
        assert_eq!(quantile(w, 0.5), Some(3.0));
        assert_eq!(quantile(Vec::new(), 0.5), None);
    }
}
