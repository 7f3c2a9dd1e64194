//! The TraceQL syntax tree.
//!
//! The tree is already resolved and typed, so a planner can compile it without looking at text:
//! attribute scopes are an enum, intrinsics are an enum with a [`ValueType`], literals carry their
//! type, `&&`/`||` chains are flattened into n-ary nodes, and every comparison has its field on
//! the left and a literal on the right.
//!
//! [`Display`](fmt::Display) on every node prints canonical TraceQL: parsing that text gives the
//! same tree back.

use std::fmt;
use std::time::Duration;

/// A whole TraceQL query: spanset expression, then `|` stages, then an optional metrics function.
///
/// ```text
/// { status = error } | by(resource.service.name) | count() > 1 | rate() by (span:name)
/// └─── spansets ───┘   └────────────── pipeline ─────────────┘   └──── metrics ─────┘
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// The spanset expression the query starts with.
    pub spansets: SpansetExpr,
    /// The `|` stages after it, in order (may be empty).
    pub pipeline: Vec<Stage>,
    /// The metrics function that ends a metrics query (`| rate() by (...)`), if any.
    pub metrics: Option<MetricsStage>,
}

impl Query {
    /// True when this is a TraceQL metrics query (it ends with `rate()`, `count_over_time()`, ...).
    pub fn is_metrics(&self) -> bool {
        self.metrics.is_some()
    }
}

/// An expression over spansets.
///
/// Precedence, loosest first: `||`, then `&&`, then the structural operators (all one level,
/// left-associative): `{a} > {b} && {c}` is `({a} > {b}) && {c}`, and `{a} > {b} > {c}` is
/// `({a} > {b}) > {c}`.
#[derive(Debug, Clone, PartialEq)]
pub enum SpansetExpr {
    /// `{ ... }`: the spans on which a condition holds.
    Filter(SpansetFilter),
    /// `a && b && ...`: traces where every side matches; the matched spans of all sides.
    /// At least two operands, none of them itself an `And`.
    And(Vec<SpansetExpr>),
    /// `a || b || ...`: the union of the sides. At least two operands, none of them an `Or`.
    Or(Vec<SpansetExpr>),
    /// `lhs OP rhs` with a structural operator: the spans of `rhs` related to spans of `lhs`.
    Structural {
        /// The relation.
        op: StructuralOp,
        /// The spans the relation starts from.
        lhs: Box<SpansetExpr>,
        /// The spans returned when related to a span of `lhs`.
        rhs: Box<SpansetExpr>,
    },
}

/// `{ }` (every span) or `{ condition }`.
#[derive(Debug, Clone, PartialEq)]
pub struct SpansetFilter {
    /// The condition each span must meet; `None` for `{ }`, which matches every span.
    pub condition: Option<Condition>,
}

/// A structural operator between two spansets. Each returns spans of the right-hand side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StructuralOp {
    /// `>`: right-hand spans whose parent is a left-hand span.
    Child,
    /// `>>`: right-hand spans that descend from a left-hand span.
    Descendant,
    /// `<`: right-hand spans that are the parent of a left-hand span.
    Parent,
    /// `<<`: right-hand spans that are an ancestor of a left-hand span.
    Ancestor,
    /// `~`: right-hand spans that share a parent with a left-hand span (and are not that span).
    Sibling,
}

impl StructuralOp {
    /// The operator as written in TraceQL.
    pub fn as_str(self) -> &'static str {
        match self {
            StructuralOp::Child => ">",
            StructuralOp::Descendant => ">>",
            StructuralOp::Parent => "<",
            StructuralOp::Ancestor => "<<",
            StructuralOp::Sibling => "~",
        }
    }
}

/// A condition on one span, inside `{ }`.
///
/// Precedence, loosest first: `||`, `&&`, `!`, then comparisons.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// `field op literal`.
    Compare(Comparison),
    /// `true` or `false` on its own (`{ true }` is the same as `{ }`).
    Bool(bool),
    /// `!cond`.
    Not(Box<Condition>),
    /// `a && b && ...`: at least two operands, none of them itself an `And`.
    And(Vec<Condition>),
    /// `a || b || ...`: at least two operands, none of them itself an `Or`.
    Or(Vec<Condition>),
}

/// One comparison. The parser puts the field on the left: `500 <= span.x` becomes `span.x >= 500`.
///
/// The parser has checked that the literal's type fits the field and operator: regexes are
/// strings, `nil` only with `=`/`!=`, `status` only against status literals, `kind` only
/// against kind literals, duration intrinsics only against durations, and so on.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The span field being compared.
    pub field: Field,
    /// The comparison operator.
    pub op: CompareOp,
    /// The value compared with. `Literal::Nil` means "the attribute does not exist" with `=`
    /// and "exists" with `!=`.
    pub value: Literal,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `=~`: the value is an RE2 regex that must match the whole field (fully anchored).
    Regex,
    /// `!~`: the value is an RE2 regex that must not match the whole field.
    NotRegex,
}

impl CompareOp {
    /// The operator as written in TraceQL.
    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "=",
            CompareOp::Ne => "!=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Regex => "=~",
            CompareOp::NotRegex => "!~",
        }
    }

    /// The operator with its sides swapped: `a > b` is `b < a`. `None` for the regex operators,
    /// whose sides cannot be swapped.
    pub fn mirrored(self) -> Option<CompareOp> {
        Some(match self {
            CompareOp::Eq => CompareOp::Eq,
            CompareOp::Ne => CompareOp::Ne,
            CompareOp::Gt => CompareOp::Lt,
            CompareOp::Ge => CompareOp::Le,
            CompareOp::Lt => CompareOp::Gt,
            CompareOp::Le => CompareOp::Ge,
            CompareOp::Regex | CompareOp::NotRegex => return None,
        })
    }

    /// True for `>`, `>=`, `<` and `<=`.
    pub fn is_ordering(self) -> bool {
        matches!(
            self,
            CompareOp::Gt | CompareOp::Ge | CompareOp::Lt | CompareOp::Le
        )
    }

    /// True for `=~` and `!~`.
    pub fn is_regex(self) -> bool {
        matches!(self, CompareOp::Regex | CompareOp::NotRegex)
    }
}

/// A span field: an attribute or an intrinsic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Field {
    /// A user attribute such as `span.http.method`.
    Attribute(Attribute),
    /// A built-in span or trace property such as `duration` or `trace:id`.
    Intrinsic(Intrinsic),
}

impl Field {
    /// The value type of the field when the schema fixes it (intrinsics); `None` for attributes,
    /// whose type is whatever the span sent.
    pub fn value_type(&self) -> Option<ValueType> {
        match self {
            Field::Attribute(_) => None,
            Field::Intrinsic(i) => Some(i.value_type()),
        }
    }
}

/// An attribute reference: a scope and a name. The name is the full dotted key, unquoted:
/// `span.http.request.method` has name `http.request.method`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attribute {
    /// Where the attribute is looked up.
    pub scope: AttributeScope,
    /// The attribute key.
    pub name: String,
}

/// Where an attribute is looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttributeScope {
    /// `.x`: the span's attributes, else the resource's (span wins when both have the key).
    Unscoped,
    /// `span.x`: the span's own attributes.
    Span,
    /// `resource.x`: the attributes of the resource that sent the span (`service.name`, ...).
    Resource,
    /// `event.x`: attributes of one of the span's events.
    Event,
    /// `link.x`: attributes of one of the span's links.
    Link,
    /// `instrumentation.x`: attributes of the instrumentation scope.
    Instrumentation,
}

impl AttributeScope {
    /// The prefix before the name, including the dot: `"span."`, or `"."` when unscoped.
    pub fn prefix(self) -> &'static str {
        match self {
            AttributeScope::Unscoped => ".",
            AttributeScope::Span => "span.",
            AttributeScope::Resource => "resource.",
            AttributeScope::Event => "event.",
            AttributeScope::Link => "link.",
            AttributeScope::Instrumentation => "instrumentation.",
        }
    }

    /// The scope for a prefix word (`"span"` -> `Span`); `None` for an unknown word.
    pub fn from_word(word: &str) -> Option<AttributeScope> {
        Some(match word {
            "span" => AttributeScope::Span,
            "resource" => AttributeScope::Resource,
            "event" => AttributeScope::Event,
            "link" => AttributeScope::Link,
            "instrumentation" => AttributeScope::Instrumentation,
            _ => return None,
        })
    }
}

/// The level an intrinsic belongs to: one span, the whole trace, an event, a link, or the
/// instrumentation scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntrinsicScope {
    /// A property of the span itself.
    Span,
    /// A property of the span's trace (the same for every span in it).
    Trace,
    /// A property of one of the span's events.
    Event,
    /// A property of one of the span's links.
    Link,
    /// A property of the instrumentation scope that produced the span.
    Instrumentation,
}

/// The type of a field's or literal's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// UTF-8 text.
    String,
    /// A 64-bit signed integer.
    Int,
    /// A 64-bit float.
    Float,
    /// `true` or `false`.
    Bool,
    /// A duration (nanoseconds).
    Duration,
    /// A span status (`ok`, `error`, `unset`).
    Status,
    /// A span kind (`server`, `client`, ...).
    Kind,
    /// A trace or span id, compared as lowercase hex text.
    Id,
}

/// A built-in field. Older spellings map to the same variant: `name` and `span:name` are both
/// [`Intrinsic::SpanName`]; `rootServiceName` is [`Intrinsic::TraceRootService`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Intrinsic {
    /// `span:name` (`name`): the span name.
    SpanName,
    /// `span:status` (`status`): ok, error or unset.
    SpanStatus,
    /// `span:statusMessage` (`statusMessage`): the status description.
    SpanStatusMessage,
    /// `span:kind` (`kind`): the span kind.
    SpanKind,
    /// `span:duration` (`duration`): end minus start.
    SpanDuration,
    /// `span:id`: the span id, as hex.
    SpanId,
    /// `span:parentID`: the parent span id, as hex (empty for root spans).
    SpanParentId,
    /// `span:childCount` (`childCount`): number of direct children.
    SpanChildCount,
    /// `trace:rootName` (`rootName`): name of the trace's root span.
    TraceRootName,
    /// `trace:rootService` (`rootServiceName`): service of the trace's root span.
    TraceRootService,
    /// `trace:duration` (`traceDuration`): last span end minus first span start.
    TraceDuration,
    /// `trace:id`: the trace id, as hex.
    TraceId,
    /// `event:name`: name of one of the span's events.
    EventName,
    /// `event:timeSinceStart`: time from span start to one of its events.
    EventTimeSinceStart,
    /// `link:traceID`: trace id of one of the span's links, as hex.
    LinkTraceId,
    /// `link:spanID`: span id of one of the span's links, as hex.
    LinkSpanId,
    /// `instrumentation:name`: the instrumentation scope name.
    InstrumentationName,
    /// `instrumentation:version`: the instrumentation scope version.
    InstrumentationVersion,
}

impl Intrinsic {
    /// Every intrinsic, in declaration order.
    pub const ALL: [Intrinsic; 18] = [
        Intrinsic::SpanName,
        Intrinsic::SpanStatus,
        Intrinsic::SpanStatusMessage,
        Intrinsic::SpanKind,
        Intrinsic::SpanDuration,
        Intrinsic::SpanId,
        Intrinsic::SpanParentId,
        Intrinsic::SpanChildCount,
        Intrinsic::TraceRootName,
        Intrinsic::TraceRootService,
        Intrinsic::TraceDuration,
        Intrinsic::TraceId,
        Intrinsic::EventName,
        Intrinsic::EventTimeSinceStart,
        Intrinsic::LinkTraceId,
        Intrinsic::LinkSpanId,
        Intrinsic::InstrumentationName,
        Intrinsic::InstrumentationVersion,
    ];

    /// The canonical `scope:name` spelling, e.g. `"span:duration"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Intrinsic::SpanName => "span:name",
            Intrinsic::SpanStatus => "span:status",
            Intrinsic::SpanStatusMessage => "span:statusMessage",
            Intrinsic::SpanKind => "span:kind",
            Intrinsic::SpanDuration => "span:duration",
            Intrinsic::SpanId => "span:id",
            Intrinsic::SpanParentId => "span:parentID",
            Intrinsic::SpanChildCount => "span:childCount",
            Intrinsic::TraceRootName => "trace:rootName",
            Intrinsic::TraceRootService => "trace:rootService",
            Intrinsic::TraceDuration => "trace:duration",
            Intrinsic::TraceId => "trace:id",
            Intrinsic::EventName => "event:name",
            Intrinsic::EventTimeSinceStart => "event:timeSinceStart",
            Intrinsic::LinkTraceId => "link:traceID",
            Intrinsic::LinkSpanId => "link:spanID",
            Intrinsic::InstrumentationName => "instrumentation:name",
            Intrinsic::InstrumentationVersion => "instrumentation:version",
        }
    }

    /// The older unscoped spelling (`"duration"`, `"rootServiceName"`), if the intrinsic has one.
    pub fn legacy_name(self) -> Option<&'static str> {
        Some(match self {
            Intrinsic::SpanName => "name",
            Intrinsic::SpanStatus => "status",
            Intrinsic::SpanStatusMessage => "statusMessage",
            Intrinsic::SpanKind => "kind",
            Intrinsic::SpanDuration => "duration",
            Intrinsic::SpanChildCount => "childCount",
            Intrinsic::TraceRootName => "rootName",
            Intrinsic::TraceRootService => "rootServiceName",
            Intrinsic::TraceDuration => "traceDuration",
            _ => return None,
        })
    }

    /// Looks up an intrinsic by its `scope:name` or legacy spelling (case-sensitive).
    pub fn from_name(name: &str) -> Option<Intrinsic> {
        Intrinsic::ALL
            .into_iter()
            .find(|i| i.as_str() == name || i.legacy_name() == Some(name))
    }

    /// The level the intrinsic belongs to.
    pub fn scope(self) -> IntrinsicScope {
        match self {
            Intrinsic::SpanName
            | Intrinsic::SpanStatus
            | Intrinsic::SpanStatusMessage
            | Intrinsic::SpanKind
            | Intrinsic::SpanDuration
            | Intrinsic::SpanId
            | Intrinsic::SpanParentId
            | Intrinsic::SpanChildCount => IntrinsicScope::Span,
            Intrinsic::TraceRootName
            | Intrinsic::TraceRootService
            | Intrinsic::TraceDuration
            | Intrinsic::TraceId => IntrinsicScope::Trace,
            Intrinsic::EventName | Intrinsic::EventTimeSinceStart => IntrinsicScope::Event,
            Intrinsic::LinkTraceId | Intrinsic::LinkSpanId => IntrinsicScope::Link,
            Intrinsic::InstrumentationName | Intrinsic::InstrumentationVersion => {
                IntrinsicScope::Instrumentation
            }
        }
    }

    /// The type of the intrinsic's values.
    pub fn value_type(self) -> ValueType {
        match self {
            Intrinsic::SpanName
            | Intrinsic::SpanStatusMessage
            | Intrinsic::TraceRootName
            | Intrinsic::TraceRootService
            | Intrinsic::EventName
            | Intrinsic::InstrumentationName
            | Intrinsic::InstrumentationVersion => ValueType::String,
            Intrinsic::SpanStatus => ValueType::Status,
            Intrinsic::SpanKind => ValueType::Kind,
            Intrinsic::SpanDuration | Intrinsic::TraceDuration | Intrinsic::EventTimeSinceStart => {
                ValueType::Duration
            }
            Intrinsic::SpanChildCount => ValueType::Int,
            Intrinsic::SpanId
            | Intrinsic::SpanParentId
            | Intrinsic::TraceId
            | Intrinsic::LinkTraceId
            | Intrinsic::LinkSpanId => ValueType::Id,
        }
    }
}

/// A typed literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// `"text"` or `` `text` `` (escapes already decoded).
    String(String),
    /// `42`, `-7`.
    Int(i64),
    /// `1.5`, `2e-3`, `.99` (always finite).
    Float(f64),
    /// `200ms`, `1h30m`, `1.5s`. At most `i64::MAX` nanoseconds, so `as_nanos() as i64` is exact.
    Duration(Duration),
    /// `true`, `false`.
    Bool(bool),
    /// `nil`: no value (used to test whether an attribute exists).
    Nil,
    /// `ok`, `error`, `unset`.
    Status(Status),
    /// `unspecified`, `internal`, `server`, `client`, `producer`, `consumer`.
    Kind(SpanKind),
}

impl Literal {
    /// The literal's type; `None` for `nil`.
    pub fn value_type(&self) -> Option<ValueType> {
        Some(match self {
            Literal::String(_) => ValueType::String,
            Literal::Int(_) => ValueType::Int,
            Literal::Float(_) => ValueType::Float,
            Literal::Duration(_) => ValueType::Duration,
            Literal::Bool(_) => ValueType::Bool,
            Literal::Nil => return None,
            Literal::Status(_) => ValueType::Status,
            Literal::Kind(_) => ValueType::Kind,
        })
    }
}

/// A span status, as in OTLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// `unset` (OTLP code 0).
    Unset,
    /// `ok` (OTLP code 1).
    Ok,
    /// `error` (OTLP code 2).
    Error,
}

impl Status {
    /// The TraceQL keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unset => "unset",
            Status::Ok => "ok",
            Status::Error => "error",
        }
    }

    /// The OTLP `Status.code` value.
    pub fn otlp_code(self) -> i32 {
        match self {
            Status::Unset => 0,
            Status::Ok => 1,
            Status::Error => 2,
        }
    }
}

/// A span kind, as in OTLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpanKind {
    /// `unspecified` (OTLP 0).
    Unspecified,
    /// `internal` (OTLP 1).
    Internal,
    /// `server` (OTLP 2).
    Server,
    /// `client` (OTLP 3).
    Client,
    /// `producer` (OTLP 4).
    Producer,
    /// `consumer` (OTLP 5).
    Consumer,
}

impl SpanKind {
    /// The TraceQL keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            SpanKind::Unspecified => "unspecified",
            SpanKind::Internal => "internal",
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
        }
    }

    /// The OTLP `Span.kind` value.
    pub fn otlp_code(self) -> i32 {
        match self {
            SpanKind::Unspecified => 0,
            SpanKind::Internal => 1,
            SpanKind::Server => 2,
            SpanKind::Client => 3,
            SpanKind::Producer => 4,
            SpanKind::Consumer => 5,
        }
    }
}

/// One `| stage` of a spanset pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    /// `| { ... }` (any spanset expression): filters the spans that are left.
    Filter(SpansetExpr),
    /// `| count() > 2`, `| avg(duration) > 1s`: keeps spansets whose aggregate passes.
    ScalarFilter(ScalarFilter),
    /// `| by(f, ...)`: regroups each trace's spans into one spanset per distinct value of the fields.
    By(Vec<Field>),
    /// `| select(f, ...)`: adds these fields to the returned spans.
    Select(Vec<Field>),
    /// `| coalesce()`: merges a trace's spansets back into one.
    Coalesce,
}

/// `aggregate op value`, e.g. `count() > 2` or `avg(duration) >= 200ms`.
///
/// The value is an `Int`, `Float` or `Duration` literal; a duration exactly when the aggregated
/// field is a duration intrinsic (an attribute may take any of the three). `op` is never a regex.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalarFilter {
    /// The aggregate over each spanset.
    pub aggregate: Aggregate,
    /// The comparison.
    pub op: CompareOp,
    /// The value compared with.
    pub value: Literal,
}

/// An aggregate over the spans of one spanset.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Aggregate {
    /// `count()`: number of spans.
    Count,
    /// `avg(field)`.
    Avg(Field),
    /// `min(field)`.
    Min(Field),
    /// `max(field)`.
    Max(Field),
    /// `sum(field)`.
    Sum(Field),
}

/// The metrics function that ends a metrics query, with its optional `by (...)` grouping.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsStage {
    /// The function.
    pub function: MetricsFunction,
    /// The grouping fields of `by (...)`; empty for no grouping.
    pub by: Vec<Field>,
}

/// A TraceQL metrics function.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricsFunction {
    /// `rate()`: matching spans per second.
    Rate,
    /// `count_over_time()`: matching spans per step.
    CountOverTime,
    /// `quantile_over_time(field, q, ...)`: quantiles of the field per step; each `q` in `[0, 1]`.
    QuantileOverTime {
        /// The field whose values are ranked.
        field: Field,
        /// The quantiles, at least one, each between 0 and 1.
        quantiles: Vec<f64>,
    },
    /// `min_over_time(field)`.
    MinOverTime(Field),
    /// `max_over_time(field)`.
    MaxOverTime(Field),
    /// `avg_over_time(field)`.
    AvgOverTime(Field),
    /// `sum_over_time(field)`.
    SumOverTime(Field),
    /// `histogram_over_time(field)`.
    HistogramOverTime(Field),
}

impl MetricsFunction {
    /// The function name as written in TraceQL.
    pub fn name(&self) -> &'static str {
        match self {
            MetricsFunction::Rate => "rate",
            MetricsFunction::CountOverTime => "count_over_time",
            MetricsFunction::QuantileOverTime { .. } => "quantile_over_time",
            MetricsFunction::MinOverTime(_) => "min_over_time",
            MetricsFunction::MaxOverTime(_) => "max_over_time",
            MetricsFunction::AvgOverTime(_) => "avg_over_time",
            MetricsFunction::SumOverTime(_) => "sum_over_time",
            MetricsFunction::HistogramOverTime(_) => "histogram_over_time",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Canonical printing.

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.spansets)?;
        for stage in &self.pipeline {
            write!(f, " | {stage}")?;
        }
        if let Some(metrics) = &self.metrics {
            write!(f, " | {metrics}")?;
        }
        Ok(())
    }
}

impl fmt::Display for SpansetExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpansetExpr::Filter(filter) => write!(f, "{filter}"),
            SpansetExpr::And(items) => join(f, items, " && ", |e| {
                matches!(e, SpansetExpr::And(_) | SpansetExpr::Or(_))
            }),
            SpansetExpr::Or(items) => join(f, items, " || ", |e| matches!(e, SpansetExpr::Or(_))),
            SpansetExpr::Structural { op, lhs, rhs } => {
                let lhs_parens = matches!(**lhs, SpansetExpr::And(_) | SpansetExpr::Or(_));
                let rhs_parens = !matches!(**rhs, SpansetExpr::Filter(_));
                write_maybe_parens(f, lhs, lhs_parens)?;
                write!(f, " {} ", op.as_str())?;
                write_maybe_parens(f, rhs, rhs_parens)
            }
        }
    }
}

impl fmt::Display for SpansetFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.condition {
            None => f.write_str("{ }"),
            Some(c) => write!(f, "{{ {c} }}"),
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::Compare(c) => write!(f, "{c}"),
            Condition::Bool(b) => write!(f, "{b}"),
            Condition::Not(inner) => write!(f, "!({inner})"),
            Condition::And(items) => join(f, items, " && ", |c| {
                matches!(c, Condition::And(_) | Condition::Or(_))
            }),
            Condition::Or(items) => join(f, items, " || ", |c| matches!(c, Condition::Or(_))),
        }
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.field, self.op.as_str(), self.value)
    }
}

impl fmt::Display for CompareOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for StructuralOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Attribute(a) => write!(f, "{a}"),
            Field::Intrinsic(i) => write!(f, "{i}"),
        }
    }
}

impl fmt::Display for Intrinsic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.scope.prefix())?;
        if is_plain_attribute_name(&self.name) {
            f.write_str(&self.name)
        } else {
            write_quoted(f, &self.name)
        }
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::String(s) => write_quoted(f, s),
            Literal::Int(i) => write!(f, "{i}"),
            // `{:?}` prints the shortest text that reads back as the same f64, always with a `.`
            // or an exponent, so it never reads back as an integer.
            Literal::Float(x) => write!(f, "{x:?}"),
            Literal::Duration(d) => write_duration(f, *d),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Nil => f.write_str("nil"),
            Literal::Status(s) => f.write_str(s.as_str()),
            Literal::Kind(k) => f.write_str(k.as_str()),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for SpanKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stage::Filter(e) => write!(f, "{e}"),
            Stage::ScalarFilter(s) => write!(f, "{s}"),
            Stage::By(fields) => {
                f.write_str("by(")?;
                join(f, fields, ", ", |_| false)?;
                f.write_str(")")
            }
            Stage::Select(fields) => {
                f.write_str("select(")?;
                join(f, fields, ", ", |_| false)?;
                f.write_str(")")
            }
            Stage::Coalesce => f.write_str("coalesce()"),
        }
    }
}

impl fmt::Display for ScalarFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.aggregate, self.op.as_str(), self.value)
    }
}

impl fmt::Display for Aggregate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Aggregate::Count => f.write_str("count()"),
            Aggregate::Avg(field) => write!(f, "avg({field})"),
            Aggregate::Min(field) => write!(f, "min({field})"),
            Aggregate::Max(field) => write!(f, "max({field})"),
            Aggregate::Sum(field) => write!(f, "sum({field})"),
        }
    }
}

impl fmt::Display for MetricsStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.function)?;
        if !self.by.is_empty() {
            f.write_str(" by (")?;
            join(f, &self.by, ", ", |_| false)?;
            f.write_str(")")?;
        }
        Ok(())
    }
}

impl fmt::Display for MetricsFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.name();
        match self {
            MetricsFunction::Rate | MetricsFunction::CountOverTime => write!(f, "{name}()"),
            MetricsFunction::QuantileOverTime { field, quantiles } => {
                write!(f, "{name}({field}")?;
                for q in quantiles {
                    write!(f, ", {}", Literal::Float(*q))?;
                }
                f.write_str(")")
            }
            MetricsFunction::MinOverTime(field)
            | MetricsFunction::MaxOverTime(field)
            | MetricsFunction::AvgOverTime(field)
            | MetricsFunction::SumOverTime(field)
            | MetricsFunction::HistogramOverTime(field) => write!(f, "{name}({field})"),
        }
    }
}

fn join<T: fmt::Display>(
    f: &mut fmt::Formatter<'_>,
    items: &[T],
    sep: &str,
    needs_parens: impl Fn(&T) -> bool,
) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(sep)?;
        }
        write_maybe_parens(f, item, needs_parens(item))?;
    }
    Ok(())
}

fn write_maybe_parens(
    f: &mut fmt::Formatter<'_>,
    item: impl fmt::Display,
    parens: bool,
) -> fmt::Result {
    if parens {
        write!(f, "({item})")
    } else {
        write!(f, "{item}")
    }
}

/// Characters that end an unquoted attribute name (besides whitespace). The lexer uses the
/// same set, so a name printed unquoted reads back whole.
pub(crate) fn ends_attribute_name(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '{' | '}' | '(' | ')' | '=' | '~' | '!' | '<' | '>' | '&' | '|' | '^' | ',' | '"' | '`'
        )
}

/// True when the name can be printed after its scope without quotes.
fn is_plain_attribute_name(name: &str) -> bool {
    // A leading digit could read back as a number (`.99`), a leading quote as a quoted name.
    name.chars().next().is_some_and(|c| !c.is_ascii_digit())
        && !name.chars().any(ends_attribute_name)
}

fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if (c as u32) < 0x20 || c as u32 == 0x7f => write!(f, "\\x{:02x}", c as u32)?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

/// Duration units, largest first, in nanoseconds.
pub(crate) const DURATION_UNITS: [(&str, u128); 6] = [
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

/// Prints a duration in the largest unit that holds it exactly: `1500ms`, `90m`, `2h`.
fn write_duration(f: &mut fmt::Formatter<'_>, d: Duration) -> fmt::Result {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return f.write_str("0s");
    }
    // "ns" (size 1) always fits, so the fallback is never used.
    let (unit, size) = DURATION_UNITS
        .into_iter()
        .find(|(_, size)| nanos.is_multiple_of(*size))
        .unwrap_or(("ns", 1));
    write!(f, "{}{unit}", nanos / size)
}
