//! The `[sampling]` config section, as written, and its validation into [`Rules`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::rules::{Condition, ForceKeepRule, RouteRule, Rules};

/// `[sampling]`: how traces are weighted and which are kept. See `tracelake config example`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingConfig {
    /// Off by default: every span is kept with `adjusted_count = 1`.
    pub enabled: bool,
    /// How long a trace stays buffered after its last span before it is decided.
    #[serde(with = "humantime_serde")]
    pub decision_wait: Duration,
    /// Hard cap on how long a trace is buffered after its first span.
    #[serde(with = "humantime_serde")]
    pub max_trace_wait: Duration,
    /// Most traces held undecided; beyond it the oldest are decided early.
    pub max_traces: usize,
    /// Most span bytes held undecided; beyond it the oldest traces are decided early.
    pub max_buffer_bytes: usize,
    /// Weight above which every trace is kept.
    pub high_threshold: f64,
    /// Weight above which (up to `high_threshold`) traces are kept with `mid_probability`.
    pub low_threshold: f64,
    /// Keep probability of the middle band (the starting point when a budget is set).
    pub mid_probability: f64,
    /// Keep probability at or below `low_threshold`. 0 drops them all.
    pub low_probability: f64,
    /// A span longer than this is "slow" (a route rule can override it).
    #[serde(with = "humantime_serde")]
    pub slow_threshold: Duration,
    /// Adapt the middle band's probability so that about this many spans per second are kept.
    pub budget_spans_per_sec: Option<f64>,
    /// How often the adaptive probabilities are recomputed.
    #[serde(with = "humantime_serde")]
    pub adjust_interval: Duration,
    /// Decisions remembered for late spans: kept trace ids (exact).
    pub kept_cache_size: usize,
    /// Decisions remembered for late spans: dropped trace ids (8-byte fingerprints).
    pub dropped_cache_size: usize,
    /// Span attributes holding an upstream sample rate N (the span stands for N spans).
    pub upstream_rate_attributes: Vec<String>,
    /// Weights of the three scores in a span's weight.
    pub dimension_weights: DimensionWeights,
    /// Status scores by key: `1xx`..`5xx` (HTTP status class), `error`, `ok`, `unset` (OTLP
    /// span status), `slow`. A span's status score is the highest that applies.
    pub status_scores: BTreeMap<String, f64>,
    /// Route rules; the first whose regex matches the span's `http.route` (else `url.path`,
    /// else its name) gives the route score.
    pub routes: Vec<RouteConfig>,
    /// Service SLA tiers.
    pub tiers: TiersConfig,
    /// Conditions that keep the whole trace when any span matches.
    pub force_keep: Vec<ForceKeepConfig>,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            decision_wait: Duration::from_secs(5),
            max_trace_wait: Duration::from_secs(30),
            max_traces: 100_000,
            max_buffer_bytes: 256 * 1024 * 1024,
            high_threshold: 0.8,
            low_threshold: 0.3,
            mid_probability: 0.1,
            low_probability: 0.001,
            slow_threshold: Duration::from_secs(1),
            budget_spans_per_sec: None,
            adjust_interval: Duration::from_secs(1),
            kept_cache_size: 100_000,
            dropped_cache_size: 1_000_000,
            upstream_rate_attributes: vec!["SampleRate".into()],
            dimension_weights: DimensionWeights::default(),
            status_scores: [("5xx", 1.0), ("4xx", 0.4), ("error", 1.0), ("slow", 1.0)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            routes: Vec::new(),
            tiers: TiersConfig::default(),
            force_keep: vec![ForceKeepConfig {
                when: "status = error".into(),
                name: None,
            }],
        }
    }
}

/// `[sampling.dimension_weights]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DimensionWeights {
    /// Weight of the status score.
    pub status: f64,
    /// Weight of the route score.
    pub route: f64,
    /// Weight of the tier score.
    pub tier: f64,
}

impl Default for DimensionWeights {
    fn default() -> Self {
        Self {
            status: 0.5,
            route: 0.3,
            tier: 0.2,
        }
    }
}

/// What a route rule forces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Force {
    /// Keep the whole trace.
    Keep,
    /// Drop the whole trace, unless a span of it errored (OTLP ERROR or HTTP 5xx) or a
    /// `force_keep` rule matches.
    Drop,
}

/// `[[sampling.routes]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Regular expression (Rust `regex` syntax) over the route.
    pub regex: String,
    /// Route score in [0, 1].
    #[serde(default)]
    pub score: f64,
    /// "Slow" threshold for spans of this route.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub slow_threshold: Option<Duration>,
    /// Force the trace's fate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<Force>,
    /// Name recorded in `sampling_rule`; defaults to `route:<regex>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `[sampling.tiers]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TiersConfig {
    /// Tier of services not listed in `services`.
    pub default: String,
    /// Score of each tier.
    pub scores: BTreeMap<String, f64>,
    /// Tier of each service (by `service.name`).
    pub services: BTreeMap<String, String>,
}

impl Default for TiersConfig {
    fn default() -> Self {
        Self {
            default: "standard".into(),
            scores: [("critical", 1.0), ("standard", 0.5), ("best_effort", 0.0)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            services: BTreeMap::new(),
        }
    }
}

/// `[[sampling.force_keep]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForceKeepConfig {
    /// A condition on one span: `<field> <op> <value>`, joined with `and`. Fields: `status`
    /// (error, ok, unset), `http.status_code`, `duration`, `service`, `name`, `route`, `kind`.
    /// Operators: `=`, `!=`, `=~` (regex), `>`, `>=`, `<`, `<=`.
    pub when: String,
    /// Name recorded in `sampling_rule`; defaults to `force_keep:<when>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Status score keys accepted in `[sampling.status_scores]`.
pub const STATUS_SCORE_KEYS: &[&str] = &[
    "1xx", "2xx", "3xx", "4xx", "5xx", "error", "ok", "unset", "slow",
];

impl SamplingConfig {
    /// Checks every value and compiles the rules. Errors name the offending key.
    pub fn compile(&self) -> Result<Rules, String> {
        let unit = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(v)
            } else {
                Err(format!("sampling.{name} must be between 0 and 1, got {v}"))
            }
        };
        unit("high_threshold", self.high_threshold)?;
        unit("low_threshold", self.low_threshold)?;
        unit("mid_probability", self.mid_probability)?;
        unit("low_probability", self.low_probability)?;
        if self.low_threshold > self.high_threshold {
            return Err(format!(
                "sampling.low_threshold ({}) must not be above sampling.high_threshold ({})",
                self.low_threshold, self.high_threshold
            ));
        }
        if self.decision_wait.is_zero() {
            return Err("sampling.decision_wait must be above 0".into());
        }
        if self.max_trace_wait < self.decision_wait {
            return Err(format!(
                "sampling.max_trace_wait ({}) must be at least sampling.decision_wait ({})",
                humantime::format_duration(self.max_trace_wait),
                humantime::format_duration(self.decision_wait)
            ));
        }
        if self.max_traces == 0 {
            return Err("sampling.max_traces must be above 0".into());
        }
        if self.adjust_interval.is_zero() {
            return Err("sampling.adjust_interval must be above 0".into());
        }
        if let Some(b) = self.budget_spans_per_sec {
            if !(b.is_finite() && b > 0.0) {
                return Err(format!(
                    "sampling.budget_spans_per_sec must be above 0, got {b}"
                ));
            }
        }
        let w = &self.dimension_weights;
        for (name, v) in [("status", w.status), ("route", w.route), ("tier", w.tier)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!(
                    "sampling.dimension_weights.{name} must be 0 or more, got {v}"
                ));
            }
        }
        let mut status = [None; 9];
        for (key, &v) in &self.status_scores {
            let Some(i) = STATUS_SCORE_KEYS.iter().position(|k| k == key) else {
                return Err(format!(
                    "sampling.status_scores: unknown key {key:?}; expected one of {}",
                    STATUS_SCORE_KEYS.join(", ")
                ));
            };
            status[i] = Some(unit(&format!("status_scores.{key}"), v)?);
        }
        let mut routes = Vec::with_capacity(self.routes.len());
        for (i, r) in self.routes.iter().enumerate() {
            let regex = regex::Regex::new(&r.regex).map_err(|e| {
                format!("sampling.routes[{i}].regex {:?} is not valid: {e}", r.regex)
            })?;
            unit(&format!("routes[{i}].score"), r.score)?;
            routes.push(RouteRule {
                name: r
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("route:{}", r.regex)),
                regex,
                score: r.score,
                slow_threshold_nanos: r.slow_threshold.map(duration_nanos),
                force: r.force,
            });
        }
        let tier_score = |tier: &str, what: &str| {
            self.tiers.scores.get(tier).copied().ok_or_else(|| {
                format!(
                    "{what} names tier {tier:?}, which has no score in sampling.tiers.scores (known: {})",
                    self.tiers.scores.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })
        };
        for (tier, &v) in &self.tiers.scores {
            unit(&format!("tiers.scores.{tier}"), v)?;
        }
        let default_tier = tier_score(&self.tiers.default, "sampling.tiers.default")?;
        let mut services = std::collections::HashMap::new();
        for (service, tier) in &self.tiers.services {
            let score = tier_score(tier, &format!("sampling.tiers.services.{service:?}"))?;
            services.insert(service.clone(), score);
        }
        let mut force_keep = Vec::with_capacity(self.force_keep.len());
        for (i, f) in self.force_keep.iter().enumerate() {
            let condition = Condition::parse(&f.when)
                .map_err(|e| format!("sampling.force_keep[{i}].when {:?}: {e}", f.when))?;
            force_keep.push(ForceKeepRule {
                name: f
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("force_keep:{}", f.when)),
                condition,
            });
        }
        for (i, name) in self.upstream_rate_attributes.iter().enumerate() {
            if name.is_empty() {
                return Err(format!(
                    "sampling.upstream_rate_attributes[{i}] must not be empty"
                ));
            }
        }
        Ok(Rules {
            config: self.clone(),
            weights: [w.status, w.route, w.tier],
            status_scores: status.map(|s| s.unwrap_or(0.0)),
            slow_threshold_nanos: duration_nanos(self.slow_threshold),
            routes,
            default_tier,
            services,
            force_keep,
        })
    }
}

fn duration_nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// The `[sampling]` example of issue 3, verbatim.
#[cfg(test)]
pub(crate) const ISSUE_EXAMPLE: &str = r#"
[sampling]
enabled = true
decision_wait = "5s"
max_traces = 100000
high_threshold = 0.8
low_threshold = 0.3
mid_probability = 0.1
low_probability = 0.001
slow_threshold = "1s"
# budget_spans_per_sec = 20000   # optional: adapt the middle band to this budget

[sampling.dimension_weights]
status = 0.5
route = 0.3
tier = 0.2

[sampling.status_scores]      # by HTTP status class; "error" is OTLP status ERROR
"5xx" = 1.0
"4xx" = 0.4
"error" = 1.0
"slow" = 1.0                  # duration over slow_threshold

[[sampling.routes]]
regex = "^/api/(checkout|payment)/.*"
score = 1.0
slow_threshold = "300ms"

[[sampling.routes]]
regex = "^/(healthz|readyz|metrics)$"
score = 0.0
force = "drop"

[sampling.tiers]
default = "standard"
scores = { critical = 1.0, standard = 0.5, best_effort = 0.0 }
services = { "payment" = "critical", "checkout" = "critical", "recommendation" = "best_effort" }

[[sampling.force_keep]]
when = "status = error"        # any span with OTLP status ERROR keeps the whole trace
"#;

/// [`ISSUE_EXAMPLE`], parsed.
#[cfg(test)]
pub(crate) fn issue_example() -> SamplingConfig {
    #[derive(Deserialize)]
    struct Wrapper {
        sampling: SamplingConfig,
    }
    toml::from_str::<Wrapper>(ISSUE_EXAMPLE).unwrap().sampling
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Wrapper {
        sampling: SamplingConfig,
    }

    fn parse(text: &str) -> Result<SamplingConfig, String> {
        toml::from_str::<Wrapper>(text)
            .map(|w| w.sampling)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_issue_example_parses_and_compiles() {
        let c = parse(ISSUE_EXAMPLE).unwrap();
        assert!(c.enabled);
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.routes[0].slow_threshold, Some(Duration::from_millis(300)));
        assert_eq!(c.routes[1].force, Some(Force::Drop));
        assert_eq!(c.tiers.services["payment"], "critical");
        let rules = c.compile().unwrap();
        assert_eq!(rules.services["recommendation"], 0.0);
        assert_eq!(rules.force_keep.len(), 1);
    }

    #[test]
    fn defaults_compile() {
        SamplingConfig::default().compile().unwrap();
    }

    #[test]
    fn bad_values_get_precise_errors() {
        let cases: &[(&str, &str)] = &[
            (
                "high_threshold = 1.5",
                "sampling.high_threshold must be between 0 and 1",
            ),
            (
                "low_threshold = 0.9\nhigh_threshold = 0.5",
                "must not be above sampling.high_threshold",
            ),
            (
                "[sampling.status_scores]\n\"6xx\" = 1.0",
                "unknown key \"6xx\"",
            ),
            (
                "[[sampling.routes]]\nregex = \"(\"",
                "sampling.routes[0].regex \"(\" is not valid",
            ),
            (
                "[sampling.tiers]\nservices = { a = \"gold\" }",
                "names tier \"gold\", which has no score",
            ),
            (
                "[[sampling.force_keep]]\nwhen = \"colour = red\"",
                "sampling.force_keep[0].when \"colour = red\": unknown field",
            ),
            (
                "budget_spans_per_sec = -3",
                "budget_spans_per_sec must be above 0",
            ),
            ("decision_wait = \"0s\"", "decision_wait must be above 0"),
        ];
        for (body, want) in cases {
            let text = format!("[sampling]\n{body}\n");
            let err = match parse(&text) {
                Ok(c) => c.compile().unwrap_err(),
                Err(e) => e,
            };
            assert!(err.contains(want), "{body}: {err} does not contain {want}");
        }
        let err = parse("[sampling]\ndecison_wait = \"1s\"\n").unwrap_err();
        assert!(err.contains("unknown field `decison_wait`"), "{err}");
    }
}
