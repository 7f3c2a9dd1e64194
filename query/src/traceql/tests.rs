//! Unit tests: the lexer, and randomized checks that the parser never panics and that
//! `Display` round-trips.
//!
//! The randomized tests use a small seeded generator instead of proptest (which this crate does
//! not depend on); each runs thousands of cases and prints the failing input and seed.

use std::time::Duration;

use super::lexer::{lex, Tok};
use super::*;

fn kinds(text: &str) -> Vec<Tok> {
    let (tokens, error) = lex(text);
    assert!(error.is_none(), "{text:?}: {error:?}");
    tokens.into_iter().map(|t| t.tok).collect()
}

fn attr(scope: Option<&str>, name: &str) -> Tok {
    Tok::Attr {
        scope: scope.map(str::to_string),
        name: name.to_string(),
    }
}

#[test]
fn lexes_attributes_intrinsics_and_operators() {
    assert_eq!(
        kinds("span.http.status_code>=500"),
        vec![
            attr(Some("span"), "http.status_code"),
            Tok::Ge,
            Tok::Int(500),
            Tok::Eof
        ]
    );
    assert_eq!(
        kinds(r#"."a \"b\"" =~ `x\.y`"#),
        vec![
            attr(None, "a \"b\""),
            Tok::Re,
            Tok::Str("x\\.y".into()),
            Tok::Eof
        ]
    );
    assert_eq!(
        kinds("span:id != trace:id"),
        vec![
            Tok::Colon {
                scope: "span".into(),
                name: "id".into()
            },
            Tok::Ne,
            Tok::Colon {
                scope: "trace".into(),
                name: "id".into()
            },
            Tok::Eof
        ]
    );
    assert_eq!(
        kinds("&& || | ! !~ > >> < << ~ - = ,"),
        vec![
            Tok::AndAnd,
            Tok::OrOr,
            Tok::Pipe,
            Tok::Bang,
            Tok::Nre,
            Tok::Gt,
            Tok::Desc,
            Tok::Lt,
            Tok::Anc,
            Tok::Tilde,
            Tok::Minus,
            Tok::Eq,
            Tok::Comma,
            Tok::Eof
        ]
    );
    // An attribute name runs to whitespace or an operator character.
    assert_eq!(
        kinds(".a-b/c:d.e}"),
        vec![attr(None, "a-b/c:d.e"), Tok::RBrace, Tok::Eof]
    );
}

#[test]
fn lexes_numbers_and_durations() {
    assert_eq!(
        kinds("0 007 1.5 2e3 2E-3 .99"),
        vec![
            Tok::Int(0),
            Tok::Int(7),
            Tok::Float(1.5),
            Tok::Float(2000.0),
            Tok::Float(0.002),
            Tok::Float(0.99),
            Tok::Eof
        ]
    );
    // `.99` is a number only where a name would end; `.5xx` is an attribute.
    assert_eq!(kinds(".99)"), vec![Tok::Float(0.99), Tok::RParen, Tok::Eof]);
    assert_eq!(kinds(".5xx"), vec![attr(None, "5xx"), Tok::Eof]);
    let d = |nanos: u64| Tok::Duration(Duration::from_nanos(nanos));
    assert_eq!(
        kinds("1ns 2us 3µs 4μs 5ms 6s 7m 8h 1h30m 1.5s 0.001ms 1m30s500ms"),
        vec![
            d(1),
            d(2_000),
            d(3_000),
            d(4_000),
            d(5_000_000),
            d(6_000_000_000),
            d(420_000_000_000),
            d(28_800_000_000_000),
            d(5_400_000_000_000),
            d(1_500_000_000),
            d(1_000),
            d(90_500_000_000),
            Tok::Eof
        ]
    );
    // Up to i64::MAX nanoseconds (about 292 years) fits.
    assert_eq!(
        kinds("2562047h"),
        vec![d(2_562_047 * 3_600_000_000_000), Tok::Eof]
    );
    assert!(lex("2562048h").1.is_some());
    assert!(lex("99999999999999999999999999999999999h").1.is_some());
}

#[test]
fn lexes_string_escapes() {
    assert_eq!(
        kinds(r#""\"\\\'\n\r\t\a\b\f\v\0\x7f\u00e9\U0001F600""#),
        vec![
            Tok::Str("\"\\'\n\r\t\u{7}\u{8}\u{c}\u{b}\0\u{7f}é😀".into()),
            Tok::Eof
        ]
    );
    // Raw and double-quoted strings may span lines.
    assert_eq!(kinds("`a\nb`"), vec![Tok::Str("a\nb".into()), Tok::Eof]);
    for bad in [
        r#""\ud800""#,
        r#""\U00110000""#,
        r#""\x""#,
        r#""\"#,
        r#""\z""#,
    ] {
        assert!(lex(bad).1.is_some(), "{bad:?}");
    }
}

#[test]
fn lex_error_is_the_last_token() {
    let (tokens, error) = lex("{ .a = 1 } @ { }");
    assert_eq!(tokens.last().map(|t| &t.tok), Some(&Tok::Error));
    assert_eq!(error.map(|e| e.offset), Some(11));
}

#[test]
fn parser_reports_the_first_error_in_reading_order() {
    // A parse error before a lexical error wins, and the other way round.
    let e = parse("{ .a = } \"unterminated").unwrap_err();
    assert_eq!(e.column, 8);
    let e = parse("{ .a = \"unterminated } }").unwrap_err();
    assert_eq!(e.column, 8);
    assert!(e.expected.contains("closing"));
}

#[test]
fn durations_print_in_the_largest_exact_unit() {
    let cases = [
        (0, "0s"),
        (1, "1ns"),
        (1_000, "1us"),
        (1_500, "1500ns"),
        (2_000_000, "2ms"),
        (1_500_000_000, "1500ms"),
        (90_000_000_000, "90s"),
        (5_400_000_000_000, "90m"),
        (7_200_000_000_000, "2h"),
        (i64::MAX as u64, "9223372036854775807ns"),
    ];
    for (nanos, want) in cases {
        let text = Literal::Duration(Duration::from_nanos(nanos)).to_string();
        assert_eq!(text, want);
        let (tokens, _) = lex(&text);
        assert_eq!(tokens[0].tok, Tok::Duration(Duration::from_nanos(nanos)));
    }
}

#[test]
fn literals_print_so_they_read_back() {
    let floats = [
        0.0,
        -0.0,
        1.0,
        0.1,
        1e-7,
        1e16,
        1e300,
        f64::MAX,
        f64::MIN_POSITIVE,
        5e-324,
        -2.5,
    ];
    for x in floats {
        let q = parse(&format!("{{ .a = {} }}", Literal::Float(x))).unwrap();
        let SpansetExpr::Filter(SpansetFilter {
            condition: Some(Condition::Compare(c)),
        }) = &q.spansets
        else {
            panic!("{q:?}")
        };
        assert_eq!(c.value, Literal::Float(x));
    }
    let s = "tab\t nl\n cr\r nul\0 del\u{7f} quote\" backslash\\ é 😀 `";
    let q = parse(&format!("{{ .a = {} }}", Literal::String(s.into()))).unwrap();
    assert!(q
        .to_string()
        .contains(r#""tab\t nl\n cr\r nul\x00 del\x7f quote\" backslash\\ é 😀 `""#));
}

// ---------------------------------------------------------------------------------------------
// Randomized tests.

/// SplitMix64: small, seeded, good enough to drive test-case generation.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Valid queries to mutate.
const SEEDS: &[&str] = &[
    r#"{ resource.service.name = "cart" && span.http.status_code >= 500 }"#,
    r#"{ name =~ "GET /api/.*" && duration > 200ms }"#,
    "{ status = error && kind = server }",
    r#"{ span.http.url = "/api" } >> { span.db.system = "postgresql" }"#,
    "{ status = error } | by(resource.service.name) | count() > 1",
    r#"{ resource.service.name = "foo" } | rate() by (span:name)"#,
    r#"({ .a = 1 } || { .b = -2.5e3 }) > { !(.c != nil) } ~ { span."x y" =~ `a\.b` }"#,
    "{ } | avg(duration) > 1h30m | select(.a, trace:id) | coalesce() | { true }",
    "{ } | quantile_over_time(duration, .99, 0.5) by (resource.service.name)",
    "{ traceDuration > 1.5s && rootServiceName = \"é\\u00e9\\n\" || event:name = \"x\" }",
];

/// Fragments random text is assembled from, so that it gets deep into the grammar.
const FRAGMENTS: &[&str] = &[
    "{",
    "}",
    "(",
    ")",
    "|",
    "||",
    "&&",
    "&",
    "!",
    "=",
    "!=",
    "=~",
    "!~",
    ">",
    ">=",
    "<",
    "<=",
    ">>",
    "<<",
    "~",
    ",",
    "-",
    ".",
    " ",
    " ",
    "\n",
    "span.",
    "resource.",
    "event.",
    "x.",
    ".a",
    "span.http.status_code",
    "span:",
    "span:name",
    "trace:id",
    "span:nope",
    "name",
    "status",
    "duration",
    "kind",
    "error",
    "ok",
    "server",
    "nil",
    "true",
    "false",
    "1",
    "-5",
    "1.5",
    ".99",
    "1e3",
    "1e999",
    "99999999999999999999",
    "200ms",
    "1h30m",
    "5xs",
    "3µs",
    "\"",
    "\"str\"",
    "\"\\",
    "\"\\u00",
    "`",
    "`raw`",
    "count()",
    "avg(",
    "by(",
    "select(",
    "rate()",
    "coalesce()",
    "quantile_over_time(",
    "by",
    "#",
    "é",
    "😀",
    "\0",
    "\u{7f}",
];

/// Runs `parse` and checks the properties every input must have: no panic, a well-formed
/// error location, and for a successful parse, a `Display` that parses back to the same tree.
fn check_input(text: &str, seed: u64) {
    match parse(text) {
        Ok(q) => {
            let printed = q.to_string();
            match parse(&printed) {
                Ok(again) => assert_eq!(
                    again, q,
                    "seed {seed}: {text:?} printed as {printed:?} reads back differently"
                ),
                Err(e) => panic!("seed {seed}: {text:?} printed as {printed:?} fails: {e}"),
            }
        }
        Err(e) => {
            assert!(e.offset <= text.len(), "seed {seed}: {text:?}: {e:?}");
            assert!(
                text.is_char_boundary(e.offset),
                "seed {seed}: {text:?}: {e:?}"
            );
            assert_eq!(
                (e.line, e.column),
                line_column(text, e.offset),
                "seed {seed}: {text:?}"
            );
            assert!(
                !e.expected.is_empty() && !e.found.is_empty(),
                "seed {seed}: {e:?}"
            );
            let _ = e.to_string();
        }
    }
}

#[test]
fn random_text_never_panics() {
    let mut rng = Rng(0x7ace_1a4e);
    for _ in 0..20_000 {
        let seed = rng.next();
        let mut case_rng = Rng(seed);
        let mut text = String::new();
        let pieces = case_rng.below(24);
        for _ in 0..pieces {
            if case_rng.chance(10) {
                // Any character at all.
                if let Some(c) = char::from_u32(case_rng.below(0x1_0000) as u32) {
                    text.push(c);
                }
            } else {
                let fragment: &&str = case_rng.pick(FRAGMENTS);
                text.push_str(fragment);
            }
        }
        check_input(&text, seed);
    }
}

#[test]
fn mutated_queries_never_panic() {
    let mut rng = Rng(0x5eed);
    let mut parsed = 0;
    for _ in 0..20_000 {
        let seed = rng.next();
        let mut case_rng = Rng(seed);
        let mut chars: Vec<char> = case_rng.pick(SEEDS).chars().collect();
        for _ in 0..=case_rng.below(3) {
            let at = case_rng.below(chars.len() + 1);
            match case_rng.below(4) {
                0 if at < chars.len() => {
                    chars.remove(at);
                }
                1 => {
                    let fragment = case_rng.pick(FRAGMENTS);
                    for (i, c) in fragment.chars().enumerate() {
                        chars.insert(at + i, c);
                    }
                }
                2 if at < chars.len() => {
                    let other = case_rng.below(chars.len());
                    chars.swap(at, other);
                }
                _ => chars.truncate(at),
            }
        }
        let text: String = chars.into_iter().collect();
        if parse(&text).is_ok() {
            parsed += 1;
        }
        check_input(&text, seed);
    }
    // The mutations keep some inputs valid, so the round-trip check gets exercised too.
    assert!(parsed > 1_000, "only {parsed} mutated queries parsed");
}

#[test]
fn generated_trees_round_trip() {
    let mut rng = Rng(0xa57);
    for _ in 0..5_000 {
        let seed = rng.next();
        let mut g = Rng(seed);
        let q = gen_query(&mut g);
        let printed = q.to_string();
        match parse(&printed) {
            Ok(again) => assert_eq!(again, q, "seed {seed}: {printed}"),
            Err(e) => panic!("seed {seed}: {printed}\n{e}"),
        }
    }
}

// Generators of normalized, well-typed trees (the shapes the parser produces).

fn gen_query(g: &mut Rng) -> Query {
    let spansets = gen_spanset(g, 3);
    let pipeline = (0..g.below(4)).map(|_| gen_stage(g)).collect();
    let metrics = g.chance(30).then(|| gen_metrics(g));
    Query {
        spansets,
        pipeline,
        metrics,
    }
}

fn gen_spanset(g: &mut Rng, depth: usize) -> SpansetExpr {
    if depth == 0 || g.chance(40) {
        let condition = g.chance(85).then(|| gen_condition(g, 3));
        return SpansetExpr::Filter(SpansetFilter { condition });
    }
    match g.below(3) {
        0 => SpansetExpr::And(
            (0..2 + g.below(3))
                .map(|_| match gen_spanset(g, depth - 1) {
                    SpansetExpr::And(_) => SpansetExpr::Filter(SpansetFilter { condition: None }),
                    other => other,
                })
                .collect(),
        ),
        1 => SpansetExpr::Or(
            (0..2 + g.below(3))
                .map(|_| match gen_spanset(g, depth - 1) {
                    SpansetExpr::Or(_) => SpansetExpr::Filter(SpansetFilter { condition: None }),
                    other => other,
                })
                .collect(),
        ),
        _ => SpansetExpr::Structural {
            op: *g.pick(&[
                StructuralOp::Child,
                StructuralOp::Descendant,
                StructuralOp::Parent,
                StructuralOp::Ancestor,
                StructuralOp::Sibling,
            ]),
            lhs: Box::new(gen_spanset(g, depth - 1)),
            rhs: Box::new(gen_spanset(g, depth - 1)),
        },
    }
}

fn gen_condition(g: &mut Rng, depth: usize) -> Condition {
    if depth == 0 || g.chance(45) {
        return if g.chance(5) {
            Condition::Bool(g.chance(50))
        } else {
            Condition::Compare(gen_comparison(g))
        };
    }
    match g.below(3) {
        0 => Condition::Not(Box::new(gen_condition(g, depth - 1))),
        1 => Condition::And(
            (0..2 + g.below(3))
                .map(|_| match gen_condition(g, depth - 1) {
                    Condition::And(_) => Condition::Bool(true),
                    other => other,
                })
                .collect(),
        ),
        _ => Condition::Or(
            (0..2 + g.below(3))
                .map(|_| match gen_condition(g, depth - 1) {
                    Condition::Or(_) => Condition::Bool(false),
                    other => other,
                })
                .collect(),
        ),
    }
}

const NAMES: &[&str] = &[
    "a",
    "http.method",
    "foo bar",
    "x\"y",
    "99",
    "5xx",
    "é",
    "a-b/c:d",
    "",
    "tab\there",
    "{}",
    "`",
    "back\\slash",
    "span.x",
];

fn gen_attribute(g: &mut Rng) -> Field {
    Field::Attribute(Attribute {
        scope: *g.pick(&[
            AttributeScope::Unscoped,
            AttributeScope::Span,
            AttributeScope::Resource,
            AttributeScope::Event,
            AttributeScope::Link,
            AttributeScope::Instrumentation,
        ]),
        name: g.pick(NAMES).to_string(),
    })
}

fn gen_string(g: &mut Rng) -> String {
    (0..g.below(8))
        .filter_map(|_| match g.below(4) {
            0 => char::from_u32(g.below(0x80) as u32),
            1 => char::from_u32(g.below(0x11_0000) as u32),
            _ => Some(*g.pick(&['a', 'Z', ' ', '"', '\\', '`', '\n', '.', '*'])),
        })
        .collect()
}

fn gen_float(g: &mut Rng) -> f64 {
    loop {
        let x = match g.below(3) {
            0 => f64::from_bits(g.next()),
            1 => g.below(1_000_000) as f64 / 1000.0,
            _ => -(g.below(100) as f64),
        };
        if x.is_finite() {
            return x;
        }
    }
}

fn gen_int(g: &mut Rng) -> i64 {
    match g.below(4) {
        0 => g.next() as i64,
        1 => *g.pick(&[i64::MIN, i64::MAX, 0, -1]),
        _ => g.below(1000) as i64 - 100,
    }
}

fn gen_duration(g: &mut Rng) -> Duration {
    Duration::from_nanos(match g.below(3) {
        0 => g.next() >> 1,
        1 => g.below(1000) as u64 * 1_000_000,
        _ => g.below(100) as u64 * 60_000_000_000,
    })
}

fn gen_comparison(g: &mut Rng) -> Comparison {
    const ALL_OPS: [CompareOp; 8] = [
        CompareOp::Eq,
        CompareOp::Ne,
        CompareOp::Gt,
        CompareOp::Ge,
        CompareOp::Lt,
        CompareOp::Le,
        CompareOp::Regex,
        CompareOp::NotRegex,
    ];
    const EQUALITY: [CompareOp; 2] = [CompareOp::Eq, CompareOp::Ne];
    const ORDER: [CompareOp; 6] = [
        CompareOp::Eq,
        CompareOp::Ne,
        CompareOp::Gt,
        CompareOp::Ge,
        CompareOp::Lt,
        CompareOp::Le,
    ];
    if g.chance(50) {
        let field = gen_attribute(g);
        let op = *g.pick(&ALL_OPS);
        let value = if op.is_regex() {
            Literal::String(gen_string(g))
        } else {
            match g.below(6) {
                0 => Literal::String(gen_string(g)),
                1 => Literal::Int(gen_int(g)),
                2 => Literal::Float(gen_float(g)),
                3 => Literal::Duration(gen_duration(g)),
                4 => {
                    return Comparison {
                        field,
                        op: *g.pick(&EQUALITY),
                        value: Literal::Bool(g.chance(50)),
                    }
                }
                _ => {
                    return Comparison {
                        field,
                        op: *g.pick(&EQUALITY),
                        value: Literal::Nil,
                    }
                }
            }
        };
        return Comparison { field, op, value };
    }
    let intrinsic = *g.pick(&Intrinsic::ALL);
    let field = Field::Intrinsic(intrinsic);
    let (op, value) = match intrinsic.value_type() {
        ValueType::String | ValueType::Id => (*g.pick(&ALL_OPS), Literal::String(gen_string(g))),
        ValueType::Status => (
            *g.pick(&EQUALITY),
            Literal::Status(*g.pick(&[Status::Ok, Status::Error, Status::Unset])),
        ),
        ValueType::Kind => (
            *g.pick(&EQUALITY),
            Literal::Kind(*g.pick(&[
                SpanKind::Unspecified,
                SpanKind::Internal,
                SpanKind::Server,
                SpanKind::Client,
                SpanKind::Producer,
                SpanKind::Consumer,
            ])),
        ),
        ValueType::Duration => (*g.pick(&ORDER), Literal::Duration(gen_duration(g))),
        ValueType::Int | ValueType::Float | ValueType::Bool => {
            (*g.pick(&ORDER), Literal::Int(gen_int(g)))
        }
    };
    Comparison { field, op, value }
}

fn gen_field(g: &mut Rng) -> Field {
    if g.chance(50) {
        gen_attribute(g)
    } else {
        Field::Intrinsic(*g.pick(&Intrinsic::ALL))
    }
}

fn gen_fields(g: &mut Rng) -> Vec<Field> {
    (0..1 + g.below(3)).map(|_| gen_field(g)).collect()
}

fn gen_stage(g: &mut Rng) -> Stage {
    match g.below(5) {
        0 => Stage::Filter(gen_spanset(g, 2)),
        1 => Stage::By(gen_fields(g)),
        2 => Stage::Select(gen_fields(g)),
        3 => Stage::Coalesce,
        _ => {
            let numeric = [
                Intrinsic::SpanDuration,
                Intrinsic::TraceDuration,
                Intrinsic::SpanChildCount,
            ];
            let field = if g.chance(50) {
                gen_attribute(g)
            } else {
                Field::Intrinsic(*g.pick(&numeric))
            };
            let aggregate = match g.below(5) {
                0 => Aggregate::Count,
                1 => Aggregate::Avg(field),
                2 => Aggregate::Min(field),
                3 => Aggregate::Max(field),
                _ => Aggregate::Sum(field),
            };
            let wants = match &aggregate {
                Aggregate::Count => Some(false),
                Aggregate::Avg(f) | Aggregate::Min(f) | Aggregate::Max(f) | Aggregate::Sum(f) => {
                    f.value_type().map(|t| t == ValueType::Duration)
                }
            };
            let value = match (wants, g.below(3)) {
                (Some(true), _) | (None, 0) => Literal::Duration(gen_duration(g)),
                (_, 1) => Literal::Float(gen_float(g)),
                _ => Literal::Int(gen_int(g)),
            };
            let op = *g.pick(&[
                CompareOp::Eq,
                CompareOp::Ne,
                CompareOp::Gt,
                CompareOp::Ge,
                CompareOp::Lt,
                CompareOp::Le,
            ]);
            Stage::ScalarFilter(ScalarFilter {
                aggregate,
                op,
                value,
            })
        }
    }
}

fn gen_metrics(g: &mut Rng) -> MetricsStage {
    let field = gen_field(g);
    let function = match g.below(8) {
        0 => MetricsFunction::Rate,
        1 => MetricsFunction::CountOverTime,
        2 => MetricsFunction::QuantileOverTime {
            field,
            quantiles: (0..1 + g.below(3))
                .map(|_| g.below(1001) as f64 / 1000.0)
                .collect(),
        },
        3 => MetricsFunction::MinOverTime(field),
        4 => MetricsFunction::MaxOverTime(field),
        5 => MetricsFunction::AvgOverTime(field),
        6 => MetricsFunction::SumOverTime(field),
        _ => MetricsFunction::HistogramOverTime(field),
    };
    let by = if g.chance(50) {
        gen_fields(g)
    } else {
        Vec::new()
    };
    MetricsStage { function, by }
}
