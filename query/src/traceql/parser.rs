//! Recursive-descent TraceQL parser over the lexer's tokens.
//!
//! Every function returns the first error in reading order. Nesting is bounded by
//! [`MAX_DEPTH`](super::MAX_DEPTH), so no input can overflow the stack.

use super::ast::*;
use super::lexer::{lex, Tok, Token};
use super::{line_column, ParseError, MAX_DEPTH, MAX_QUERY_BYTES};

type Result<T> = std::result::Result<T, ParseError>;

/// Parses a whole query.
pub(crate) fn parse(text: &str) -> Result<Query> {
    if text.len() > MAX_QUERY_BYTES {
        return Err(ParseError::new(
            text,
            MAX_QUERY_BYTES,
            format!("a query of at most {MAX_QUERY_BYTES} bytes"),
            format!("{} bytes", text.len()),
        )
        .with_note("shorten the query"));
    }
    let (tokens, lex_error) = lex(text);
    let mut parser = Parser {
        text,
        tokens,
        pos: 0,
        lex_error,
        depth: 0,
    };
    parser.query()
}

/// Words that start a metrics function.
const METRICS_FUNCTIONS: [&str; 8] = [
    "rate",
    "count_over_time",
    "quantile_over_time",
    "min_over_time",
    "max_over_time",
    "avg_over_time",
    "sum_over_time",
    "histogram_over_time",
];

/// Words that start a pipeline stage other than a metrics function (for "did you mean" hints).
const STAGE_WORDS: [&str; 8] = [
    "by", "select", "coalesce", "count", "avg", "min", "max", "sum",
];

const FIELD_EXAMPLES: &str =
    "a field (span.x, resource.x, .x or an intrinsic such as name, status, duration)";

struct Parser<'a> {
    text: &'a str,
    tokens: Vec<Token>,
    pos: usize,
    lex_error: Option<ParseError>,
    depth: usize,
}

/// An operand of a comparison, before it is sorted into field and literal.
enum Operand {
    Field(Field),
    Literal(Literal),
}

impl Parser<'_> {
    // -----------------------------------------------------------------------------------------
    // Token access.

    fn token(&self) -> &Token {
        // The list always ends with Eof or Error and `pos` never moves past it.
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn peek(&self) -> &Tok {
        &self.token().tok
    }

    fn bump(&mut self) -> Token {
        let token = self.token().clone();
        if !matches!(token.tok, Tok::Eof | Tok::Error) {
            self.pos += 1;
        }
        token
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if self.peek() == tok {
            self.bump();
            true
        } else {
            false
        }
    }

    /// The source text of a token.
    fn slice(&self, token: &Token) -> &str {
        self.text.get(token.start..token.end).unwrap_or("")
    }

    /// How an error message shows a token: `"}"`, `string "abc"`, `end of input`.
    fn describe(&self, token: &Token) -> String {
        const MAX_CHARS: usize = 40;
        let text = self.slice(token);
        let mut shown: String = text.chars().take(MAX_CHARS).collect();
        if shown.len() < text.len() {
            shown.push('…');
        }
        match token.tok {
            Tok::Eof => "end of input".to_string(),
            Tok::Str(_) => format!("string {shown}"),
            _ => format!("\"{shown}\""),
        }
    }

    /// An error at the current token; the lexer's error when the current token is one.
    fn unexpected(&self, expected: impl Into<String>) -> ParseError {
        self.error_at(self.pos, expected)
    }

    /// An error at token `index`.
    fn error_at(&self, index: usize, expected: impl Into<String>) -> ParseError {
        let token = &self.tokens[index.min(self.tokens.len() - 1)];
        if token.tok == Tok::Error {
            if let Some(e) = &self.lex_error {
                return e.clone();
            }
        }
        ParseError::new(self.text, token.start, expected, self.describe(token))
    }

    /// `line L, column C` of a token, for messages that point back at an opening bracket.
    fn where_is(&self, token: &Token) -> String {
        let (line, column) = line_column(self.text, token.start);
        format!("line {line}, column {column}")
    }

    /// `after "x"` for the previous token, or an empty string at the start.
    fn after_previous(&self) -> String {
        match self.pos.checked_sub(1).and_then(|i| self.tokens.get(i)) {
            Some(prev) => format!(" after \"{}\"", self.slice(prev)),
            None => String::new(),
        }
    }

    fn expect(&mut self, tok: &Tok, expected: impl Into<String>) -> Result<Token> {
        if self.peek() == tok {
            Ok(self.bump())
        } else {
            Err(self.unexpected(expected))
        }
    }

    /// Enters one nesting level; fails past [`MAX_DEPTH`].
    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ParseError::new(
                self.text,
                self.token().start,
                format!("at most {MAX_DEPTH} levels of nesting"),
                "a deeper nesting",
            )
            .with_note("simplify the query"));
        }
        Ok(())
    }

    fn leave(&mut self, levels: usize) {
        self.depth -= levels;
    }

    // -----------------------------------------------------------------------------------------
    // Query and pipeline.

    fn query(&mut self) -> Result<Query> {
        if *self.peek() == Tok::Eof {
            return Err(self
                .unexpected("a spanset filter such as { } or { status = error }")
                .with_note("an empty query matches nothing; write { } to match every span"));
        }
        let spansets = self.spanset_expr()?;
        let mut pipeline = Vec::new();
        // What may follow the last thing parsed.
        let mut after_spansets = true;
        loop {
            match self.peek() {
                Tok::Eof => break,
                Tok::Pipe => {
                    self.bump();
                }
                _ if after_spansets => return Err(self.unexpected(
                    "a spanset operator (&&, ||, >, >>, <, <<, ~), \"|\" or the end of the query",
                )),
                _ => return Err(self.unexpected("\"|\" or the end of the query")),
            }
            if let Some(metrics) = self.metrics_stage()? {
                if *self.peek() != Tok::Eof {
                    return Err(self
                        .unexpected(format!(
                            "the end of the query after {}",
                            metrics.function.name()
                        ))
                        .with_note("a metrics function must be the last stage"));
                }
                return Ok(Query {
                    spansets,
                    pipeline,
                    metrics: Some(metrics),
                });
            }
            let stage = self.stage()?;
            after_spansets = matches!(stage, Stage::Filter(_));
            pipeline.push(stage);
        }
        Ok(Query {
            spansets,
            pipeline,
            metrics: None,
        })
    }

    /// One stage after `|` (not a metrics function).
    fn stage(&mut self) -> Result<Stage> {
        let word = match self.peek() {
            Tok::LBrace | Tok::LParen => return Ok(Stage::Filter(self.spanset_expr()?)),
            Tok::Ident(word) => word.clone(),
            _ => return Err(self.unexpected(stage_expected())),
        };
        match word.as_str() {
            "by" => {
                self.bump();
                Ok(Stage::By(self.field_list("by")?))
            }
            "select" => {
                self.bump();
                Ok(Stage::Select(self.field_list("select")?))
            }
            "coalesce" => {
                self.bump();
                self.expect(&Tok::LParen, "\"(\" after coalesce")?;
                self.expect(&Tok::RParen, "\")\": coalesce() takes no arguments")?;
                Ok(Stage::Coalesce)
            }
            "count" | "avg" | "min" | "max" | "sum" => {
                let aggregate = self.aggregate()?;
                Ok(Stage::ScalarFilter(self.scalar_filter(aggregate)?))
            }
            _ => {
                let mut err = self.unexpected(stage_expected());
                if let Some(close) =
                    closest(&word, STAGE_WORDS.into_iter().chain(METRICS_FUNCTIONS))
                {
                    err = err.with_note(format!("did you mean \"{close}\"?"));
                }
                Err(err)
            }
        }
    }

    /// `(field, ...)` after `by` or `select`.
    fn field_list(&mut self, function: &str) -> Result<Vec<Field>> {
        self.expect(&Tok::LParen, format!("\"(\" after {function}"))?;
        let mut fields = vec![self.field(&format!("{FIELD_EXAMPLES} inside {function}( )"))?];
        while self.eat(&Tok::Comma) {
            fields.push(self.field(&format!("{FIELD_EXAMPLES} after \",\""))?);
        }
        self.expect(&Tok::RParen, format!("\",\" or \")\" to close {function}("))?;
        Ok(fields)
    }

    /// `count()`, `avg(field)`, `min(field)`, `max(field)`, `sum(field)`.
    fn aggregate(&mut self) -> Result<Aggregate> {
        let token = self.bump();
        let Tok::Ident(name) = &token.tok else {
            return Err(self.error_at(self.pos - 1, "an aggregate"));
        };
        self.expect(&Tok::LParen, format!("\"(\" after {name}"))?;
        if name == "count" {
            self.expect(&Tok::RParen, "\")\": count() takes no arguments")?;
            return Ok(Aggregate::Count);
        }
        let field_index = self.pos;
        let field = self.field(&format!("{FIELD_EXAMPLES} inside {name}( )"))?;
        if let Field::Intrinsic(i) = &field {
            if !matches!(i.value_type(), ValueType::Duration | ValueType::Int) {
                return Err(self
                    .error_at(
                        field_index,
                        format!("a numeric or duration field inside {name}( )"),
                    )
                    .with_note(format!("{i} is not a number")));
            }
        }
        self.expect(&Tok::RParen, format!("\")\" to close {name}("))?;
        Ok(match name.as_str() {
            "avg" => Aggregate::Avg(field),
            "min" => Aggregate::Min(field),
            "max" => Aggregate::Max(field),
            _ => Aggregate::Sum(field),
        })
    }

    /// `op value` after an aggregate.
    fn scalar_filter(&mut self, aggregate: Aggregate) -> Result<ScalarFilter> {
        let shown = aggregate.to_string();
        let op = match self.peek() {
            Tok::Eq => CompareOp::Eq,
            Tok::Ne => CompareOp::Ne,
            Tok::Gt => CompareOp::Gt,
            Tok::Ge => CompareOp::Ge,
            Tok::Lt => CompareOp::Lt,
            Tok::Le => CompareOp::Le,
            _ => {
                return Err(self
                    .unexpected(format!("a comparison (=, !=, >, >=, <, <=) after {shown}"))
                    .with_note(format!(
                        "an aggregate filters spansets, so compare it with a value: {shown} > 2"
                    )))
            }
        };
        self.bump();
        let value_index = self.pos;
        let value = match self
            .operand(&format!("a number or duration after \"{}\"", op.as_str()))?
        {
            Operand::Literal(l @ (Literal::Int(_) | Literal::Float(_) | Literal::Duration(_))) => l,
            _ => {
                return Err(self.error_at(
                    value_index,
                    format!("a number or duration after \"{}\"", op.as_str()),
                ))
            }
        };
        let wants_duration = match &aggregate {
            Aggregate::Count => Some(false),
            Aggregate::Avg(f) | Aggregate::Min(f) | Aggregate::Max(f) | Aggregate::Sum(f) => {
                match f.value_type() {
                    Some(ValueType::Duration) => Some(true),
                    Some(_) => Some(false),
                    None => None,
                }
            }
        };
        let is_duration = matches!(value, Literal::Duration(_));
        match wants_duration {
            Some(true) if !is_duration => {
                return Err(self
                    .error_at(value_index, format!("a duration to compare with {shown}"))
                    .with_note("write a unit, e.g. 200ms"))
            }
            Some(false) if is_duration => {
                return Err(self.error_at(value_index, format!("a number to compare with {shown}")))
            }
            _ => {}
        }
        Ok(ScalarFilter {
            aggregate,
            op,
            value,
        })
    }

    /// A metrics function with its optional `by (...)`, or `None` (nothing consumed) when the
    /// next stage is not one.
    fn metrics_stage(&mut self) -> Result<Option<MetricsStage>> {
        let Tok::Ident(name) = self.peek() else {
            return Ok(None);
        };
        let Some(name) = METRICS_FUNCTIONS.into_iter().find(|f| *f == name.as_str()) else {
            return Ok(None);
        };
        self.bump();
        self.expect(&Tok::LParen, format!("\"(\" after {name}"))?;
        let function = match name {
            "rate" | "count_over_time" => {
                self.expect(&Tok::RParen, format!("\")\": {name}() takes no arguments"))?;
                if name == "rate" {
                    MetricsFunction::Rate
                } else {
                    MetricsFunction::CountOverTime
                }
            }
            "quantile_over_time" => {
                let field = self.field(&format!("{FIELD_EXAMPLES} inside {name}( )"))?;
                self.expect(
                    &Tok::Comma,
                    "\",\" and at least one quantile, e.g. quantile_over_time(duration, 0.9, 0.99)",
                )?;
                let mut quantiles = vec![self.quantile()?];
                while self.eat(&Tok::Comma) {
                    quantiles.push(self.quantile()?);
                }
                self.expect(&Tok::RParen, format!("\",\" or \")\" to close {name}("))?;
                MetricsFunction::QuantileOverTime { field, quantiles }
            }
            _ => {
                let field = self.field(&format!("{FIELD_EXAMPLES} inside {name}( )"))?;
                self.expect(&Tok::RParen, format!("\")\" to close {name}("))?;
                match name {
                    "min_over_time" => MetricsFunction::MinOverTime(field),
                    "max_over_time" => MetricsFunction::MaxOverTime(field),
                    "avg_over_time" => MetricsFunction::AvgOverTime(field),
                    "sum_over_time" => MetricsFunction::SumOverTime(field),
                    _ => MetricsFunction::HistogramOverTime(field),
                }
            }
        };
        let by = if matches!(self.peek(), Tok::Ident(w) if w == "by") {
            self.bump();
            self.field_list("by")?
        } else {
            Vec::new()
        };
        Ok(Some(MetricsStage { function, by }))
    }

    /// One quantile of `quantile_over_time`: a number from 0 to 1.
    fn quantile(&mut self) -> Result<f64> {
        let index = self.pos;
        const EXPECTED: &str = "a quantile between 0 and 1, e.g. 0.99";
        let q = match self.operand(EXPECTED)? {
            Operand::Literal(Literal::Float(q)) => q,
            Operand::Literal(Literal::Int(q)) => q as f64,
            _ => return Err(self.error_at(index, EXPECTED)),
        };
        if !(0.0..=1.0).contains(&q) {
            return Err(self.error_at(index, EXPECTED));
        }
        Ok(q)
    }

    /// `next (op next)*`, flattened into one list: `a && (b && c)` and `a && b && c` give the
    /// same `And([a, b, c])`. A single operand is returned as is.
    fn flat_list<T>(
        &mut self,
        op: &Tok,
        next: impl Fn(&mut Self) -> Result<T>,
        split: impl Fn(T) -> std::result::Result<Vec<T>, T>,
        join: impl Fn(Vec<T>) -> T,
    ) -> Result<T> {
        let first = next(self)?;
        if self.peek() != op {
            return Ok(first);
        }
        let mut items = Vec::new();
        push_flat(&mut items, first, &split);
        while self.eat(op) {
            let item = next(self)?;
            push_flat(&mut items, item, &split);
        }
        Ok(join(items))
    }

    // -----------------------------------------------------------------------------------------
    // Spanset expressions.

    fn spanset_expr(&mut self) -> Result<SpansetExpr> {
        self.flat_list(
            &Tok::OrOr,
            Self::spanset_and,
            |e| match e {
                SpansetExpr::Or(items) => Ok(items),
                other => Err(other),
            },
            SpansetExpr::Or,
        )
    }

    fn spanset_and(&mut self) -> Result<SpansetExpr> {
        self.flat_list(
            &Tok::AndAnd,
            Self::spanset_structural,
            |e| match e {
                SpansetExpr::And(items) => Ok(items),
                other => Err(other),
            },
            SpansetExpr::And,
        )
    }

    fn spanset_structural(&mut self) -> Result<SpansetExpr> {
        let mut lhs = self.spanset_primary()?;
        // Each link of a chain nests the tree one level deeper.
        let mut levels = 0;
        let result = loop {
            let op = match self.peek() {
                Tok::Gt => StructuralOp::Child,
                Tok::Desc => StructuralOp::Descendant,
                Tok::Lt => StructuralOp::Parent,
                Tok::Anc => StructuralOp::Ancestor,
                Tok::Tilde => StructuralOp::Sibling,
                _ => break Ok(lhs),
            };
            levels += 1;
            if let Err(e) = self.enter() {
                break Err(e);
            }
            self.bump();
            match self.spanset_primary() {
                Ok(rhs) => {
                    lhs = SpansetExpr::Structural {
                        op,
                        lhs: Box::new(lhs),
                        rhs: Box::new(rhs),
                    }
                }
                Err(e) => break Err(e),
            }
        };
        self.leave(levels);
        result
    }

    fn spanset_primary(&mut self) -> Result<SpansetExpr> {
        match self.peek() {
            Tok::LBrace => self.spanset_filter(),
            Tok::LParen => {
                self.enter()?;
                let open = self.bump();
                let inner = self.spanset_expr();
                let result = inner.and_then(|inner| {
                    let expected = format!(
                        "a spanset operator (&&, ||, >, >>, <, <<, ~) or \")\" to close the \"(\" at {}",
                        self.where_is(&open)
                    );
                    if *self.peek() == Tok::Pipe {
                        return Err(self.unexpected(expected).with_note(
                            "a pipeline cannot be nested in parentheses or combined with && and ||",
                        ));
                    }
                    self.expect(&Tok::RParen, expected)?;
                    Ok(inner)
                });
                self.leave(1);
                result
            }
            _ => {
                let mut err = self.unexpected(format!(
                    "a spanset filter such as {{ status = error }}{}",
                    self.after_previous()
                ));
                if matches!(
                    self.peek(),
                    Tok::Attr { .. } | Tok::Colon { .. } | Tok::Ident(_)
                ) {
                    err = err.with_note("conditions go inside braces: { span.x = 1 }");
                }
                Err(err)
            }
        }
    }

    fn spanset_filter(&mut self) -> Result<SpansetExpr> {
        self.enter()?;
        let open = self.bump();
        let result = if self.eat(&Tok::RBrace) {
            Ok(SpansetFilter { condition: None })
        } else {
            self.condition().and_then(|condition| {
                let expected = format!(
                    "\"&&\", \"||\" or \"}}\" to close the \"{{\" at {}",
                    self.where_is(&open)
                );
                self.expect(&Tok::RBrace, expected)?;
                Ok(SpansetFilter {
                    condition: Some(condition),
                })
            })
        };
        self.leave(1);
        result.map(SpansetExpr::Filter)
    }

    // -----------------------------------------------------------------------------------------
    // Conditions.

    fn condition(&mut self) -> Result<Condition> {
        self.flat_list(
            &Tok::OrOr,
            Self::condition_and,
            |e| match e {
                Condition::Or(items) => Ok(items),
                other => Err(other),
            },
            Condition::Or,
        )
    }

    fn condition_and(&mut self) -> Result<Condition> {
        self.flat_list(
            &Tok::AndAnd,
            Self::condition_unary,
            |e| match e {
                Condition::And(items) => Ok(items),
                other => Err(other),
            },
            Condition::And,
        )
    }

    fn condition_unary(&mut self) -> Result<Condition> {
        match self.peek() {
            Tok::Bang => {
                self.enter()?;
                self.bump();
                let inner = self.condition_unary();
                self.leave(1);
                Ok(Condition::Not(Box::new(inner?)))
            }
            Tok::LParen => {
                self.enter()?;
                let open = self.bump();
                let result = self.condition().and_then(|inner| {
                    let expected = format!(
                        "\"&&\", \"||\" or \")\" to close the \"(\" at {}",
                        self.where_is(&open)
                    );
                    self.expect(&Tok::RParen, expected)?;
                    Ok(inner)
                });
                self.leave(1);
                result
            }
            _ => self.comparison(),
        }
    }

    /// `operand op operand`, or a lone `true`/`false`.
    fn comparison(&mut self) -> Result<Condition> {
        let lhs_index = self.pos;
        let lhs = self.operand(&format!(
            "a condition such as span.x = 1{}",
            self.after_previous()
        ))?;
        let op = match self.peek() {
            Tok::Eq => CompareOp::Eq,
            Tok::Ne => CompareOp::Ne,
            Tok::Gt => CompareOp::Gt,
            Tok::Ge => CompareOp::Ge,
            Tok::Lt => CompareOp::Lt,
            Tok::Le => CompareOp::Le,
            Tok::Re => CompareOp::Regex,
            Tok::Nre => CompareOp::NotRegex,
            _ => {
                if let Operand::Literal(Literal::Bool(b)) = lhs {
                    return Ok(Condition::Bool(b));
                }
                let lhs_end = self.tokens[self.pos.saturating_sub(1)].end;
                let lhs_text = self
                    .text
                    .get(self.tokens[lhs_index].start..lhs_end)
                    .unwrap_or("")
                    .to_string();
                let mut err = self.unexpected(format!(
                    "a comparison operator (=, !=, >, >=, <, <=, =~, !~) after \"{lhs_text}\""
                ));
                if matches!(self.peek(), Tok::Tilde) {
                    err = err.with_note("regex match is written =~");
                } else if matches!(lhs, Operand::Field(_)) {
                    err = err.with_note(format!(
                        "a field alone is not a condition; to test that it exists write {lhs_text} != nil"
                    ));
                }
                return Err(err);
            }
        };
        let op_index = self.pos;
        self.bump();
        let rhs_index = self.pos;
        let rhs = self.operand(&format!("a value after \"{}\"", op.as_str()))?;
        // The comparison, and the index of its literal's token (for type errors).
        let (comparison, value_index) = match (lhs, rhs) {
            (Operand::Field(field), Operand::Literal(value)) => {
                (Comparison { field, op, value }, rhs_index)
            }
            (Operand::Literal(value), Operand::Field(field)) => match op.mirrored() {
                Some(op) => (Comparison { field, op, value }, lhs_index),
                None => {
                    return Err(self
                        .error_at(lhs_index, format!("a field before \"{}\"", op.as_str()))
                        .with_note(format!(
                            "the regex goes on the right: span.x {} \"re.*\"",
                            op.as_str()
                        )))
                }
            },
            (Operand::Field(_), Operand::Field(_)) => {
                return Err(self
                    .error_at(
                        rhs_index,
                        format!("a literal value after \"{}\"", op.as_str()),
                    )
                    .with_note(
                        "comparing two fields is not supported; compare a field with a value",
                    ))
            }
            (Operand::Literal(_), Operand::Literal(_)) => {
                return Err(self
                    .error_at(lhs_index, FIELD_EXAMPLES)
                    .with_note("one side of a comparison must be a field"))
            }
        };
        self.check(&comparison, op_index, value_index)?;
        Ok(Condition::Compare(comparison))
    }

    /// Checks that the literal fits the field and operator.
    fn check(&self, c: &Comparison, op_index: usize, value_index: usize) -> Result<()> {
        let op = c.op.as_str();
        let field = &c.field;
        let equality_only =
            |what: &str| self.error_at(op_index, format!("= or != when comparing with {what}"));
        match &c.value {
            Literal::Nil if c.op != CompareOp::Eq && c.op != CompareOp::Ne => {
                return Err(equality_only("nil")
                    .with_note("nil tests whether a field exists: span.x != nil"))
            }
            Literal::Nil => return Ok(()),
            value if c.op.is_regex() && !matches!(value, Literal::String(_)) => {
                return Err(self
                    .error_at(value_index, format!("a regular expression string after \"{op}\""))
                    .with_note(format!("write the pattern as a string: {field} {op} \"5..\"")))
            }
            Literal::Bool(_) if c.op != CompareOp::Eq && c.op != CompareOp::Ne => {
                return Err(equality_only("true or false"))
            }
            Literal::Status(s) if field.value_type() != Some(ValueType::Status) => {
                return Err(self
                    .error_at(value_index, format!("a value to compare with {field}"))
                    .with_note(format!(
                        "{s} is a status literal; compare it with status, e.g. status = {s} (write \"{s}\" for the string)"
                    )))
            }
            Literal::Kind(k) if field.value_type() != Some(ValueType::Kind) => {
                return Err(self
                    .error_at(value_index, format!("a value to compare with {field}"))
                    .with_note(format!(
                        "{k} is a span kind literal; compare it with kind, e.g. kind = {k} (write \"{k}\" for the string)"
                    )))
            }
            _ => {}
        }
        let Some(field_type) = field.value_type() else {
            return Ok(());
        };
        let value = &c.value;
        let fits = match field_type {
            ValueType::String | ValueType::Id => matches!(value, Literal::String(_)),
            ValueType::Status => matches!(value, Literal::Status(_)),
            ValueType::Kind => matches!(value, Literal::Kind(_)),
            ValueType::Duration => matches!(value, Literal::Duration(_)),
            ValueType::Int | ValueType::Float => {
                matches!(value, Literal::Int(_) | Literal::Float(_))
            }
            ValueType::Bool => matches!(value, Literal::Bool(_)),
        };
        if !fits {
            let (wanted, note) = match field_type {
                ValueType::String => ("a string", format!("{field} = \"text\"")),
                ValueType::Id => ("a hex id string", format!("{field} = \"0af7651916cd43dd\"")),
                ValueType::Status => ("a status (ok, error or unset)", format!("{field} = error")),
                ValueType::Kind => (
                    "a span kind (unspecified, internal, server, client, producer or consumer)",
                    format!("{field} = server"),
                ),
                ValueType::Duration => ("a duration", format!("{field} > 200ms")),
                ValueType::Int | ValueType::Float => ("a number", format!("{field} > 2")),
                ValueType::Bool => ("true or false", format!("{field} = true")),
            };
            return Err(self
                .error_at(value_index, format!("{wanted} to compare with {field}"))
                .with_note(format!("for example {note}")));
        }
        if c.op.is_ordering() && matches!(field_type, ValueType::Status | ValueType::Kind) {
            return Err(equality_only(&field.to_string()));
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Operands.

    /// A field, or an error saying `expected`.
    fn field(&mut self, expected: &str) -> Result<Field> {
        let index = self.pos;
        match self.operand(expected)? {
            Operand::Field(f) => Ok(f),
            Operand::Literal(_) => Err(self.error_at(index, expected)),
        }
    }

    /// A field or a literal (with an optional leading `-` on numbers).
    fn operand(&mut self, expected: &str) -> Result<Operand> {
        let token = self.token().clone();
        let operand = match &token.tok {
            Tok::Attr { scope, name } => {
                let scope = match scope {
                    None => AttributeScope::Unscoped,
                    Some(word) => match AttributeScope::from_word(word) {
                        Some(scope) => scope,
                        None => return Err(self.unknown_scope(&token, word, name)),
                    },
                };
                Operand::Field(Field::Attribute(Attribute {
                    scope,
                    name: name.clone(),
                }))
            }
            Tok::Colon { scope, name } => {
                let full = format!("{scope}:{name}");
                match Intrinsic::from_name(&full) {
                    Some(i) => Operand::Field(Field::Intrinsic(i)),
                    None => return Err(self.unknown_intrinsic(&full)),
                }
            }
            Tok::Ident(word) => match keyword_literal(word) {
                Some(literal) => Operand::Literal(literal),
                None => match Intrinsic::from_name(word) {
                    Some(i) => Operand::Field(Field::Intrinsic(i)),
                    None => return Err(self.unknown_word(expected, word)),
                },
            },
            Tok::Str(s) => Operand::Literal(Literal::String(s.clone())),
            Tok::Int(i) => Operand::Literal(Literal::Int(self.int(*i, false)?)),
            Tok::Float(x) => Operand::Literal(Literal::Float(*x)),
            Tok::Duration(d) => Operand::Literal(Literal::Duration(*d)),
            Tok::Minus => {
                self.bump();
                let literal = match self.peek() {
                    Tok::Int(i) => Literal::Int(self.int(*i, true)?),
                    Tok::Float(x) => Literal::Float(-*x),
                    Tok::Duration(_) => {
                        return Err(self
                            .unexpected("a number after \"-\"")
                            .with_note("durations cannot be negative"))
                    }
                    _ => return Err(self.unexpected("a number after \"-\"")),
                };
                Operand::Literal(literal)
            }
            _ => return Err(self.unexpected(expected)),
        };
        self.bump();
        Ok(operand)
    }

    /// The i64 value of an integer token (negated when `negative`).
    fn int(&self, magnitude: u64, negative: bool) -> Result<i64> {
        let value = if negative {
            0i64.checked_sub_unsigned(magnitude)
        } else {
            i64::try_from(magnitude).ok()
        };
        value.ok_or_else(|| {
            self.unexpected("an integer from -9223372036854775808 to 9223372036854775807")
                .with_note("write large numbers as floats, e.g. 1e19")
        })
    }

    fn unknown_scope(&self, token: &Token, word: &str, name: &str) -> ParseError {
        let mut err = ParseError::new(
            self.text,
            token.start,
            "an attribute scope (span., resource., event., link., instrumentation.) or \".\"",
            format!("\"{word}.\""),
        );
        let scopes = ["span", "resource", "event", "link", "instrumentation"];
        err = match closest(word, scopes) {
            Some(close) => err.with_note(format!("did you mean \"{close}.{name}\"?")),
            None => err.with_note(format!(
                "if \"{word}.{name}\" is the attribute name, write span.{word}.{name}, \
                 resource.{word}.{name} or .{word}.{name}"
            )),
        };
        err
    }

    fn unknown_intrinsic(&self, full: &str) -> ParseError {
        let err = self.unexpected("a known intrinsic");
        let names = Intrinsic::ALL.map(Intrinsic::as_str);
        match closest(full, names) {
            Some(close) => err.with_note(format!("did you mean \"{close}\"?")),
            None => err.with_note(format!("intrinsics are {}", names.join(", "))),
        }
    }

    fn unknown_word(&self, expected: &str, word: &str) -> ParseError {
        let err = self.unexpected(expected);
        let mut names: Vec<&str> = Intrinsic::ALL
            .iter()
            .filter_map(|i| i.legacy_name())
            .collect();
        names.extend([
            "true",
            "false",
            "nil",
            "ok",
            "error",
            "unset",
            "unspecified",
            "internal",
            "server",
            "client",
            "producer",
            "consumer",
        ]);
        match closest(word, names) {
            Some(close) => err.with_note(format!("did you mean \"{close}\"?")),
            None => err.with_note(format!(
                "\"{word}\" is not an intrinsic or keyword; attributes need a scope: \
                 span.{word}, resource.{word} or .{word}, and strings need quotes: \"{word}\""
            )),
        }
    }
}

fn stage_expected() -> &'static str {
    "a pipeline stage after \"|\" (by(...), select(...), count() > N, avg(field) > N, \
     rate(), { ... })"
}

/// Appends `item` to `items`, splicing in its operands when it is the same n-ary node.
fn push_flat<T>(items: &mut Vec<T>, item: T, split: impl Fn(T) -> std::result::Result<Vec<T>, T>) {
    match split(item) {
        Ok(inner) => items.extend(inner),
        Err(item) => items.push(item),
    }
}

/// The literal a keyword stands for.
fn keyword_literal(word: &str) -> Option<Literal> {
    Some(match word {
        "true" => Literal::Bool(true),
        "false" => Literal::Bool(false),
        "nil" => Literal::Nil,
        "ok" => Literal::Status(Status::Ok),
        "error" => Literal::Status(Status::Error),
        "unset" => Literal::Status(Status::Unset),
        "unspecified" => Literal::Kind(SpanKind::Unspecified),
        "internal" => Literal::Kind(SpanKind::Internal),
        "server" => Literal::Kind(SpanKind::Server),
        "client" => Literal::Kind(SpanKind::Client),
        "producer" => Literal::Kind(SpanKind::Producer),
        "consumer" => Literal::Kind(SpanKind::Consumer),
        _ => return None,
    })
}

/// The candidate closest to `word` by edit distance (ignoring case), if it is close enough to
/// be a typo.
fn closest<'c>(word: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    let word = word.to_lowercase();
    let limit = (word.chars().count() / 4).clamp(1, 2);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&word, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}
