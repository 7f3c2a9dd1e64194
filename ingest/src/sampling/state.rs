//! The sampler's remembered state: the consistent random value of a trace, the decision caches
//! for late spans, and the adaptive (budgeted) probabilities of the middle band.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::prepare::TraceId;

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn hash128(id: TraceId, seed: u64) -> u64 {
    mix64((id >> 64) as u64 ^ mix64(id as u64 ^ seed))
}

/// The trace's uniform value in [0, 1): the trace is kept at probability p iff `r < p`.
///
/// It is a fixed hash of all 16 bytes of the trace id, the same in every process and version,
/// so replicas and WAL replays agree. It is deliberately not the raw low 56 bits that W3C
/// consistent samplers compare against `th`: upstream and tracelake decisions are then
/// independent, and their probabilities multiply.
pub fn trace_random(id: TraceId) -> f64 {
    (hash128(id, 0x7472_6163_656c_616b) >> 11) as f64 / (1u64 << 53) as f64
}

/// A 64-bit fingerprint of (tenant, trace), for the dropped-trace set.
pub(crate) fn fingerprint(tenant: u32, id: TraceId) -> u64 {
    hash128(id, 0x6472_6f70 ^ (u64::from(tenant) << 32))
}

/// A kept decision, remembered for the trace's late spans.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Kept {
    pub(crate) p: f64,
    pub(crate) rule: Arc<str>,
}

/// Bounded memory of recent decisions, in two generations: when the young one is full it
/// becomes the old one and the previous old one is forgotten (an approximate LRU, refreshed on
/// hit).
#[derive(Debug)]
pub(crate) struct DecisionCache {
    half: usize,
    kept: [HashMap<(u32, TraceId), Kept>; 2],
    dropped_half: usize,
    dropped: [HashSet<u64>; 2],
}

impl DecisionCache {
    pub(crate) fn new(kept: usize, dropped: usize) -> Self {
        Self {
            half: (kept / 2).max(1),
            kept: [HashMap::new(), HashMap::new()],
            dropped_half: (dropped / 2).max(1),
            dropped: [HashSet::new(), HashSet::new()],
        }
    }

    pub(crate) fn keep(&mut self, tenant: u32, id: TraceId, kept: Kept) {
        if self.kept[0].len() >= self.half {
            self.kept.swap(0, 1);
            self.kept[0].clear();
        }
        self.kept[0].insert((tenant, id), kept);
    }

    pub(crate) fn drop_trace(&mut self, tenant: u32, id: TraceId) {
        if self.dropped[0].len() >= self.dropped_half {
            self.dropped.swap(0, 1);
            self.dropped[0].clear();
        }
        self.dropped[0].insert(fingerprint(tenant, id));
    }

    /// The kept decision of a trace, if remembered.
    pub(crate) fn kept(&mut self, tenant: u32, id: TraceId) -> Option<Kept> {
        if let Some(k) = self.kept[0].get(&(tenant, id)) {
            return Some(k.clone());
        }
        let k = self.kept[1].remove(&(tenant, id))?;
        self.keep(tenant, id, k.clone());
        Some(k)
    }

    /// True if the trace was (very probably) dropped.
    pub(crate) fn was_dropped(&self, tenant: u32, id: TraceId) -> bool {
        let f = fingerprint(tenant, id);
        self.dropped[0].contains(&f) || self.dropped[1].contains(&f)
    }

    pub(crate) fn sizes(&self) -> (usize, usize) {
        (
            self.kept[0].len() + self.kept[1].len(),
            self.dropped[0].len() + self.dropped[1].len(),
        )
    }
}

/// An adaptive key: (root service, root route, trace status class).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// Root span's `service.name`.
    pub service: String,
    /// Root span's route subject.
    pub route: String,
    /// Trace status class (`error`, `2xx`, ...).
    pub class: &'static str,
}

#[derive(Debug, Default)]
struct KeyState {
    /// Middle-band spans seen this interval.
    count: f64,
    /// EMA of middle-band spans per second.
    rate: f64,
    p: f64,
}

/// Middle-band probabilities that meet a kept-spans-per-second budget, following Refinery's
/// EMA throughput sampler: per key, an exponential moving average of traffic; the budget left
/// after the high band (never reduced) and the low band is shared among keys in proportion to
/// the logarithm of their traffic, so rare keys keep a much higher probability than busy ones.
#[derive(Debug)]
pub(crate) struct Adaptive {
    budget: Option<f64>,
    interval: Duration,
    alpha: f64,
    default_p: f64,
    floor: f64,
    last: Instant,
    keys: HashMap<Key, KeyState>,
    /// Kept spans outside the middle band this interval, and their EMA per second.
    other_count: f64,
    other_rate: f64,
    /// Kept spans per second, all bands (EMA), for display.
    pub(crate) kept_rate: f64,
    kept_count: f64,
    table: Arc<ProbTable>,
}

/// The current middle-band probabilities.
#[derive(Debug, Clone, Default)]
pub struct ProbTable {
    /// Probability for keys not in `by_key`.
    pub default_p: f64,
    /// Per key.
    pub by_key: HashMap<Key, f64>,
}

impl ProbTable {
    /// The middle-band probability of `key`.
    pub fn get(&self, key: &Key) -> f64 {
        self.by_key.get(key).copied().unwrap_or(self.default_p)
    }
}

impl Adaptive {
    pub(crate) fn new(
        budget: Option<f64>,
        interval: Duration,
        mid: f64,
        floor: f64,
        now: Instant,
    ) -> Self {
        Self {
            budget,
            interval,
            alpha: 0.5,
            default_p: mid,
            floor,
            last: now,
            keys: HashMap::new(),
            other_count: 0.0,
            other_rate: 0.0,
            kept_rate: 0.0,
            kept_count: 0.0,
            table: Arc::new(ProbTable {
                default_p: mid,
                by_key: HashMap::new(),
            }),
        }
    }

    /// New settings from a reload; traffic history is kept.
    pub(crate) fn reconfigure(
        &mut self,
        budget: Option<f64>,
        interval: Duration,
        mid: f64,
        floor: f64,
    ) {
        self.budget = budget;
        self.interval = interval;
        self.default_p = mid;
        self.floor = floor;
        if budget.is_none() {
            self.table = Arc::new(ProbTable {
                default_p: mid,
                by_key: HashMap::new(),
            });
        }
    }

    pub(crate) fn table(&self) -> Arc<ProbTable> {
        Arc::clone(&self.table)
    }

    pub(crate) fn budget(&self) -> Option<f64> {
        self.budget
    }

    /// True when the kept spans outside the middle band alone exceed the budget.
    pub(crate) fn infeasible(&self) -> bool {
        self.budget.is_some_and(|b| self.other_rate > b)
    }

    /// Records a decided trace: `mid` when it was in the middle band (whether kept or not).
    pub(crate) fn observe(&mut self, key: Option<&Key>, spans: usize, kept: bool) {
        let n = spans as f64;
        if kept {
            self.kept_count += n;
        }
        match key {
            Some(k) => {
                if let Some(s) = self.keys.get_mut(k) {
                    s.count += n;
                } else {
                    self.keys.insert(
                        k.clone(),
                        KeyState {
                            count: n,
                            ..KeyState::default()
                        },
                    );
                }
            }
            None if kept => self.other_count += n,
            None => {}
        }
    }

    /// Recomputes the probabilities once per interval. Returns true when it did.
    pub(crate) fn adjust(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        if elapsed < self.interval {
            return false;
        }
        self.last = now;
        let secs = elapsed.as_secs_f64();
        let a = self.alpha;
        let ema = |old: f64, count: f64| a * (count / secs) + (1.0 - a) * old;
        self.other_rate = ema(self.other_rate, self.other_count);
        self.kept_rate = ema(self.kept_rate, self.kept_count);
        self.other_count = 0.0;
        self.kept_count = 0.0;
        for s in self.keys.values_mut() {
            s.rate = ema(s.rate, s.count);
            s.count = 0.0;
        }
        self.keys.retain(|_, s| s.rate > 1e-3);
        let Some(budget) = self.budget else {
            return true;
        };
        let available = (budget - self.other_rate).max(0.0);
        let mut keys: Vec<(&Key, &mut KeyState)> = self.keys.iter_mut().collect();
        // Water-filling in order of traffic: a key whose log share exceeds its traffic is kept
        // whole, and what it leaves goes to the busier keys.
        keys.sort_by(|a, b| a.1.rate.total_cmp(&b.1.rate));
        let mut remaining = available;
        let mut log_sum: f64 = keys.iter().map(|(_, s)| (1.0 + s.rate).ln()).sum();
        for (_, s) in keys.iter_mut() {
            let log = (1.0 + s.rate).ln();
            let share = if log_sum > 0.0 {
                remaining * log / log_sum
            } else {
                0.0
            };
            log_sum -= log;
            if share >= s.rate {
                s.p = 1.0;
                remaining -= s.rate;
            } else {
                s.p = (share / s.rate).max(self.floor);
                remaining -= share;
            }
        }
        // A key not seen yet gets what a key with the smallest traffic would.
        let default_p = keys.first().map_or(1.0, |(_, s)| s.p).max(self.floor);
        self.table = Arc::new(ProbTable {
            default_p,
            by_key: self.keys.iter().map(|(k, s)| (k.clone(), s.p)).collect(),
        });
        true
    }

    /// Per key: traffic EMA (spans/s) and probability, busiest first.
    pub(crate) fn snapshot(&self, limit: usize) -> Vec<(Key, f64, f64)> {
        let mut v: Vec<_> = self
            .keys
            .iter()
            .map(|(k, s)| (k.clone(), s.rate, self.table.get(k)))
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v.truncate(limit);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn trace_random_is_fixed_and_uniform() {
        // Fixed across versions: these values must never change (replicas and replays agree).
        assert_eq!(trace_random(0), trace_random(0));
        let golden = trace_random(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10);
        assert!((golden - trace_random(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10)).abs() == 0.0);
        let n = 200_000u128;
        let mut buckets = [0u32; 10];
        for i in 0..n {
            let id = i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834);
            let r = trace_random(id);
            assert!((0.0..1.0).contains(&r));
            buckets[(r * 10.0) as usize] += 1;
        }
        for b in buckets {
            // Expected 20,000 each; 5 sigma is about 670.
            assert!((b as i64 - 20_000).abs() < 700, "{buckets:?}");
        }
    }

    proptest! {
        #[test]
        fn decisions_are_monotone_in_p(id in any::<u128>(), p in 0.0f64..1.0, q in 0.0f64..1.0) {
            // Kept at p implies kept at any q >= p: consistent sampling nests.
            let r = trace_random(id);
            if r < p && q >= p {
                prop_assert!(r < q);
            }
        }
    }

    #[test]
    fn cache_remembers_recent_and_forgets_old() {
        let mut c = DecisionCache::new(4, 4);
        let k = |p| Kept {
            p,
            rule: Arc::from("mid"),
        };
        c.keep(0, 1, k(0.1));
        c.keep(0, 2, k(0.2));
        assert_eq!(c.kept(0, 1), Some(k(0.1)));
        assert_eq!(c.kept(1, 1), None, "tenants are separate");
        for id in 10..20 {
            c.keep(0, id, k(1.0));
        }
        assert_eq!(c.kept(0, 2), None);
        c.drop_trace(0, 5);
        assert!(c.was_dropped(0, 5));
        assert!(!c.was_dropped(0, 6));
        assert!(!c.was_dropped(1, 5));
        let (kept, dropped) = c.sizes();
        assert!(kept <= 4 && dropped == 1);
    }

    fn key(s: &str) -> Key {
        Key {
            service: s.into(),
            route: "/".into(),
            class: "2xx",
        }
    }

    #[test]
    fn budget_favours_rare_keys_and_is_met() {
        let t0 = Instant::now();
        let mut a = Adaptive::new(Some(1000.0), Duration::from_secs(1), 0.1, 0.0, t0);
        for step in 1..=20 {
            // 100k spans/s on a busy key, 50/s on a rare one, 500/s forced keeps.
            a.observe(Some(&key("busy")), 100_000, false);
            a.observe(Some(&key("rare")), 50, false);
            a.observe(None, 500, true);
            assert!(a.adjust(t0 + Duration::from_secs(step)));
        }
        let t = a.table();
        let (busy, rare) = (t.get(&key("busy")), t.get(&key("rare")));
        assert_eq!(rare, 1.0);
        let kept = busy * 100_000.0 + rare * 50.0 + 500.0;
        assert!((kept - 1000.0).abs() < 5.0, "kept {kept}/s, busy p {busy}");
    }

    #[test]
    fn high_band_is_never_reduced_budget_only_squeezes_the_middle() {
        let t0 = Instant::now();
        let mut a = Adaptive::new(Some(100.0), Duration::from_secs(1), 0.1, 0.001, t0);
        for step in 1..=10 {
            a.observe(Some(&key("busy")), 10_000, false);
            a.observe(None, 5_000, true);
            a.adjust(t0 + Duration::from_secs(step));
        }
        // Over budget from forced keeps alone: the middle band drops to its floor.
        assert_eq!(a.table().get(&key("busy")), 0.001);
    }
}
