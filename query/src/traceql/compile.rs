//! TraceQL span conditions compiled to DataFusion expressions over the `spans` table.
//!
//! A condition compiles twice:
//!
//! - [`prune`] gives a *necessary* condition that needs only the span's own row. It goes into
//!   the first, trace-finding scan, where DataFusion pushes it into the Parquet reader
//!   (statistics, bloom filters, late materialisation). Atoms that need the whole trace
//!   (`traceDuration`, `rootName`, `rootServiceName`, `childCount`) relax to "true" there.
//! - [`exact`] gives the condition itself, evaluated over the spans of the candidate traces,
//!   where the per-trace columns ([`TRACE_DURATION`], ...) have been joined in.
//!
//! Values are typed as in Tempo: a comparison holds only when the attribute has a value of a
//! comparable type (a string attribute never equals the int `500`; ints and floats compare
//! with each other), and a comparison with a missing attribute is false. `nil` tests presence.
//! Comparisons are two-valued: `!` of a comparison on a missing attribute is true.
//!
//! Attributes are read from the attribute maps (`span_attributes['k']['str']`), which hold
//! every attribute exactly as sent. Where tracelake also keeps a typed copy in a dedicated
//! column, string comparisons read that column instead (it prunes by Parquet statistics and
//! skips the map): the column holds exactly the first string value of that key. For keys whose
//! column merges a legacy name (`http.response.status_code` with `http.status_code`, ...), the
//! column comparison is added as a hint beside the exact map comparison, for pruning only.

use datafusion::functions::core::expr_fn::get_field;
use datafusion::logical_expr::{binary_expr, cast, Expr, Operator};
use datafusion::prelude::{col, lit};
use datafusion::scalar::ScalarValue;
use tracelake_proto::{attr_type, columns};

use super::ast::{
    Attribute, AttributeScope, CompareOp, Comparison, Condition, Field, Intrinsic, Literal,
    SpansetExpr, Stage,
};
use crate::error::{Error, Result};

/// Per-trace column joined in for the exact phase: the trace's duration, nanoseconds.
pub(crate) const TRACE_DURATION: &str = "__tl_trace_duration";
/// Per-trace column: the root span's name.
pub(crate) const ROOT_NAME: &str = "__tl_root_name";
/// Per-trace column: the root span's service.
pub(crate) const ROOT_SERVICE: &str = "__tl_root_service";
/// Per-span column: the number of spans whose parent is this span.
pub(crate) const CHILD_COUNT: &str = "__tl_child_count";

/// The query's span conditions that need per-trace columns in the exact phase.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceColumns {
    /// `traceDuration`, `rootName` or `rootServiceName` is used.
    pub(crate) trace_level: bool,
    /// `childCount` is used.
    pub(crate) child_count: bool,
}

impl TraceColumns {
    fn add(&mut self, field: &Field) {
        if let Field::Intrinsic(i) = field {
            match i {
                Intrinsic::TraceDuration
                | Intrinsic::TraceRootName
                | Intrinsic::TraceRootService => self.trace_level = true,
                Intrinsic::SpanChildCount => self.child_count = true,
                _ => {}
            }
        }
    }

    /// Which per-trace columns `fields` need.
    pub(crate) fn of<'a>(fields: impl IntoIterator<Item = &'a Field>) -> Self {
        let mut out = Self::default();
        for f in fields {
            out.add(f);
        }
        out
    }
}

/// True when `field` can only be known with the whole trace at hand.
pub(crate) fn needs_trace(field: &Field) -> bool {
    TraceColumns::of([field]) != TraceColumns::default()
}

/// Every field a condition reads, in order of appearance.
pub(crate) fn condition_fields<'a>(c: &'a Condition, out: &mut Vec<&'a Field>) {
    match c {
        Condition::Compare(cmp) => out.push(&cmp.field),
        Condition::Bool(_) => {}
        Condition::Not(c) => condition_fields(c, out),
        Condition::And(cs) | Condition::Or(cs) => cs.iter().for_each(|c| condition_fields(c, out)),
    }
}

/// The spanset filters of an expression, left to right (the leaves of its tree).
pub(crate) fn leaves<'a>(e: &'a SpansetExpr, out: &mut Vec<&'a Option<Condition>>) {
    match e {
        SpansetExpr::Filter(f) => out.push(&f.condition),
        SpansetExpr::And(es) | SpansetExpr::Or(es) => es.iter().for_each(|e| leaves(e, out)),
        SpansetExpr::Structural { lhs, rhs, .. } => {
            leaves(lhs, out);
            leaves(rhs, out);
        }
    }
}

/// Every spanset filter of a query: the spanset expression's, then those of pipeline stages.
pub(crate) fn query_leaves<'a>(
    spansets: &'a SpansetExpr,
    pipeline: &'a [Stage],
) -> Vec<&'a Option<Condition>> {
    let mut out = Vec::new();
    leaves(spansets, &mut out);
    for stage in pipeline {
        if let Stage::Filter(e) = stage {
            leaves(e, &mut out);
        }
    }
    out
}

/// The condition itself, over a row of `spans` joined with the per-trace columns that
/// [`TraceColumns::of`] asks for. Two-valued: the result is never NULL.
pub(crate) fn exact(c: &Condition) -> Result<Expr> {
    Ok(exact_inner(c)?.is_true())
}

fn exact_inner(c: &Condition) -> Result<Expr> {
    Ok(match c {
        Condition::Compare(cmp) => comparison(cmp)?,
        Condition::Bool(b) => lit(*b),
        Condition::Not(c) => exact_inner(c)?.is_not_true(),
        Condition::And(cs) => conjunction(cs.iter().map(exact_inner).collect::<Result<_>>()?),
        Condition::Or(cs) => disjunction(cs.iter().map(exact_inner).collect::<Result<_>>()?),
    })
}

/// A necessary condition for `c` that reads only the span's own row, or `None` when every span
/// may match. NULL results count as false (it is used as a filter).
pub(crate) fn prune(c: &Condition) -> Result<Option<Expr>> {
    Ok(match c {
        Condition::Compare(cmp) if needs_trace(&cmp.field) => None,
        Condition::Compare(cmp) => Some(comparison(cmp)?),
        Condition::Bool(true) => None,
        Condition::Bool(false) => Some(lit(false)),
        Condition::Not(inner) => {
            let mut fields = Vec::new();
            condition_fields(inner, &mut fields);
            if fields.iter().any(|f| needs_trace(f)) {
                None
            } else {
                Some(exact_inner(inner)?.is_not_true())
            }
        }
        Condition::And(cs) => {
            let parts: Vec<Expr> = cs
                .iter()
                .map(prune)
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .flatten()
                .collect();
            (!parts.is_empty()).then(|| conjunction(parts))
        }
        Condition::Or(cs) => {
            let parts = cs.iter().map(prune).collect::<Result<Vec<_>>>()?;
            parts
                .into_iter()
                .collect::<Option<Vec<Expr>>>()
                .map(disjunction)
        }
    })
}

fn conjunction(parts: Vec<Expr>) -> Expr {
    parts
        .into_iter()
        .reduce(Expr::and)
        .unwrap_or_else(|| lit(true))
}

fn disjunction(parts: Vec<Expr>) -> Expr {
    parts
        .into_iter()
        .reduce(Expr::or)
        .unwrap_or_else(|| lit(false))
}

fn operator(op: CompareOp) -> Operator {
    match op {
        CompareOp::Eq => Operator::Eq,
        CompareOp::Ne => Operator::NotEq,
        CompareOp::Gt => Operator::Gt,
        CompareOp::Ge => Operator::GtEq,
        CompareOp::Lt => Operator::Lt,
        CompareOp::Le => Operator::LtEq,
        CompareOp::Regex => Operator::RegexMatch,
        CompareOp::NotRegex => Operator::RegexNotMatch,
    }
}

/// `lhs op value`, with regexes fully anchored (RE2 semantics, as Tempo).
/// `lhs op value` (regex operators expect [`string_rhs`]'s anchored pattern).
pub(crate) fn compare(lhs: Expr, op: CompareOp, value: Expr) -> Expr {
    binary_expr(lhs, operator(op), value)
}

/// A string literal as the right side of `op`: regexes fully anchored (RE2 semantics, as Tempo).
pub(crate) fn string_rhs(op: CompareOp, s: &str) -> Expr {
    if op.is_regex() {
        lit(format!("^(?:{s})$"))
    } else {
        lit(s.to_string())
    }
}

fn unsupported(what: impl Into<String>) -> Error {
    Error::Unsupported(what.into())
}

fn comparison(cmp: &Comparison) -> Result<Expr> {
    match &cmp.field {
        Field::Intrinsic(i) => intrinsic_comparison(*i, cmp.op, &cmp.value),
        Field::Attribute(a) => attribute_comparison(a, cmp.op, &cmp.value),
    }
}

/// The bytes of a hex id literal, left-padded with zeros to `len` bytes.
pub(crate) fn id_bytes(hex_id: &str, len: usize) -> Result<Vec<u8>> {
    let hex_id = hex_id.trim();
    let valid = !hex_id.is_empty()
        && hex_id.len() <= len * 2
        && hex_id.bytes().all(|b| b.is_ascii_hexdigit());
    if !valid {
        return Err(unsupported(format!(
            "{hex_id:?} is not an id: expected up to {} hex digits",
            len * 2
        )));
    }
    let padded = format!("{hex_id:0>width$}", width = len * 2);
    Ok((0..len)
        .map(|i| u8::from_str_radix(&padded[2 * i..2 * i + 2], 16).unwrap_or(0))
        .collect())
}

fn intrinsic_comparison(i: Intrinsic, op: CompareOp, value: &Literal) -> Result<Expr> {
    let column = |name: &str| col(name);
    let (lhs, rhs) = match (i, value) {
        (_, Literal::Nil) => {
            // Intrinsics always exist, except a root span's parent id.
            let present = match i {
                Intrinsic::SpanParentId => is_present_id(col(columns::PARENT_SPAN_ID)),
                _ => lit(true),
            };
            return Ok(match op {
                CompareOp::Eq => present.is_not_true(),
                _ => present,
            });
        }
        (Intrinsic::SpanName, Literal::String(s)) => (column(columns::NAME), string_rhs(op, s)),
        (Intrinsic::SpanStatusMessage, Literal::String(s)) => {
            (column(columns::STATUS_MESSAGE), string_rhs(op, s))
        }
        (Intrinsic::TraceRootName, Literal::String(s)) => (column(ROOT_NAME), string_rhs(op, s)),
        (Intrinsic::TraceRootService, Literal::String(s)) => {
            (column(ROOT_SERVICE), string_rhs(op, s))
        }
        (Intrinsic::InstrumentationName, Literal::String(s)) => {
            (column(columns::SCOPE_NAME), string_rhs(op, s))
        }
        (Intrinsic::InstrumentationVersion, Literal::String(s)) => {
            (column(columns::SCOPE_VERSION), string_rhs(op, s))
        }
        (Intrinsic::SpanStatus, Literal::Status(s)) => {
            (column(columns::STATUS_CODE), lit(s.otlp_code()))
        }
        (Intrinsic::SpanKind, Literal::Kind(k)) => (column(columns::KIND), lit(k.otlp_code())),
        (Intrinsic::SpanDuration, Literal::Duration(d)) => {
            (column(columns::DURATION_NANO), lit(nanos(d)))
        }
        (Intrinsic::TraceDuration, Literal::Duration(d)) => (column(TRACE_DURATION), lit(nanos(d))),
        (Intrinsic::SpanChildCount, Literal::Int(n)) => (column(CHILD_COUNT), lit(*n)),
        (Intrinsic::SpanChildCount, Literal::Float(f)) => (
            cast(column(CHILD_COUNT), arrow::datatypes::DataType::Float64),
            lit(*f),
        ),
        (Intrinsic::SpanId, Literal::String(s)) => (
            column(columns::SPAN_ID),
            lit(ScalarValue::Binary(Some(id_bytes(s, 8)?))),
        ),
        (Intrinsic::SpanParentId, Literal::String(s)) => (
            column(columns::PARENT_SPAN_ID),
            lit(ScalarValue::Binary(Some(id_bytes(s, 8)?))),
        ),
        (Intrinsic::TraceId, Literal::String(s)) => (
            column(columns::TRACE_ID),
            lit(ScalarValue::Binary(Some(id_bytes(s, 16)?))),
        ),
        (
            Intrinsic::EventName
            | Intrinsic::EventTimeSinceStart
            | Intrinsic::LinkTraceId
            | Intrinsic::LinkSpanId,
            _,
        ) => {
            return Err(unsupported(format!(
                "{} is not supported yet: event and link fields cannot be searched",
                i.as_str()
            )))
        }
        (i, v) => {
            return Err(unsupported(format!(
                "cannot compare {} with {v}",
                i.as_str()
            )))
        }
    };
    if op.is_regex() && !matches!(value, Literal::String(_)) {
        return Err(unsupported(format!("{} needs a string regex", op.as_str())));
    }
    Ok(compare(lhs, op, rhs))
}

/// Non-null and not empty: OTLP sends root spans with an empty parent id.
pub(crate) fn is_present_id(id: Expr) -> Expr {
    id.clone()
        .is_not_null()
        .and(id.not_eq(lit(ScalarValue::Binary(Some(Vec::new())))))
}

fn nanos(d: &std::time::Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// The map column of an attribute scope.
pub(crate) fn map_column(scope: AttributeScope) -> Result<&'static str> {
    match scope {
        AttributeScope::Span => Ok(columns::SPAN_ATTRIBUTES),
        AttributeScope::Resource => Ok(columns::RESOURCE_ATTRIBUTES),
        AttributeScope::Instrumentation => Ok(columns::SCOPE_ATTRIBUTES),
        AttributeScope::Event | AttributeScope::Link => Err(unsupported(format!(
            "{}* attributes are not supported yet: event and link fields cannot be searched",
            scope.prefix()
        ))),
        AttributeScope::Unscoped => Err(Error::Internal(
            "unscoped attribute has no single map".into(),
        )),
    }
}

/// How a dedicated column relates to an attribute.
enum Dedicated {
    /// The column holds exactly the first string value of the key.
    Exact(&'static str),
    /// The column holds the key's value when present (string, or int for the status code), and
    /// otherwise a legacy key's: a comparison on it is implied by one on the attribute.
    Hint(&'static str),
}

fn dedicated(scope: AttributeScope, key: &str) -> Option<Dedicated> {
    use Dedicated::*;
    Some(match (scope, key) {
        (AttributeScope::Resource, "service.name") => Exact(columns::SERVICE_NAME),
        (AttributeScope::Resource, "service.namespace") => Exact(columns::SERVICE_NAMESPACE),
        (AttributeScope::Resource, "k8s.namespace.name") => Exact(columns::K8S_NAMESPACE_NAME),
        (AttributeScope::Resource, "k8s.pod.name") => Exact(columns::K8S_POD_NAME),
        (AttributeScope::Resource, "k8s.deployment.name") => Exact(columns::K8S_DEPLOYMENT_NAME),
        (AttributeScope::Resource, "k8s.node.name") => Exact(columns::K8S_NODE_NAME),
        (AttributeScope::Resource, "k8s.cluster.name") => Exact(columns::K8S_CLUSTER_NAME),
        (AttributeScope::Resource, "deployment.environment.name") => {
            Hint(columns::DEPLOYMENT_ENVIRONMENT)
        }
        (AttributeScope::Span, "http.route") => Exact(columns::HTTP_ROUTE),
        (AttributeScope::Span, "rpc.service") => Exact(columns::RPC_SERVICE),
        (AttributeScope::Span, "http.request.method") => Hint(columns::HTTP_REQUEST_METHOD),
        (AttributeScope::Span, "url.path") => Hint(columns::URL_PATH),
        (AttributeScope::Span, "db.system.name") => Hint(columns::DB_SYSTEM),
        (AttributeScope::Span, "http.response.status_code") => {
            Hint(columns::HTTP_RESPONSE_STATUS_CODE)
        }
        _ => return None,
    })
}

/// The dedicated `spans` column that holds exactly the first string value of an attribute, if
/// there is one (`resource.service.name` -> `service_name`, `span.http.route` -> `http_route`).
pub(crate) fn exact_column(scope: AttributeScope, key: &str) -> Option<&'static str> {
    match dedicated(scope, key) {
        Some(Dedicated::Exact(column)) => Some(column),
        _ => None,
    }
}

/// The attribute's value struct (`{type, str, int, double, bool, bytes}`), NULL when absent.
pub(crate) fn attribute_value(scope: AttributeScope, key: &str) -> Result<Expr> {
    Ok(get_field(col(map_column(scope)?), key))
}

fn attribute_comparison(a: &Attribute, op: CompareOp, value: &Literal) -> Result<Expr> {
    if a.scope == AttributeScope::Unscoped {
        // `.x`: the span's attribute or the resource's.
        let span = scoped_comparison(AttributeScope::Span, &a.name, op, value)?;
        let resource = scoped_comparison(AttributeScope::Resource, &a.name, op, value)?;
        return Ok(match (op, value) {
            // `.x = nil`: neither has it.
            (CompareOp::Eq, Literal::Nil) => span.and(resource),
            _ => span.or(resource),
        });
    }
    scoped_comparison(a.scope, &a.name, op, value)
}

fn scoped_comparison(
    scope: AttributeScope,
    key: &str,
    op: CompareOp,
    value: &Literal,
) -> Result<Expr> {
    let value_struct = attribute_value(scope, key)?;
    let part = |name: &str| get_field(value_struct.clone(), name);
    let of_type = |t: i8| part(columns::attr_value::TYPE).eq(lit(t));
    let exact = match value {
        Literal::Nil => {
            return Ok(match op {
                CompareOp::Eq => value_struct.is_null(),
                _ => value_struct.is_not_null(),
            })
        }
        Literal::String(s) => {
            if let Some(Dedicated::Exact(column)) = dedicated(scope, key) {
                return Ok(compare(col(column), op, string_rhs(op, s)));
            }
            of_type(attr_type::STRING).and(compare(
                part(columns::attr_value::STR),
                op,
                string_rhs(op, s),
            ))
        }
        _ if op.is_regex() => {
            return Err(unsupported(format!(
                "{} needs a string regex, found {value}",
                op.as_str()
            )))
        }
        Literal::Int(n) => of_type(attr_type::INT)
            .and(compare(part(columns::attr_value::INT), op, lit(*n)))
            .or(of_type(attr_type::DOUBLE).and(compare(
                part(columns::attr_value::DOUBLE),
                op,
                lit(*n as f64),
            ))),
        Literal::Float(f) => of_type(attr_type::DOUBLE)
            .and(compare(part(columns::attr_value::DOUBLE), op, lit(*f)))
            .or(of_type(attr_type::INT).and(compare(
                cast(
                    part(columns::attr_value::INT),
                    arrow::datatypes::DataType::Float64,
                ),
                op,
                lit(*f),
            ))),
        Literal::Duration(d) => {
            of_type(attr_type::INT).and(compare(part(columns::attr_value::INT), op, lit(nanos(d))))
        }
        Literal::Bool(b) => {
            if op.is_ordering() {
                return Err(unsupported(format!(
                    "{} does not apply to booleans",
                    op.as_str()
                )));
            }
            of_type(attr_type::BOOL).and(compare(part(columns::attr_value::BOOL), op, lit(*b)))
        }
        Literal::Status(_) | Literal::Kind(_) => {
            return Err(unsupported(format!(
                "cannot compare the attribute {}{key} with {value}",
                scope.prefix()
            )))
        }
    };
    // A pruning hint on the typed column, implied by the exact comparison (the column copies
    // the attribute when it is present). For the status code, the int column is read first:
    // a double-typed `http.response.status_code` beside a legacy `http.status_code` holding a
    // different value would be missed, an accepted corner for a much cheaper scan.
    let hint = match (dedicated(scope, key), value) {
        (Some(Dedicated::Hint(column)), Literal::String(s))
            if column != columns::HTTP_RESPONSE_STATUS_CODE =>
        {
            Some(compare(col(column), op, string_rhs(op, s)))
        }
        (Some(Dedicated::Hint(column)), Literal::Int(n))
            if column == columns::HTTP_RESPONSE_STATUS_CODE
                && (op.is_ordering() || op == CompareOp::Eq) =>
        {
            Some(compare(col(column), op, lit(*n)))
        }
        _ => None,
    };
    Ok(match hint {
        Some(hint) => hint.and(exact),
        None => exact,
    })
}
