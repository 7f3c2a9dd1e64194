//! Compiled sampling rules, and the scoring of spans and traces with them.
//!
//! A span's weight is `w_status * status + w_route * route + w_tier * tier`, clamped to [0, 1];
//! a trace's weight is the highest weight of its spans. Force-keep beats force-drop, and
//! force-drop never applies to a trace with an errored span (OTLP ERROR or HTTP 5xx).

use std::collections::HashMap;

use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{Int32Type, Int64Type};
use tracelake_proto::columns;

use super::config::{Force, SamplingConfig, STATUS_SCORE_KEYS};

/// OTLP `STATUS_CODE_OK`.
const STATUS_OK: i32 = 1;
/// OTLP `STATUS_CODE_ERROR`.
const STATUS_ERROR: i32 = 2;

/// Validated, compiled sampling rules. Built by [`SamplingConfig::compile`].
#[derive(Debug, Clone)]
pub struct Rules {
    /// The config these were compiled from.
    pub config: SamplingConfig,
    pub(crate) weights: [f64; 3],
    /// Indexed like [`STATUS_SCORE_KEYS`].
    pub(crate) status_scores: [f64; 9],
    pub(crate) slow_threshold_nanos: i64,
    pub(crate) routes: Vec<RouteRule>,
    pub(crate) default_tier: f64,
    pub(crate) services: HashMap<String, f64>,
    pub(crate) force_keep: Vec<ForceKeepRule>,
}

#[derive(Debug, Clone)]
pub(crate) struct RouteRule {
    pub(crate) name: String,
    pub(crate) regex: regex::Regex,
    pub(crate) score: f64,
    pub(crate) slow_threshold_nanos: Option<i64>,
    pub(crate) force: Option<Force>,
}

#[derive(Debug, Clone)]
pub(crate) struct ForceKeepRule {
    pub(crate) name: String,
    pub(crate) condition: Condition,
}

/// The fields of one span that the rules look at.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpanFacts<'a> {
    /// OTLP status code.
    pub status_code: i32,
    /// HTTP response status code.
    pub http_status: Option<i64>,
    /// Duration in nanoseconds.
    pub duration_nanos: i64,
    /// `service.name`.
    pub service: Option<&'a str>,
    /// Span name.
    pub name: Option<&'a str>,
    /// `http.route`.
    pub http_route: Option<&'a str>,
    /// `url.path`.
    pub url_path: Option<&'a str>,
    /// OTLP span kind.
    pub kind: i32,
    /// True when the span has no parent.
    pub is_root: bool,
}

impl<'a> SpanFacts<'a> {
    /// What route rules match against: `http.route`, else `url.path`, else the span name.
    pub fn route_subject(&self) -> &'a str {
        self.http_route
            .or(self.url_path)
            .or(self.name)
            .unwrap_or("")
    }

    fn errored(&self) -> bool {
        self.status_code == STATUS_ERROR || self.http_status.is_some_and(|c| c >= 500)
    }

    /// `"error"` for an errored span, else the HTTP status class (`"2xx"`...), else `"-"`.
    pub fn status_class(&self) -> &'static str {
        if self.errored() {
            return "error";
        }
        match self.http_status {
            Some(100..=199) => "1xx",
            Some(200..=299) => "2xx",
            Some(300..=399) => "3xx",
            Some(400..=499) => "4xx",
            _ => "-",
        }
    }
}

/// Column views of a span batch, to read [`SpanFacts`] row by row.
pub(crate) struct FactColumns<'a> {
    status: &'a arrow::array::PrimitiveArray<Int32Type>,
    http: &'a arrow::array::PrimitiveArray<Int64Type>,
    duration: &'a arrow::array::PrimitiveArray<Int64Type>,
    service: &'a StringArray,
    name: &'a StringArray,
    route: &'a StringArray,
    url_path: &'a StringArray,
    kind: &'a arrow::array::PrimitiveArray<Int32Type>,
    parent: &'a arrow::array::BinaryArray,
}

impl<'a> FactColumns<'a> {
    /// Views over a batch of [`tracelake_proto::span_schema`].
    pub(crate) fn new(batch: &'a RecordBatch) -> Self {
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap_or_else(|| panic!("span batch without column {name}"))
        };
        Self {
            status: col(columns::STATUS_CODE).as_primitive(),
            http: col(columns::HTTP_RESPONSE_STATUS_CODE).as_primitive(),
            duration: col(columns::DURATION_NANO).as_primitive(),
            service: col(columns::SERVICE_NAME).as_string(),
            name: col(columns::NAME).as_string(),
            route: col(columns::HTTP_ROUTE).as_string(),
            url_path: col(columns::URL_PATH).as_string(),
            kind: col(columns::KIND).as_primitive(),
            parent: col(columns::PARENT_SPAN_ID).as_binary(),
        }
    }

    pub(crate) fn row(&self, i: usize) -> SpanFacts<'a> {
        let s = |a: &'a StringArray| a.is_valid(i).then(|| a.value(i));
        SpanFacts {
            status_code: self.status.value(i),
            http_status: self.http.is_valid(i).then(|| self.http.value(i)),
            duration_nanos: self.duration.value(i),
            service: s(self.service),
            name: s(self.name),
            http_route: s(self.route),
            url_path: s(self.url_path),
            kind: self.kind.value(i),
            is_root: self.parent.is_null(i) || self.parent.value(i).is_empty(),
        }
    }
}

/// How one span scores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpanScore {
    /// Weight in [0, 1].
    pub weight: f64,
    /// Index into the force-keep rules (`usize::MAX` for a route's `force = "keep"`).
    pub force_keep: Option<ForceRef>,
    /// The route rule that forces a drop.
    pub force_drop: Option<usize>,
    /// OTLP ERROR or HTTP 5xx.
    pub errored: bool,
}

/// Which rule forced a keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForceRef {
    /// `[[sampling.force_keep]]` number n.
    Condition(usize),
    /// `[[sampling.routes]]` number n, with `force = "keep"`.
    Route(usize),
}

impl Rules {
    /// Scores one span.
    pub fn score(&self, f: &SpanFacts<'_>) -> SpanScore {
        let subject = f.route_subject();
        let route = self.routes.iter().position(|r| r.regex.is_match(subject));
        let rule = route.map(|i| &self.routes[i]);
        let slow_after = rule
            .and_then(|r| r.slow_threshold_nanos)
            .unwrap_or(self.slow_threshold_nanos);
        let s = &self.status_scores;
        let mut status: f64 = 0.0;
        if let Some(code) = f.http_status {
            if (100..600).contains(&code) {
                status = status.max(s[(code / 100 - 1) as usize]);
            }
        }
        status = status.max(match f.status_code {
            STATUS_ERROR => s[5],
            STATUS_OK => s[6],
            _ => s[7],
        });
        if f.duration_nanos > slow_after {
            status = status.max(s[8]);
        }
        let tier = f
            .service
            .and_then(|svc| self.services.get(svc))
            .copied()
            .unwrap_or(self.default_tier);
        let [ws, wr, wt] = self.weights;
        let weight = (ws * status + wr * rule.map_or(0.0, |r| r.score) + wt * tier).clamp(0.0, 1.0);
        let force_keep = self
            .force_keep
            .iter()
            .position(|k| k.condition.matches(f))
            .map(ForceRef::Condition)
            .or(match rule.and_then(|r| r.force) {
                Some(Force::Keep) => route.map(ForceRef::Route),
                _ => None,
            });
        let force_drop = match rule.and_then(|r| r.force) {
            Some(Force::Drop) => route,
            _ => None,
        };
        SpanScore {
            weight: if weight.is_nan() { 0.0 } else { weight },
            force_keep,
            force_drop,
            errored: f.errored(),
        }
    }

    /// The name recorded in `sampling_rule` for a forced keep.
    pub(crate) fn force_keep_name(&self, r: ForceRef) -> &str {
        match r {
            ForceRef::Condition(i) => &self.force_keep[i].name,
            ForceRef::Route(i) => &self.routes[i].name,
        }
    }

    /// The name recorded for a route rule.
    pub(crate) fn route_name(&self, i: usize) -> &str {
        &self.routes[i].name
    }
}

/// A force-keep condition: clauses on one span, all of which must hold.
#[derive(Debug, Clone)]
pub(crate) struct Condition {
    clauses: Vec<Clause>,
}

#[derive(Debug, Clone)]
enum Clause {
    Status { eq: bool, code: i32 },
    HttpStatus(Cmp),
    Duration(Cmp),
    Text { field: TextField, test: TextTest },
    Kind { eq: bool, kind: i32 },
}

#[derive(Debug, Clone, Copy)]
enum TextField {
    Service,
    Name,
    Route,
}

#[derive(Debug, Clone)]
enum TextTest {
    Eq(String),
    Ne(String),
    Re(regex::Regex),
}

#[derive(Debug, Clone, Copy)]
struct Cmp {
    op: Op,
    value: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Re,
}

impl Cmp {
    fn holds(self, v: i64) -> bool {
        match self.op {
            Op::Eq => v == self.value,
            Op::Ne => v != self.value,
            Op::Gt => v > self.value,
            Op::Ge => v >= self.value,
            Op::Lt => v < self.value,
            Op::Le => v <= self.value,
            Op::Re => false,
        }
    }
}

impl Condition {
    /// Parses `status = error and service = payment`-style conditions.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let clauses = text
            .split(" and ")
            .map(|c| Clause::parse(c.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { clauses })
    }

    pub(crate) fn matches(&self, f: &SpanFacts<'_>) -> bool {
        self.clauses.iter().all(|c| c.matches(f))
    }
}

impl Clause {
    fn parse(text: &str) -> Result<Self, String> {
        let ops = [
            ("=~", Op::Re),
            ("!=", Op::Ne),
            (">=", Op::Ge),
            ("<=", Op::Le),
            ("=", Op::Eq),
            (">", Op::Gt),
            ("<", Op::Lt),
        ];
        let (at, sym, op) = ops
            .iter()
            .filter_map(|&(sym, op)| text.find(sym).map(|at| (at, sym, op)))
            .min_by_key(|&(at, sym, _)| (at, usize::MAX - sym.len()))
            .ok_or_else(|| {
                format!("expected `<field> <op> <value>`, got {text:?}; operators are =, !=, =~, >, >=, <, <=")
            })?;
        let field = text[..at].trim();
        let value = text[at + sym.len()..].trim().trim_matches('"');
        if value.is_empty() {
            return Err(format!("missing value after {sym:?}"));
        }
        let eq_ne = |what: &str| match op {
            Op::Eq => Ok(true),
            Op::Ne => Ok(false),
            _ => Err(format!("{what} takes only = or !=")),
        };
        match field {
            "status" => {
                let code = match value {
                    "error" => STATUS_ERROR,
                    "ok" => STATUS_OK,
                    "unset" => 0,
                    other => {
                        return Err(format!(
                            "status is error, ok or unset, not {other:?}"
                        ))
                    }
                };
                Ok(Clause::Status {
                    eq: eq_ne("status")?,
                    code,
                })
            }
            "http.status_code" | "http.response.status_code" => {
                if op == Op::Re {
                    return Err("http.status_code takes a number comparison".into());
                }
                let value = value
                    .parse()
                    .map_err(|_| format!("http.status_code needs a number, got {value:?}"))?;
                Ok(Clause::HttpStatus(Cmp { op, value }))
            }
            "duration" => {
                if op == Op::Re {
                    return Err("duration takes a comparison like `duration > 2s`".into());
                }
                let d = humantime::parse_duration(value)
                    .map_err(|e| format!("duration needs a value like 500ms or 2s: {e}"))?;
                Ok(Clause::Duration(Cmp {
                    op,
                    value: i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
                }))
            }
            "service" | "name" | "route" => {
                let field = match field {
                    "service" => TextField::Service,
                    "name" => TextField::Name,
                    _ => TextField::Route,
                };
                let test = match op {
                    Op::Eq => TextTest::Eq(value.to_string()),
                    Op::Ne => TextTest::Ne(value.to_string()),
                    Op::Re => TextTest::Re(
                        regex::Regex::new(value).map_err(|e| format!("bad regex: {e}"))?,
                    ),
                    _ => return Err(format!("{sym} does not apply to text fields")),
                };
                Ok(Clause::Text { field, test })
            }
            "kind" => {
                let kind = match value {
                    "unspecified" => 0,
                    "internal" => 1,
                    "server" => 2,
                    "client" => 3,
                    "producer" => 4,
                    "consumer" => 5,
                    other => {
                        return Err(format!(
                            "kind is internal, server, client, producer or consumer, not {other:?}"
                        ))
                    }
                };
                Ok(Clause::Kind {
                    eq: eq_ne("kind")?,
                    kind,
                })
            }
            other => Err(format!(
                "unknown field {other:?}; fields are status, http.status_code, duration, service, name, route, kind"
            )),
        }
    }

    fn matches(&self, f: &SpanFacts<'_>) -> bool {
        match self {
            Clause::Status { eq, code } => (f.status_code == *code) == *eq,
            Clause::HttpStatus(cmp) => f.http_status.is_some_and(|c| cmp.holds(c)),
            Clause::Duration(cmp) => cmp.holds(f.duration_nanos),
            Clause::Kind { eq, kind } => (f.kind == *kind) == *eq,
            Clause::Text { field, test } => {
                let v = match field {
                    TextField::Service => f.service.unwrap_or(""),
                    TextField::Name => f.name.unwrap_or(""),
                    TextField::Route => f.route_subject(),
                };
                match test {
                    TextTest::Eq(s) => v == s,
                    TextTest::Ne(s) => v != s,
                    TextTest::Re(r) => r.is_match(v),
                }
            }
        }
    }
}

// Keep the key list and the score array in step.
const _: () = assert!(STATUS_SCORE_KEYS.len() == 9);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::config::SamplingConfig;

    fn issue_rules() -> Rules {
        crate::sampling::config::issue_example().compile().unwrap()
    }

    fn span<'a>(service: &'a str, route: &'a str, http: i64, ms: i64) -> SpanFacts<'a> {
        SpanFacts {
            status_code: 0,
            http_status: Some(http),
            duration_nanos: ms * 1_000_000,
            service: Some(service),
            name: Some("GET"),
            http_route: Some(route),
            url_path: None,
            kind: 2,
            is_root: true,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn weights_follow_the_three_dimensions() {
        let r = issue_rules();
        // 2xx, no route rule, standard tier: 0.2 * 0.5.
        assert!(close(
            r.score(&span("cart", "/api/cart", 200, 10)).weight,
            0.1
        ));
        // 4xx: 0.5 * 0.4 + 0.1.
        assert!(close(
            r.score(&span("cart", "/api/cart", 404, 10)).weight,
            0.3
        ));
        // Critical route, critical service: 0.3 + 0.2.
        assert!(close(
            r.score(&span("payment", "/api/payment/charge", 200, 10))
                .weight,
            0.5
        ));
        // The same, slow by the route's 300ms threshold: + 0.5.
        assert!(close(
            r.score(&span("payment", "/api/payment/charge", 200, 301))
                .weight,
            1.0
        ));
        // Slow by the global 1s threshold only.
        assert!(close(r.score(&span("cart", "/x", 200, 300)).weight, 0.1));
        assert!(close(r.score(&span("cart", "/x", 200, 1001)).weight, 0.6));
        // Best-effort tier scores 0; 5xx errs.
        let s = r.score(&span("recommendation", "/r", 503, 1));
        assert!(close(s.weight, 0.5));
        assert!(s.errored);
    }

    #[test]
    fn route_subject_falls_back_to_url_path_then_name() {
        let r = issue_rules();
        let mut f = span("cart", "/healthz", 200, 1);
        assert_eq!(r.score(&f).force_drop, Some(1));
        f.http_route = None;
        f.url_path = Some("/metrics");
        assert_eq!(r.score(&f).force_drop, Some(1));
        f.url_path = None;
        f.name = Some("/readyz");
        assert_eq!(r.score(&f).force_drop, Some(1));
        f.name = Some("GET /readyz");
        assert_eq!(r.score(&f).force_drop, None);
    }

    #[test]
    fn errors_force_keep_by_default() {
        let r = issue_rules();
        let mut f = span("cart", "/healthz", 200, 1);
        f.status_code = STATUS_ERROR;
        let s = r.score(&f);
        assert_eq!(s.force_keep, Some(ForceRef::Condition(0)));
        assert_eq!(
            r.force_keep_name(ForceRef::Condition(0)),
            "force_keep:status = error"
        );
    }

    proptest::proptest! {
        /// Whatever the span and the weights, a weight is in [0, 1], and a higher status, route
        /// or tier score never lowers it.
        #[test]
        fn weights_are_clamped_and_monotone(
            http in proptest::option::of(100i64..600),
            status in 0i32..3,
            ms in 0i64..5_000,
            svc in proptest::sample::select(vec!["payment", "cart", "recommendation", "other"]),
            route in proptest::sample::select(vec!["/api/payment/x", "/healthz", "/a", ""]),
            ws in 0.0f64..3.0, wr in 0.0f64..3.0, wt in 0.0f64..3.0,
        ) {
            let mut c = SamplingConfig::default();
            c.dimension_weights.status = ws;
            c.dimension_weights.route = wr;
            c.dimension_weights.tier = wt;
            c.routes = issue_rules().config.routes.clone();
            c.tiers = issue_rules().config.tiers.clone();
            let r = c.compile().unwrap();
            let f = SpanFacts { status_code: status, http_status: http, duration_nanos: ms * 1_000_000, service: Some(svc), name: None, http_route: Some(route), url_path: None, kind: 2, is_root: true };
            let w = r.score(&f).weight;
            proptest::prop_assert!((0.0..=1.0).contains(&w));
            // An error (status score 1.0) never weighs less than the same span without it.
            let errored = SpanFacts { status_code: STATUS_ERROR, ..f };
            proptest::prop_assert!(r.score(&errored).weight >= w);
            // A critical service never weighs less than a best-effort one.
            let critical = SpanFacts { service: Some("payment"), ..f };
            let best_effort = SpanFacts { service: Some("recommendation"), ..f };
            proptest::prop_assert!(r.score(&critical).weight >= r.score(&best_effort).weight);
        }
    }

    #[test]
    fn conditions_parse_and_match() {
        let f = span("payment", "/api/payment/x", 502, 2500);
        let yes = [
            "http.status_code >= 500",
            "duration > 2s",
            "service = payment and duration >= 1s",
            "route =~ ^/api/pay",
            "kind = server",
            "status != error",
            "name != POST",
        ];
        for c in yes {
            assert!(Condition::parse(c).unwrap().matches(&f), "{c}");
        }
        let no = [
            "http.status_code < 500",
            "duration <= 2s",
            "service = payment and duration > 3s",
            "kind = client",
            "status = error",
        ];
        for c in no {
            assert!(!Condition::parse(c).unwrap().matches(&f), "{c}");
        }
        for bad in [
            "status = broken",
            "duration =~ x",
            "kind > server",
            "size > 3",
            "service",
        ] {
            assert!(Condition::parse(bad).is_err(), "{bad}");
        }
    }
}
