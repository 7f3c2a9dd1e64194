//! Exact `percentile_cont` (alias `quantile_cont`) with a cheaper state.
//!
//! ```sql
//! SELECT service_name, percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_nano) AS p99
//! FROM spans GROUP BY service_name;
//! ```
//!
//! It is DataFusion's own function ([`PercentileCont`]): the same name, alias, signature,
//! `WITHIN GROUP` syntax, return type, simplification (q = 0 or 1 becomes `min`/`max`), q
//! validation and error messages, and the same `DISTINCT`, sliding-window, `Float32` and
//! `Float16` accumulators. For `Float64` values (what integer columns such as `duration_nano`
//! are coerced to) the accumulators are ours and return bit-for-bit what DataFusion's return;
//! they differ in how the values travel between the partial and the final aggregate.
//!
//! An exact percentile keeps every value, so a `GROUP BY` over the whole `spans` table moves
//! every duration from the partial aggregates, through the hash repartition, to the final
//! ones. DataFusion's state is a `List<Float64>`: its partial aggregate flattens the groups'
//! vectors into one list (a copy), the repartition's `take` copies each output's lists again
//! and its coalescer concatenates them (a third copy, each with its page faults). Profiled over
//! 10 M spans those copies cost more CPU than reading the Parquet files. Our state is a
//! `BinaryView` whose values are the groups' own vectors as Arrow buffers, one buffer per
//! group: the partial aggregate hands them over without copying, `take` keeps the buffers and
//! only picks views, and the coalescer copies at most the bytes an output really uses.
//!
//! ```text
//!  update_batch   values ──► one Vec<f64> per group (NULLs and FILTERed rows skipped)
//!  state          each group's Vec as one buffer of a BinaryView row (native-endian f64s)
//!  merge_batch    append a row's f64s to its group's Vec (the one copy on the final side)
//!  evaluate       one select_nth_unstable at ⌊q·(n−1)⌋, then the least value above it
//!                 (DataFusion selects twice), then DataFusion's interpolation
//! ```
//!
//! The state is only exchanged inside one process (between operators, or through a spill
//! file), hence native endianness.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryViewArray, BinaryViewBuilder, BooleanArray, ByteView,
    Float64Array, RecordBatch, MAX_INLINE_VIEW_LEN,
};
use arrow::buffer::{Buffer, NullBuffer};
use arrow::datatypes::{DataType, Field, FieldRef, Float64Type, Schema};
use datafusion::common::{internal_err, Result, ScalarValue};
use datafusion::functions_aggregate::percentile_cont::PercentileCont;
use datafusion::logical_expr::function::{
    AccumulatorArgs, AggregateFunctionSimplification, StateFieldsArgs,
};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, Documentation, EmitTo,
    GroupsAccumulator, Signature,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;

/// DataFusion's linear-interpolation weight is quantized to this many steps (its
/// `INTERPOLATION_PRECISION`); results must match it to the bit.
const INTERPOLATION_PRECISION: f64 = 1_000_000.0;

/// Bytes of one value in the state.
const VALUE_BYTES: usize = size_of::<f64>();

/// Registers `percentile_cont` and `quantile_cont` in `ctx`, replacing DataFusion's.
pub(crate) fn register(ctx: &SessionContext) {
    ctx.register_udaf(AggregateUDF::from(PercentileContFast::default()));
}

/// `percentile_cont`: DataFusion's, with our accumulators for `Float64` values.
#[derive(Debug, Default, PartialEq, Eq, Hash)]
struct PercentileContFast {
    inner: PercentileCont,
}

/// Whether our accumulators (and state) serve an aggregate of `input` values.
fn ours(input: &DataType, distinct: bool) -> bool {
    input == &DataType::Float64 && !distinct
}

// Implements the methods DataFusion's `PercentileCont` implements, so every other one keeps
// the trait's default as it does there; plus `create_sliding_accumulator`, whose default
// would pick our (non-retracting) accumulator for sliding windows.
impl AggregateUDFImpl for PercentileContFast {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        if !ours(args.input_fields[0].data_type(), args.is_distinct) {
            return self.inner.state_fields(args);
        }
        Ok(vec![Arc::new(Field::new(
            format_state_name(args.name, self.name()),
            DataType::BinaryView,
            true,
        ))])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        // DataFusion's validates q (a Float literal in [0, 1]) with its own messages.
        let theirs = self.inner.accumulator(args.clone())?;
        if !ours(args.expr_fields[0].data_type(), args.is_distinct) {
            return Ok(theirs);
        }
        Ok(Box::new(PercentileAcc {
            q: q_of(&args)?,
            values: Values::default(),
        }))
    }

    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        self.inner.accumulator(args)
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        self.inner.groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        let theirs = self.inner.create_groups_accumulator(args.clone())?;
        if !ours(args.expr_fields[0].data_type(), args.is_distinct) {
            return Ok(theirs);
        }
        Ok(Box::new(PercentileGroups {
            q: q_of(&args)?,
            groups: Vec::new(),
        }))
    }

    fn simplify(&self) -> Option<AggregateFunctionSimplification> {
        self.inner.simplify()
    }

    fn supports_within_group_clause(&self) -> bool {
        self.inner.supports_within_group_clause()
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

/// The percentile to compute, once DataFusion has validated it: q, or 1 − q under
/// `ORDER BY .. DESC`.
fn q_of(args: &AccumulatorArgs) -> Result<f64> {
    let q = match literal(&args.exprs[1])? {
        ScalarValue::Float64(Some(q)) => q,
        ScalarValue::Float32(Some(q)) => f64::from(q),
        other => return internal_err!("percentile_cont: q {other:?} passed validation"),
    };
    let descending = args
        .order_bys
        .first()
        .is_some_and(|sort| sort.options.descending);
    Ok(if descending { 1.0 - q } else { q })
}

/// The value of a constant physical expression (q), evaluated as DataFusion does.
fn literal(expr: &Arc<dyn PhysicalExpr>) -> Result<ScalarValue> {
    match expr.evaluate(&RecordBatch::new_empty(Arc::new(Schema::empty())))? {
        ColumnarValue::Scalar(s) => Ok(s),
        ColumnarValue::Array(_) => internal_err!("percentile_cont: q is not a constant"),
    }
}

/// Appends the values of one state row (native-endian f64s) to `dst`.
fn extend_from_state(dst: &mut Vec<f64>, bytes: &[u8]) -> Result<()> {
    if !bytes.len().is_multiple_of(VALUE_BYTES) {
        return internal_err!("percentile_cont: a state of {} bytes", bytes.len());
    }
    dst.reserve(bytes.len() / VALUE_BYTES);
    dst.extend(
        bytes
            .chunks_exact(VALUE_BYTES)
            .map(|b| f64::from_ne_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])),
    );
    Ok(())
}

/// One group's values: those its accumulator was given, and the states merged into it, kept
/// as the Arrow buffers they arrived in until the group is evaluated or emitted.
#[derive(Debug, Default)]
struct Values {
    own: Vec<f64>,
    /// Each holds one state's values (native-endian f64s).
    merged: Vec<Buffer>,
}

impl Values {
    /// Adds the state in row `row` of `states`, unless it is NULL.
    fn merge(&mut self, states: &BinaryViewArray, row: usize) -> Result<()> {
        if states.is_null(row) {
            return Ok(());
        }
        let view = ByteView::from(states.views()[row]);
        if view.length <= MAX_INLINE_VIEW_LEN {
            return extend_from_state(&mut self.own, states.value(row));
        }
        let (start, len) = (view.offset as usize, view.length as usize);
        if !len.is_multiple_of(VALUE_BYTES) {
            return internal_err!("percentile_cont: a state of {len} bytes");
        }
        let buffer = &states.data_buffers()[view.buffer_index as usize];
        self.merged.push(buffer.slice_with_length(start, len));
        Ok(())
    }

    /// Bytes held.
    fn size(&self) -> usize {
        self.own.capacity() * VALUE_BYTES + self.merged.iter().map(Buffer::len).sum::<usize>()
    }

    /// All the values in one vector. The largest merged state's allocation becomes the vector
    /// when nothing else holds it any more (a partial aggregate's group, handed over through
    /// the repartition untouched), so only the smaller parts are copied.
    fn into_vec(self) -> Result<Vec<f64>> {
        let Values { own, mut merged } = self;
        let Some(largest) = (0..merged.len()).max_by_key(|&i| merged[i].len()) else {
            return Ok(own);
        };
        let total = own.len() + merged.iter().map(|b| b.len() / VALUE_BYTES).sum::<usize>();
        let mut all = match merged.swap_remove(largest).into_vec::<f64>() {
            Ok(values) => values,
            Err(shared) => {
                let mut values = Vec::with_capacity(total);
                extend_from_state(&mut values, shared.as_slice())?;
                values
            }
        };
        all.reserve_exact(total - all.len());
        for state in merged {
            extend_from_state(&mut all, state.as_slice())?;
        }
        all.extend_from_slice(&own);
        Ok(all)
    }
}

/// The states of `groups`, one `BinaryView` row each, without copying their values.
fn states(groups: Vec<Vec<f64>>) -> Result<ArrayRef> {
    let mut builder = BinaryViewBuilder::with_capacity(groups.len());
    for mut values in groups {
        let bytes = values.len() * VALUE_BYTES;
        // A view addresses at most u32::MAX bytes.
        let Ok(len) = u32::try_from(bytes) else {
            return internal_err!(
                "percentile_cont: {} values in one group of one partition; at most {} fit in \
                 its state",
                values.len(),
                u32::MAX as usize / VALUE_BYTES
            );
        };
        if len <= MAX_INLINE_VIEW_LEN {
            // Short enough to live in the view itself.
            let inline: Vec<u8> = values.iter().flat_map(|v| v.to_ne_bytes()).collect();
            builder.append_value(inline);
        } else {
            // The coalescer after a repartition judges a buffer by its capacity.
            values.shrink_to_fit();
            let block = builder.append_block(Buffer::from_vec(values));
            builder.try_append_view(block, 0, len)?;
        }
    }
    Ok(Arc::new(builder.finish()))
}

/// The ungrouped accumulator for `Float64` values.
#[derive(Debug)]
struct PercentileAcc {
    /// Already `1 - q` under `ORDER BY .. DESC`.
    q: f64,
    values: Values,
}

impl PercentileAcc {
    /// Every value, merged ones included, in `self.values.own`.
    fn gather(&mut self) -> Result<&mut Vec<f64>> {
        if !self.values.merged.is_empty() {
            self.values.own = std::mem::take(&mut self.values).into_vec()?;
        }
        Ok(&mut self.values.own)
    }
}

impl Accumulator for PercentileAcc {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let values = values[0].as_primitive::<Float64Type>();
        let own = &mut self.values.own;
        match values.nulls().filter(|n| n.null_count() > 0) {
            None => own.extend_from_slice(values.values()),
            Some(_) => own.extend(values.iter().flatten()),
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let states = states[0].as_binary_view();
        (0..states.len()).try_for_each(|row| self.values.merge(states, row))
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let values = std::mem::take(self.gather()?);
        let bytes = values.iter().flat_map(|v| v.to_ne_bytes()).collect();
        Ok(vec![ScalarValue::BinaryView(Some(bytes))])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        // Reorders the values but keeps them: a window evaluates after each batch.
        let q = self.q;
        Ok(ScalarValue::Float64(percentile(self.gather()?, q)))
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.values.size()
    }
}

/// The grouped accumulator for `Float64` values.
#[derive(Debug)]
struct PercentileGroups {
    /// Already `1 - q` under `ORDER BY .. DESC`.
    q: f64,
    groups: Vec<Values>,
}

impl GroupsAccumulator for PercentileGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        let values = values[0].as_primitive::<Float64Type>();
        self.groups.resize_with(total_num_groups, Values::default);
        let data = values.values();
        match (values.nulls().filter(|n| n.null_count() > 0), opt_filter) {
            (None, None) => {
                for (&g, &v) in group_indices.iter().zip(data.iter()) {
                    self.groups[g].own.push(v);
                }
            }
            (nulls, filter) => {
                for (i, (&g, &v)) in group_indices.iter().zip(data.iter()).enumerate() {
                    let valid = nulls.is_none_or(|n| n.is_valid(i));
                    // A NULL filter value drops the row, like a false one.
                    let kept = filter.is_none_or(|f| f.is_valid(i) && f.value(i));
                    if valid && kept {
                        self.groups[g].own.push(v);
                    }
                }
            }
        }
        Ok(())
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize_with(total_num_groups, Values::default);
        let states = values[0].as_binary_view();
        for (row, &g) in group_indices.iter().enumerate() {
            self.groups[g].merge(states, row)?;
        }
        Ok(())
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let groups = emit_to.take_needed(&mut self.groups);
        let groups = groups
            .into_iter()
            .map(Values::into_vec)
            .collect::<Result<_>>()?;
        Ok(vec![states(groups)?])
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let groups = emit_to.take_needed(&mut self.groups);
        let mut result = Vec::with_capacity(groups.len());
        for values in groups {
            result.push(percentile(&mut values.into_vec()?, self.q));
        }
        Ok(Arc::new(Float64Array::from(result)))
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        // Each row its own group: its value, or NULL for a NULL or filtered-out row.
        let values = values[0].as_primitive::<Float64Type>();
        let mut nulls = values.nulls().cloned();
        if let Some(filter) = opt_filter {
            let kept = match filter.nulls() {
                Some(n) => NullBuffer::new(filter.values() & n.inner()),
                None => NullBuffer::new(filter.values().clone()),
            };
            nulls = NullBuffer::union(nulls.as_ref(), Some(&kept));
        }
        let states: BinaryViewArray = values
            .values()
            .iter()
            .enumerate()
            .map(|(i, v)| {
                nulls
                    .as_ref()
                    .is_none_or(|n| n.is_valid(i))
                    .then(|| v.to_ne_bytes())
            })
            .collect();
        Ok(vec![Arc::new(states)])
    }

    fn size(&self) -> usize {
        self.groups.capacity() * size_of::<Values>()
            + self.groups.iter().map(Values::size).sum::<usize>()
    }
}

/// The exact `q` percentile (0 ≤ q ≤ 1) of `values` with linear interpolation between the
/// closest ranks, as DataFusion's `percentile_cont` computes it: NULL when empty; otherwise the
/// value at rank `q·(n−1)` in `f64::total_cmp` order, interpolated with a weight quantized to
/// 1e-6. Reorders `values`.
fn percentile(values: &mut [f64], q: f64) -> Option<f64> {
    match values.len() {
        0 => return None,
        1 => return Some(values[0]),
        _ => {}
    }
    if q == 0.0 {
        return values.iter().copied().min_by(f64::total_cmp);
    }
    if q == 1.0 {
        return values.iter().copied().max_by(f64::total_cmp);
    }
    let index = q * (values.len() - 1) as f64;
    let lower_index = index.floor() as usize;
    let upper_index = index.ceil() as usize;
    let (_, lower, above) = values.select_nth_unstable_by(lower_index, f64::total_cmp);
    let lower = *lower;
    if lower_index == upper_index {
        return Some(lower);
    }
    // The value of rank lower_index + 1 is the least of those ranked above lower_index.
    let upper = above.iter().copied().min_by(f64::total_cmp)?;
    let fraction = index - lower_index as f64;
    let weight = ((fraction * INTERPOLATION_PRECISION) as usize) as f64 / INTERPOLATION_PRECISION;
    Some(lower + (upper - lower) * weight)
}

#[cfg(test)]
mod tests {
    use super::*;

    use arrow::array::{Int64Array, StringArray};
    use datafusion::datasource::MemTable;
    use datafusion::execution::FunctionRegistry;
    use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
    use datafusion::physical_plan::ExecutionPlan;
    use datafusion::prelude::SessionConfig;
    use proptest::prelude::*;

    /// How the sessions of a comparison plan their aggregates.
    #[derive(Debug, Clone, Copy)]
    struct Setup {
        /// Partitions of the table, and the session's target partitions.
        partitions: usize,
        /// Skip partial aggregation at once (state from `convert_to_state`).
        skip_partial: bool,
    }

    const PLAIN: Setup = Setup {
        partitions: 2,
        skip_partial: false,
    };

    /// A table `t(g, v, f)` (`f` is `v` as `Float32`) split into partitions, in a session with
    /// DataFusion's `percentile_cont` (`ours` false) or ours.
    fn session(rows: &[(u8, Option<i64>)], setup: Setup, ours: bool) -> SessionContext {
        let schema = Arc::new(Schema::new(vec![
            Field::new("g", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
        ]));
        let chunk = rows.len().div_ceil(setup.partitions).max(1);
        let mut batches: Vec<Vec<RecordBatch>> = rows
            .chunks(chunk)
            .map(|rows| {
                let g = StringArray::from_iter_values(rows.iter().map(|r| format!("g{}", r.0)));
                let v: Int64Array = rows.iter().map(|r| r.1).collect();
                vec![
                    RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(g), Arc::new(v)])
                        .unwrap(),
                ]
            })
            .collect();
        if batches.is_empty() {
            batches.push(Vec::new());
        }
        let mut config = SessionConfig::new()
            .with_target_partitions(setup.partitions.max(1))
            .with_batch_size(7);
        if setup.skip_partial {
            let exec = &mut config.options_mut().execution;
            exec.skip_partial_aggregation_probe_rows_threshold = 1;
            exec.skip_partial_aggregation_probe_ratio_threshold = 0.0;
        }
        let ctx = SessionContext::new_with_config(config);
        if ours {
            register(&ctx);
        }
        let table = MemTable::try_new(schema, batches).unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
        ctx
    }

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn run(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
        block_on(async { ctx.sql(sql).await?.collect().await })
    }

    /// Every row's columns as text, floats by their bits: comparable exactly.
    fn rows(batches: &[RecordBatch]) -> Vec<Vec<Option<String>>> {
        let mut out = Vec::new();
        for b in batches {
            let columns: Vec<ArrayRef> = b
                .columns()
                .iter()
                .map(|c| match c.data_type() {
                    DataType::Float64 => {
                        let bits: Int64Array = c
                            .as_primitive::<Float64Type>()
                            .iter()
                            .map(|v| v.map(|v| v.to_bits() as i64))
                            .collect();
                        arrow::compute::cast(&bits, &DataType::Utf8).unwrap()
                    }
                    _ => arrow::compute::cast(c, &DataType::Utf8).unwrap(),
                })
                .collect();
            for i in 0..b.num_rows() {
                out.push(
                    columns
                        .iter()
                        .map(|c| {
                            let c = c.as_string::<i32>();
                            c.is_valid(i).then(|| c.value(i).to_string())
                        })
                        .collect(),
                );
            }
        }
        out
    }

    /// Runs `sql` with our `percentile_cont` in `setup`, and with DataFusion's in `setup`
    /// without skipping partial aggregation: DataFusion 55's `convert_to_state` panics
    /// ("one argument to merge_batch": it is passed q and the ORDER BY column too).
    fn same_as_datafusion(data: &[(u8, Option<i64>)], setup: Setup, sql: &str) {
        let theirs_setup = Setup {
            skip_partial: false,
            ..setup
        };
        let theirs = run(&session(data, theirs_setup, false), sql).unwrap();
        let ours = run(&session(data, setup, true), sql).unwrap();
        assert_eq!(rows(&ours), rows(&theirs), "{sql} {setup:?}");
    }

    fn fixed_data() -> Vec<(u8, Option<i64>)> {
        vec![
            (0, Some(5)),
            (0, None),
            (1, Some(-3)),
            (0, Some(1)),
            (1, Some(i64::MAX)),
            (2, None),
            (0, Some(9)),
            (1, Some(i64::MIN)),
            (3, Some(7)),
            (0, Some(1)),
            (3, Some(-7)),
            (0, Some(4)),
        ]
    }

    #[test]
    fn grouped_percentiles_match_datafusion() {
        let data = fixed_data();
        for q in ["0", "0.0", "0.25", "0.5", "0.99", "1", "1.0", "0.333333333"] {
            for dir in ["ASC", "DESC"] {
                for partitions in [1, 3] {
                    for skip_partial in [false, true] {
                        same_as_datafusion(
                            &data,
                            Setup {
                                partitions,
                                skip_partial,
                            },
                            &format!(
                                "SELECT g, percentile_cont({q}) WITHIN GROUP (ORDER BY v {dir}) \
                                 FROM t GROUP BY g ORDER BY g"
                            ),
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn other_forms_match_datafusion() {
        let data = fixed_data();
        for sql in [
            // ungrouped, and over no rows
            "SELECT percentile_cont(0.4) WITHIN GROUP (ORDER BY v) FROM t",
            "SELECT percentile_cont(0.4) WITHIN GROUP (ORDER BY v DESC) FROM t",
            "SELECT percentile_cont(0.4) WITHIN GROUP (ORDER BY v) FROM t WHERE v > 1000",
            "SELECT g, percentile_cont(0.4) WITHIN GROUP (ORDER BY v) FROM t WHERE v > 1000 \
             GROUP BY g",
            // the alias and the argument form
            "SELECT g, quantile_cont(v, 0.75) FROM t GROUP BY g ORDER BY g",
            "SELECT g, percentile_cont(v, 0.6) FROM t GROUP BY g ORDER BY g",
            // FILTER, with NULLs in the filter
            "SELECT g, percentile_cont(0.3) WITHIN GROUP (ORDER BY v) FILTER (WHERE v > 2) \
             FROM t GROUP BY g ORDER BY g",
            "SELECT g, percentile_cont(0.3) WITHIN GROUP (ORDER BY v) \
             FILTER (WHERE CASE WHEN v > 4 THEN true WHEN v > 0 THEN NULL ELSE false END) \
             FROM t GROUP BY g ORDER BY g",
            // DISTINCT, Float32 and NULL inputs stay DataFusion's
            "SELECT g, percentile_cont(DISTINCT v, 0.5) FROM t GROUP BY g ORDER BY g",
            "SELECT g, percentile_cont(0.5) WITHIN GROUP (ORDER BY CAST(v AS REAL)) \
             FROM t GROUP BY g ORDER BY g",
            "SELECT g, percentile_cont(0.5) WITHIN GROUP (ORDER BY NULL) FROM t GROUP BY g \
             ORDER BY g",
            // two percentiles at once, and a column of floats
            "SELECT g, percentile_cont(0.1) WITHIN GROUP (ORDER BY v), \
             percentile_cont(0.9) WITHIN GROUP (ORDER BY v / 3.0) FROM t GROUP BY g ORDER BY g",
            // windows: growing frames, and sliding ones (DataFusion's retracting accumulator)
            "SELECT g, v, percentile_cont(v, 0.5) OVER (PARTITION BY g ORDER BY v) FROM t \
             ORDER BY g, v",
            "SELECT g, v, percentile_cont(v, 0.5) OVER (PARTITION BY g ORDER BY v \
             ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM t ORDER BY g, v",
        ] {
            for setup in [
                PLAIN,
                Setup {
                    partitions: 3,
                    skip_partial: true,
                },
            ] {
                same_as_datafusion(&data, setup, sql);
            }
        }
    }

    #[test]
    fn q_out_of_range_is_refused_with_datafusions_message() {
        let data = fixed_data();
        for q in ["1.5", "-0.1"] {
            for group_by in ["GROUP BY g", ""] {
                let sql = format!(
                    "SELECT percentile_cont({q}) WITHIN GROUP (ORDER BY v) FROM t {group_by}"
                );
                let theirs = run(&session(&data, PLAIN, false), &sql).unwrap_err();
                let ours = run(&session(&data, PLAIN, true), &sql).unwrap_err();
                assert_eq!(ours.to_string(), theirs.to_string());
                assert!(
                    ours.to_string().contains(&format!(
                        "Percentile value must be between 0.0 and 1.0 inclusive, {} is invalid",
                        q.parse::<f64>().unwrap()
                    )),
                    "{ours}"
                );
            }
        }
    }

    #[test]
    fn ours_is_registered_under_both_names() {
        let ctx = session(&[], PLAIN, true);
        for name in ["percentile_cont", "quantile_cont"] {
            assert!(ctx.udaf(name).unwrap().inner().is::<PercentileContFast>());
        }
    }

    /// The partial aggregate's output type of the percentile's state.
    fn state_type(ctx: &SessionContext, sql: &str) -> DataType {
        fn find(plan: &Arc<dyn ExecutionPlan>) -> Option<DataType> {
            if let Some(agg) = plan.downcast_ref::<AggregateExec>() {
                if *agg.mode() == AggregateMode::Partial {
                    let schema = agg.schema();
                    return Some(schema.fields().last()?.data_type().clone());
                }
            }
            plan.children().into_iter().find_map(find)
        }
        let plan = block_on(async { ctx.sql(sql).await?.create_physical_plan().await }).unwrap();
        find(&plan).expect("a partial aggregate")
    }

    #[test]
    fn the_state_of_float64_values_is_a_binary_view() {
        let ctx = session(&fixed_data(), PLAIN, true);
        for sql in [
            "SELECT g, percentile_cont(0.5) WITHIN GROUP (ORDER BY v) FROM t GROUP BY g",
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY v) FROM t",
        ] {
            assert_eq!(state_type(&ctx, sql), DataType::BinaryView, "{sql}");
        }
        let sql = "SELECT g, percentile_cont(DISTINCT v, 0.5) FROM t GROUP BY g";
        assert!(matches!(state_type(&ctx, sql), DataType::List(_)), "{sql}");
    }

    #[test]
    fn state_round_trips() {
        let groups = vec![vec![], vec![1.5], vec![-0.0, f64::NAN, 3.0, 1e300]];
        let state = states(groups.clone()).unwrap();
        let state = state.as_binary_view();
        let back: Vec<Vec<f64>> = (0..state.len())
            .map(|row| {
                let mut values = Values::default();
                values.merge(state, row).unwrap();
                values.into_vec().unwrap()
            })
            .collect();
        assert_eq!(format!("{back:?}"), format!("{groups:?}"));
    }

    #[test]
    fn a_handed_over_state_is_not_copied_unless_still_shared() {
        let values: Vec<f64> = (0..100).map(f64::from).collect();
        let handed = values.clone();
        let at = handed.as_ptr();
        let state = states(vec![handed]).unwrap();
        let merged = |state: &ArrayRef| {
            let mut group = Values::default();
            group.merge(state.as_binary_view(), 0).unwrap();
            group
        };
        // Still referenced by the state array: copied.
        let copy = merged(&state).into_vec().unwrap();
        assert_eq!(copy, values);
        assert_ne!(copy.as_ptr(), at);
        // Only the group holds it: the partial aggregate's vector itself.
        let group = merged(&state);
        drop(state);
        let reused = group.into_vec().unwrap();
        assert_eq!(reused, values);
        assert_eq!(reused.as_ptr(), at);
    }

    #[test]
    fn a_group_gathers_its_own_and_merged_values() {
        let state = states(vec![vec![1.0, 2.0, 3.0], vec![4.0], vec![5.0, 6.0]]).unwrap();
        let state = state.as_binary_view();
        let mut group = Values {
            own: vec![0.0],
            merged: Vec::new(),
        };
        (0..3).for_each(|row| group.merge(state, row).unwrap());
        let mut all = group.into_vec().unwrap();
        all.sort_by(f64::total_cmp);
        assert_eq!(all, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn percentile_matches_datafusion(
            data in prop::collection::vec(
                (0u8..5, prop::option::weighted(0.8, -1_000i64..1_000_000)),
                0..300,
            ),
            q in 0.0f64..=1.0,
            desc in any::<bool>(),
            partitions in 1usize..4,
            skip_partial in any::<bool>(),
            grouped in prop::bool::weighted(0.8),
        ) {
            let dir = if desc { "DESC" } else { "ASC" };
            let (select, group_by) = if grouped {
                ("g, ", "GROUP BY g ORDER BY g")
            } else {
                ("", "")
            };
            same_as_datafusion(
                &data,
                Setup { partitions, skip_partial },
                &format!(
                    "SELECT {select}percentile_cont({q:?}) WITHIN GROUP (ORDER BY v {dir}) \
                     FROM t {group_by}"
                ),
            );
        }

        #[test]
        fn percentile_is_between_its_neighbouring_ranks(
            mut values in prop::collection::vec(-1e6f64..1e6, 1..200),
            q in 0.0f64..=1.0,
        ) {
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            let index = q * (sorted.len() - 1) as f64;
            let (lo, hi) = (sorted[index.floor() as usize], sorted[index.ceil() as usize]);
            let got = percentile(&mut values, q).unwrap();
            prop_assert!(lo <= got && got <= hi, "{got} not in [{lo}, {hi}]");
        }
    }
}
