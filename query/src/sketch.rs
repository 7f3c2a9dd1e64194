//! Mergeable latency sketches (DDSketch) as SQL functions.
//!
//! ```sql
//! -- p99 duration by service, from spans
//! SELECT service_name, ddsketch_quantile(ddsketch(duration_nanos, adjusted_count), 0.99)
//! FROM spans GROUP BY service_name;
//! -- the same from per-minute sketches: merge, then read
//! SELECT ddsketch_quantile(ddsketch_merge(sketch), 0.99) FROM per_minute;
//! ```
//!
//! - `ddsketch(value [, weight])`: aggregate; the sketch of the non-null values, each counted
//!   `round(weight)` times (default 1), as bytes.
//! - `ddsketch_merge(sketch)`: aggregate; the merge of sketches. Merging is exact: the merge of
//!   per-minute sketches equals the sketch of all the minutes' values.
//! - `ddsketch_quantile(sketch, q)`: the `q` quantile (0 ≤ q ≤ 1) of a sketch, within 1 %
//!   relative error ([`RELATIVE_ACCURACY`]); NULL for an empty or NULL sketch.
//! - `ddsketch_count(sketch)`: how many values a sketch holds.
//!
//! The settings and encoding are [`tracelake_storage::sketch`]'s, shared with the
//! `span_metrics_1m` rollups.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BinaryBuilder, Float64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{exec_err, plan_err, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, TypeSignature, Volatility,
};
use datafusion::prelude::SessionContext;
use sketches_ddsketch::DDSketch;

pub use tracelake_storage::sketch::{encode, new_sketch, RELATIVE_ACCURACY};

/// Reads a sketch's bytes.
pub fn decode(bytes: &[u8]) -> Result<DDSketch> {
    tracelake_storage::sketch::decode(bytes).or_else(|e| {
        exec_err!("not a DDSketch ({e}): pass the output of ddsketch() or ddsketch_merge()")
    })
}

/// Registers the sketch functions in `ctx`.
pub fn register(ctx: &SessionContext) {
    ctx.register_udaf(AggregateUDF::from(SketchAgg::values()));
    ctx.register_udaf(AggregateUDF::from(SketchAgg::merge()));
    ctx.register_udf(ScalarUDF::from(SketchRead::quantile()));
    ctx.register_udf(ScalarUDF::from(SketchRead::count()));
}

fn binary_types() -> Vec<DataType> {
    vec![
        DataType::Binary,
        DataType::LargeBinary,
        DataType::BinaryView,
    ]
}

/// One argument: a sketch, of any binary type.
fn one_sketch_argument() -> Signature {
    Signature::one_of(
        binary_types()
            .into_iter()
            .map(|t| TypeSignature::Exact(vec![t]))
            .collect(),
        Volatility::Immutable,
    )
}

/// Each non-null sketch in `array` (any binary type), in order.
fn sketches(array: &ArrayRef) -> Result<Vec<Option<DDSketch>>> {
    let array = cast(array, &DataType::Binary)?;
    array
        .as_binary::<i32>()
        .iter()
        .map(|b| b.map(decode).transpose())
        .collect()
}

/// `ddsketch(value [, weight])` and `ddsketch_merge(sketch)`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct SketchAgg {
    name: &'static str,
    merge: bool,
    signature: Signature,
}

impl SketchAgg {
    fn values() -> Self {
        let numeric = [
            DataType::Int64,
            DataType::Int32,
            DataType::UInt64,
            DataType::Float64,
            DataType::Float32,
        ];
        let mut accepted = Vec::new();
        for v in &numeric {
            accepted.push(TypeSignature::Exact(vec![v.clone()]));
            for w in &numeric {
                accepted.push(TypeSignature::Exact(vec![v.clone(), w.clone()]));
            }
        }
        Self {
            name: "ddsketch",
            merge: false,
            signature: Signature::one_of(accepted, Volatility::Immutable),
        }
    }

    fn merge() -> Self {
        Self {
            name: "ddsketch_merge",
            merge: true,
            signature: one_sketch_argument(),
        }
    }
}

impl AggregateUDFImpl for SketchAgg {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Binary)
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(SketchAccumulator {
            sketch: new_sketch(),
            merge: self.merge,
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format!("{}[sketch]", args.name),
            DataType::Binary,
            true,
        ))])
    }
}

struct SketchAccumulator {
    sketch: DDSketch,
    /// Inputs are sketches (`ddsketch_merge`) rather than values.
    merge: bool,
}

impl std::fmt::Debug for SketchAccumulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SketchAccumulator")
            .field("count", &self.sketch.count())
            .field("merge", &self.merge)
            .finish()
    }
}

impl SketchAccumulator {
    fn merge_sketches(&mut self, array: &ArrayRef) -> Result<()> {
        for sketch in sketches(array)?.into_iter().flatten() {
            if let Err(e) = self.sketch.merge(&sketch) {
                return exec_err!("cannot merge DDSketches with different settings: {e}");
            }
        }
        Ok(())
    }
}

impl Accumulator for SketchAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        if self.merge {
            return self.merge_sketches(&values[0]);
        }
        let v = cast(&values[0], &DataType::Float64)?;
        let v = v.as_primitive::<arrow::datatypes::Float64Type>();
        let w = match values.get(1) {
            Some(w) => Some(cast(w, &DataType::Float64)?),
            None => None,
        };
        let w = w
            .as_ref()
            .map(|w| w.as_primitive::<arrow::datatypes::Float64Type>());
        for i in 0..v.len() {
            if v.is_null(i) || !v.value(i).is_finite() {
                continue;
            }
            let count = match w {
                None => 1,
                Some(w) if w.is_null(i) => 1,
                Some(w) => {
                    let weight = w.value(i);
                    if !weight.is_finite() || weight < 0.0 {
                        return exec_err!("ddsketch: weight {weight} is not a count (>= 0)");
                    }
                    weight.round() as u64
                }
            };
            if count > 0 {
                self.sketch.add_with_count(v.value(i), count);
            }
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Binary(Some(encode(&self.sketch))))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.sketch.length() * 8
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.evaluate()?])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.merge_sketches(&states[0])
    }
}

/// `ddsketch_quantile(sketch, q)` and `ddsketch_count(sketch)`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct SketchRead {
    name: &'static str,
    quantile: bool,
    signature: Signature,
}

impl SketchRead {
    fn quantile() -> Self {
        let mut accepted = Vec::new();
        for t in binary_types() {
            for q in [DataType::Float64, DataType::Float32, DataType::Int64] {
                accepted.push(TypeSignature::Exact(vec![t.clone(), q]));
            }
        }
        Self {
            name: "ddsketch_quantile",
            quantile: true,
            signature: Signature::one_of(accepted, Volatility::Immutable),
        }
    }

    fn count() -> Self {
        Self {
            name: "ddsketch_count",
            quantile: false,
            signature: one_sketch_argument(),
        }
    }
}

impl ScalarUDFImpl for SketchRead {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        if arg_types.is_empty() {
            return plan_err!("{} takes a sketch", self.name);
        }
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let sketches = sketches(&arrays[0])?;
        let qs = match arrays.get(1) {
            Some(q) if self.quantile => Some(cast(q, &DataType::Float64)?),
            _ => None,
        };
        let qs = qs
            .as_ref()
            .map(|q| q.as_primitive::<arrow::datatypes::Float64Type>());
        let mut out = Vec::with_capacity(rows);
        for (i, sketch) in sketches.iter().enumerate() {
            let Some(sketch) = sketch else {
                out.push(None);
                continue;
            };
            if !self.quantile {
                out.push(Some(sketch.count() as f64));
                continue;
            }
            let Some(q) = qs.filter(|q| !q.is_null(i)).map(|q| q.value(i)) else {
                out.push(None);
                continue;
            };
            if !(0.0..=1.0).contains(&q) {
                return exec_err!("ddsketch_quantile: q must be between 0 and 1, got {q}");
            }
            match sketch.quantile(q) {
                Ok(v) => out.push(v),
                Err(e) => return exec_err!("ddsketch_quantile: {e}"),
            }
        }
        let array: ArrayRef = Arc::new(Float64Array::from(out));
        Ok(ColumnarValue::Array(array))
    }
}

/// Builds a Binary array of sketches (for tests and rollups).
pub fn sketch_array<'a>(sketches: impl IntoIterator<Item = Option<&'a DDSketch>>) -> ArrayRef {
    let mut b = BinaryBuilder::new();
    for s in sketches {
        match s {
            Some(s) => b.append_value(encode(s)),
            None => b.append_null(),
        }
    }
    Arc::new(b.finish())
}
