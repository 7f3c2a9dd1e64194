//! RED (rate, errors, duration) series of one service, from the `span_metrics_1m` rollups.
//!
//! ```text
//!  span_metrics_1m WHERE service AND kind AND minute in [start, end]
//!    GROUP BY step bucket, operation | route:  Σ count, Σ error_count, ddsketch_merge(sketch)
//!    -> per group: one point per step with spans (rate/s, error rate, p50/p90/p99),
//!       and the totals over the window
//! ```
//!
//! Counts are weighted (Σ `adjusted_count`), so rates stay unbiased under sampling; quantiles
//! come from merged sketches (1 % relative accuracy). Rollups are written at flush, so the
//! newest few seconds appear after the next flush.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int64Type};
use datafusion::execution::FunctionRegistry as _;
use datafusion::functions_aggregate::expr_fn::sum;
use datafusion::prelude::{col, lit, Expr};
use sketches_ddsketch::DDSketch;
use tracelake_storage::rollup::{rollup_columns as c, ROLLUP_DATASET};

use crate::engine::partition_filter;
use crate::error::{Error, Result};
use crate::sketch::{decode, new_sketch};
use crate::{QueryEngine, TimeRange};

/// What the series are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedGroupBy {
    /// The span name.
    Operation,
    /// `http.route` (spans without one form the group `""`).
    Route,
}

/// A RED query.
#[derive(Debug, Clone)]
pub struct RedRequest {
    /// The service (`service.name`).
    pub service: String,
    /// Series per operation or per route.
    pub group_by: RedGroupBy,
    /// Only spans of this kind (OTLP number); `None` for every kind.
    pub kind: Option<i32>,
    /// Window start, unix seconds (inclusive; rounded down to the minute).
    pub start_secs: u64,
    /// Window end, unix seconds (exclusive).
    pub end_secs: u64,
    /// Seconds per point: a positive multiple of 60.
    pub step_secs: u64,
}

/// Rate, error rate and latency quantiles over some span of time.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RedPoint {
    /// Start of the step, unix seconds (for totals: the window's start).
    pub timestamp_secs: u64,
    /// Σ adjusted_count: the spans before sampling.
    pub count: f64,
    /// Spans per second.
    pub rate: f64,
    /// Error spans (status ERROR or HTTP status ≥ 500) / spans.
    pub error_rate: f64,
    /// Median duration, milliseconds (`None` without spans).
    pub p50_ms: Option<f64>,
    /// 90th percentile duration, milliseconds.
    pub p90_ms: Option<f64>,
    /// 99th percentile duration, milliseconds.
    pub p99_ms: Option<f64>,
}

/// One operation's (or route's) series.
#[derive(Debug, Clone, PartialEq)]
pub struct RedSeries {
    /// The span name or route.
    pub group: String,
    /// One point per step that had spans, oldest first.
    pub points: Vec<RedPoint>,
    /// The whole window.
    pub total: RedPoint,
}

/// At most this many points per series.
pub const MAX_RED_POINTS: u64 = 11_000;

impl RedRequest {
    /// Checks the window and step; the error says what to change.
    pub fn validate(&self) -> Result<()> {
        if self.service.is_empty() {
            return Err(Error::InvalidRequest("service is required".into()));
        }
        if self.end_secs <= self.start_secs {
            return Err(Error::InvalidRequest(format!(
                "end ({}) must be after start ({})",
                self.end_secs, self.start_secs
            )));
        }
        if self.step_secs == 0 || !self.step_secs.is_multiple_of(60) {
            return Err(Error::InvalidRequest(format!(
                "step {}s must be a positive whole number of minutes (rollups are per minute)",
                self.step_secs
            )));
        }
        let points = (self.end_secs - self.start_secs).div_ceil(self.step_secs);
        if points > MAX_RED_POINTS {
            return Err(Error::InvalidRequest(format!(
                "{points} points per series; at most {MAX_RED_POINTS}: use a larger step or a \
                 shorter window"
            )));
        }
        Ok(())
    }
}

struct Acc {
    count: f64,
    errors: f64,
    sketch: DDSketch,
}

impl Acc {
    fn point(&self, timestamp_secs: u64, seconds: u64) -> RedPoint {
        let q = |q: f64| {
            self.sketch
                .quantile(q)
                .ok()
                .flatten()
                .map(|nanos| nanos / 1e6)
        };
        RedPoint {
            timestamp_secs,
            count: self.count,
            rate: self.count / seconds.max(1) as f64,
            error_rate: if self.count > 0.0 {
                self.errors / self.count
            } else {
                0.0
            },
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
        }
    }
}

impl QueryEngine {
    /// The RED series of one service over a window (see the module docs).
    pub async fn red(&self, tenant: &str, req: RedRequest) -> Result<Vec<RedSeries>> {
        req.validate()?;
        let ctx = self.context(tenant)?;
        self.run(async move {
            let start_nanos = (req.start_secs - req.start_secs % 60) as i64 * 1_000_000_000;
            let end_nanos = req.end_secs as i64 * 1_000_000_000;
            let step = req.step_secs as i64 * 1_000_000_000;
            let minute = || col(c::MINUTE);
            let mut filter = col(c::SERVICE_NAME)
                .eq(lit(req.service.clone()))
                .and(minute().gt_eq(lit(start_nanos)))
                .and(minute().lt(lit(end_nanos)))
                .and(partition_filter(TimeRange {
                    start_unix_nano: start_nanos as u64,
                    end_unix_nano: (end_nanos as u64).saturating_sub(1),
                }));
            if let Some(kind) = req.kind {
                filter = filter.and(col(c::SPAN_KIND).eq(lit(kind)));
            }
            let group: Expr = match req.group_by {
                RedGroupBy::Operation => col(c::SPAN_NAME),
                RedGroupBy::Route => col(c::HTTP_ROUTE),
            };
            let bucket = (minute() - (minute() - lit(start_nanos)) % lit(step)).alias("bucket");
            let merge = ctx
                .udaf("ddsketch_merge")
                .map_err(|e| Error::Internal(format!("sketch functions: {e}")))?;
            let batches = ctx
                .table(ROLLUP_DATASET)
                .await?
                .filter(filter)?
                .aggregate(
                    vec![bucket, group.alias("grp")],
                    vec![
                        sum(col(c::COUNT)).alias("count"),
                        sum(col(c::ERROR_COUNT)).alias("errors"),
                        merge.call(vec![col(c::DURATION_SKETCH)]).alias("sketch"),
                    ],
                )?
                .collect()
                .await?;
            let mut groups: BTreeMap<String, BTreeMap<i64, Acc>> = BTreeMap::new();
            for b in &batches {
                let buckets = b.column(0).as_primitive::<Int64Type>();
                let names = arrow::compute::cast(b.column(1), &arrow::datatypes::DataType::Utf8)
                    .map_err(|e| Error::Internal(format!("RED groups: {e}")))?;
                let names = names.as_string::<i32>();
                let counts = b.column(2).as_primitive::<Float64Type>();
                let errors = b.column(3).as_primitive::<Float64Type>();
                let sketches = b.column(4).as_binary::<i32>();
                for i in 0..b.num_rows() {
                    let name = if names.is_valid(i) {
                        names.value(i)
                    } else {
                        ""
                    };
                    let sketch = if sketches.is_valid(i) {
                        decode(sketches.value(i))?
                    } else {
                        new_sketch()
                    };
                    let per_bucket = groups.entry(name.to_string()).or_default();
                    let acc = per_bucket.entry(buckets.value(i)).or_insert_with(|| Acc {
                        count: 0.0,
                        errors: 0.0,
                        sketch: new_sketch(),
                    });
                    acc.count += counts.value(i);
                    acc.errors += errors.value(i);
                    acc.sketch
                        .merge(&sketch)
                        .map_err(|e| Error::Internal(format!("sketch merge: {e}")))?;
                }
            }
            let mut out = Vec::with_capacity(groups.len());
            for (group, buckets) in groups {
                let mut total = Acc {
                    count: 0.0,
                    errors: 0.0,
                    sketch: new_sketch(),
                };
                let mut points = Vec::with_capacity(buckets.len());
                for (bucket, acc) in &buckets {
                    points.push(acc.point((*bucket / 1_000_000_000) as u64, req.step_secs));
                    total.count += acc.count;
                    total.errors += acc.errors;
                    total
                        .sketch
                        .merge(&acc.sketch)
                        .map_err(|e| Error::Internal(format!("sketch merge: {e}")))?;
                }
                let window = req.end_secs - req.start_secs;
                out.push(RedSeries {
                    group,
                    points,
                    total: total.point(req.start_secs, window),
                });
            }
            Ok(out)
        })
        .await
    }
}
