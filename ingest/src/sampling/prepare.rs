//! Per-request work done before the WAL append, off the IO threads: split a span batch by
//! trace, and fold upstream sampling into `adjusted_count`.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, RecordBatch, StringArray};
use arrow::datatypes::Float64Type;
use tracelake_proto::{attr_type, columns};

/// A trace id as a number (big-endian bytes).
pub type TraceId = u128;

/// One request's spans, grouped by trace. The batch is not copied: each trace is a list of
/// row indices into it, so the spans of dropped traces are never moved.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    /// The request's spans (None for an empty request).
    pub batch: Option<RecordBatch>,
    /// The row indices of each trace, in order of first appearance.
    pub traces: Vec<(TraceId, Arc<[u32]>)>,
    /// Estimated memory of each trace's spans (by rows).
    pub bytes: Vec<usize>,
}

impl Prepared {
    /// Total spans.
    pub fn spans(&self) -> usize {
        self.batch.as_ref().map_or(0, RecordBatch::num_rows)
    }
}

/// The trace id of a 16-byte id; other lengths (never valid OTLP) are folded into 16 bytes.
pub fn trace_id_of(bytes: &[u8]) -> TraceId {
    match <[u8; 16]>::try_from(bytes) {
        Ok(b) => u128::from_be_bytes(b),
        Err(_) => {
            let mut b = [0u8; 16];
            for (i, x) in bytes.iter().enumerate() {
                b[i % 16] ^= x;
            }
            u128::from_be_bytes(b)
        }
    }
}

/// Groups the rows of `batch` by trace id, after multiplying each span's `adjusted_count` by the
/// inverse of its upstream sampling probability (`th` in tracestate, or a sample-rate
/// attribute).
pub fn prepare(
    batch: RecordBatch,
    rate_attributes: &[String],
) -> Result<Prepared, arrow::error::ArrowError> {
    let rows = batch.num_rows();
    if rows == 0 {
        return Ok(Prepared::default());
    }
    let batch = apply_upstream(batch, rate_attributes)?;
    let per_row = batch.get_array_memory_size() / rows + 1;
    let ids = batch
        .column_by_name(columns::TRACE_ID)
        .expect("span batch has trace_id")
        .as_binary::<i32>();
    let mut order: Vec<TraceId> = Vec::new();
    let mut groups: HashMap<TraceId, Vec<u32>> = HashMap::new();
    for i in 0..rows {
        let id = trace_id_of(ids.value(i));
        groups
            .entry(id)
            .or_insert_with(|| {
                order.push(id);
                Vec::new()
            })
            .push(i as u32);
    }
    let mut traces = Vec::with_capacity(order.len());
    let mut bytes = Vec::with_capacity(order.len());
    for id in order {
        let g = groups.remove(&id).expect("grouped");
        bytes.push(per_row * g.len());
        traces.push((id, Arc::from(g)));
    }
    Ok(Prepared {
        batch: Some(batch),
        traces,
        bytes,
    })
}

/// Multiplies `adjusted_count` by 1/p for spans sampled upstream with probability p.
fn apply_upstream(
    batch: RecordBatch,
    rate_attributes: &[String],
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let states = batch
        .column_by_name(columns::TRACE_STATE)
        .map(|c| c.as_string::<i32>().clone());
    let rates = if rate_attributes.is_empty() {
        None
    } else {
        sample_rates(&batch, rate_attributes)
    };
    let mut factors: Option<Vec<f64>> = None;
    for i in 0..batch.num_rows() {
        let from_state = states
            .as_ref()
            .filter(|s| s.is_valid(i))
            .and_then(|s| threshold_probability(s.value(i)))
            .map(|p| 1.0 / p);
        let factor = from_state.or_else(|| rates.as_ref().and_then(|r| r[i]));
        if let Some(f) = factor.filter(|f| *f != 1.0) {
            factors.get_or_insert_with(|| vec![1.0; batch.num_rows()])[i] = f;
        }
    }
    let Some(factors) = factors else {
        return Ok(batch);
    };
    let idx = batch
        .schema()
        .index_of(columns::ADJUSTED_COUNT)
        .expect("span batch has adjusted_count");
    let old = batch.column(idx).as_primitive::<Float64Type>();
    let new: Float64Array = (0..batch.num_rows())
        .map(|i| Some(if old.is_valid(i) { old.value(i) } else { 1.0 } * factors[i]))
        .collect();
    let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
    cols[idx] = Arc::new(new);
    RecordBatch::try_new(batch.schema(), cols)
}

/// The keep probability encoded by an OpenTelemetry `th` sub-key in a W3C tracestate
/// (`ot=th:8` means 0.5), or None when absent, malformed, or 1.
pub fn threshold_probability(tracestate: &str) -> Option<f64> {
    let ot = tracestate
        .split(',')
        .map(str::trim)
        .find_map(|member| member.strip_prefix("ot="))?;
    let th = ot.split(';').find_map(|kv| kv.strip_prefix("th:"))?;
    if th.is_empty() || th.len() > 14 || !th.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    // The rejection threshold T is `th` right-padded with zeros to 14 hex digits, over 2^56.
    let padded = format!("{th:0<14}");
    let t = u64::from_str_radix(&padded, 16).ok()?;
    let p = 1.0 - t as f64 / (1u64 << 56) as f64;
    (p > 0.0 && p < 1.0).then_some(p)
}

/// Per row, the sample rate N (the span stands for N) from the first of `names` present, if
/// it is a number of at least 1.
fn sample_rates(batch: &RecordBatch, names: &[String]) -> Option<Vec<Option<f64>>> {
    let map = batch
        .column_by_name(columns::SPAN_ATTRIBUTES)?
        .as_map_opt()?;
    let keys = map.keys().as_string_opt::<i32>()?;
    let values = map.values().as_struct_opt()?;
    let types = values
        .column_by_name("type")?
        .as_primitive_opt::<arrow::datatypes::Int8Type>()?;
    let ints = values
        .column_by_name("int")?
        .as_primitive_opt::<arrow::datatypes::Int64Type>()?;
    let doubles = values
        .column_by_name("double")?
        .as_primitive_opt::<Float64Type>()?;
    let strs: &StringArray = values.column_by_name("str")?.as_string_opt::<i32>()?;
    let offsets = map.value_offsets();
    let mut out = vec![None; batch.num_rows()];
    let mut any = false;
    for (row, slot) in out.iter_mut().enumerate() {
        if map.is_null(row) {
            continue;
        }
        let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
        for name in names {
            let Some(j) = (start..end).find(|&j| keys.value(j) == name) else {
                continue;
            };
            let n = match types.value(j) {
                attr_type::INT => Some(ints.value(j) as f64),
                attr_type::DOUBLE => Some(doubles.value(j)),
                attr_type::STRING => strs.value(j).trim().parse().ok(),
                _ => None,
            };
            if let Some(n) = n.filter(|n: &f64| n.is_finite() && *n >= 1.0) {
                *slot = Some(n);
                any = true;
            }
            break;
        }
    }
    any.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_decode_like_the_otel_spec() {
        assert_eq!(threshold_probability("ot=th:8"), Some(0.5));
        assert_eq!(threshold_probability("ot=th:c"), Some(0.25));
        assert_eq!(
            threshold_probability("vendor=x, ot=rv:abc;th:e"),
            Some(0.125)
        );
        assert_eq!(threshold_probability("ot=th:0"), None); // p = 1
        assert_eq!(threshold_probability("ot=th:zz"), None);
        assert_eq!(threshold_probability("ot=th:"), None);
        assert_eq!(threshold_probability("other=th:8"), None);
        let p = threshold_probability("ot=th:fd70a4").unwrap();
        assert!((p - 0.01).abs() < 1e-6, "{p}");
    }

    #[test]
    fn trace_ids_are_big_endian() {
        let mut b = [0u8; 16];
        b[15] = 1;
        assert_eq!(trace_id_of(&b), 1);
        b[0] = 1;
        assert_eq!(trace_id_of(&b), (1u128 << 120) | 1);
    }
}
