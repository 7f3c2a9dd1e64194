//! Helper SQL functions over spans: ids as hex and typed attribute reads.
//!
//! - `hex_id(id)`: a binary id (`trace_id`, `span_id`, `parent_span_id`) as lowercase hex.
//! - `attr(attributes, key)`: an attribute's value as text, whatever its type.
//! - `attr_str`, `attr_int`, `attr_double`, `attr_bool(attributes, key)`: the typed value, or
//!   NULL when the attribute is missing or of another type.
//!
//! Each one is rewritten at planning into the built-in expressions it stands for
//! (`encode(id, 'hex')`, `attributes[key]['int']`, ...), so filters on them still push down.

use arrow::datatypes::DataType;
use datafusion::common::{exec_err, plan_err, Result};
use datafusion::functions::core::expr_fn::{coalesce, get_field};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    cast, ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::{lit, SessionContext};
use tracelake_proto::columns::attr_value;

/// Registers the helper functions on `ctx`.
pub(crate) fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::from(Helper::new("hex_id", Kind::HexId)));
    ctx.register_udf(ScalarUDF::from(Helper::new("attr", Kind::Text)));
    for (name, kind) in [
        ("attr_str", Kind::Field(attr_value::STR, DataType::Utf8)),
        ("attr_int", Kind::Field(attr_value::INT, DataType::Int64)),
        (
            "attr_double",
            Kind::Field(attr_value::DOUBLE, DataType::Float64),
        ),
        (
            "attr_bool",
            Kind::Field(attr_value::BOOL, DataType::Boolean),
        ),
    ] {
        ctx.register_udf(ScalarUDF::from(Helper::new(name, kind)));
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Kind {
    /// `encode(id, 'hex')`.
    HexId,
    /// The first value the attribute has, as text.
    Text,
    /// One typed field of the attribute value.
    Field(&'static str, DataType),
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Helper {
    name: &'static str,
    kind: Kind,
    signature: Signature,
}

impl Helper {
    fn new(name: &'static str, kind: Kind) -> Self {
        let arity = if kind == Kind::HexId { 1 } else { 2 };
        Self {
            name,
            kind,
            signature: Signature::any(arity, Volatility::Immutable),
        }
    }

    /// `attributes[key]`, the attribute's value struct.
    fn value(&self, args: &[Expr]) -> Result<Expr> {
        let key = match &args[1] {
            Expr::Literal(v, _) if !v.is_null() => v.clone(),
            _ => return plan_err!("{}: the key must be a string literal", self.name),
        };
        Ok(get_field(args[0].clone(), key))
    }
}

impl ScalarUDFImpl for Helper {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match &self.kind {
            Kind::HexId => match &args[0] {
                DataType::Binary
                | DataType::LargeBinary
                | DataType::BinaryView
                | DataType::FixedSizeBinary(_) => Ok(DataType::Utf8),
                other => plan_err!("hex_id takes a binary id (trace_id, span_id), not {other}"),
            },
            Kind::Text | Kind::Field(..) => match &args[0] {
                DataType::Map(..) => Ok(match &self.kind {
                    Kind::Field(_, t) => t.clone(),
                    _ => DataType::Utf8,
                }),
                other => plan_err!(
                    "{} takes an attribute map (span_attributes, resource_attributes, \
                     scope_attributes) and a key, not {other}",
                    self.name
                ),
            },
        }
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!(
            "{} is rewritten while planning and is never called",
            self.name
        )
    }

    fn simplify(&self, args: Vec<Expr>, _info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        let expr = match &self.kind {
            Kind::HexId => {
                datafusion::functions::encoding::expr_fn::encode(args[0].clone(), lit("hex"))
            }
            Kind::Field(field, _) => get_field(self.value(&args)?, *field),
            Kind::Text => {
                let value = self.value(&args)?;
                let text = |f: &str| cast(get_field(value.clone(), f), DataType::Utf8);
                coalesce(vec![
                    get_field(value.clone(), attr_value::STR),
                    text(attr_value::INT),
                    text(attr_value::DOUBLE),
                    text(attr_value::BOOL),
                    datafusion::functions::encoding::expr_fn::encode(
                        get_field(value.clone(), attr_value::BYTES),
                        lit("hex"),
                    ),
                ])
            }
        };
        Ok(ExprSimplifyResult::Simplified(expr))
    }
}
