//! Table-driven tests of the TraceQL parser through its public API: the SPECS.md §5 examples,
//! valid queries checked against a compact S-expression of their tree, malformed queries
//! checked against their error message, and the Display round trip for every valid query.

use tracelake_query::traceql::{
    self, Aggregate, Attribute, AttributeScope, Comparison, Condition, Field, Literal,
    MetricsFunction, Query, SpansetExpr, Stage,
};

/// The query examples of SPECS.md §5, verbatim.
const SPEC_EXAMPLES: &[&str] = &[
    r#"{ resource.service.name = "cart" && span.http.status_code >= 500 }"#,
    r#"{ name =~ "GET /api/.*" && duration > 200ms }"#,
    r#"{ status = error && kind = server }"#,
    r#"{ span.http.url = "/api" } >> { span.db.system = "postgresql" }"#,
    r#"{ status = error } | by(resource.service.name) | count() > 1"#,
    r#"{ resource.service.name = "foo" } | rate() by (span:name)"#,
];

/// (query, expected tree). The tree notation: `{cond}` filter, `(&& a b)` spanset operators,
/// `(and ...)`/`(or ...)`/`(not c)` conditions, `(op field literal)` comparisons, intrinsics by
/// variant name, attributes as `scope.name`, literals as `"str"`, `5`, `1.5f`, durations in
/// std's Debug form (`200ms`, `5400s`).
const VALID: &[(&str, &str)] = &[
    // Spec examples.
    (
        r#"{ resource.service.name = "cart" && span.http.status_code >= 500 }"#,
        r#"{(and (= resource.service.name "cart") (>= span.http.status_code 500))}"#,
    ),
    (
        r#"{ name =~ "GET /api/.*" && duration > 200ms }"#,
        r#"{(and (=~ SpanName "GET /api/.*") (> SpanDuration 200ms))}"#,
    ),
    (
        "{ status = error && kind = server }",
        "{(and (= SpanStatus error) (= SpanKind server))}",
    ),
    (
        r#"{ span.http.url = "/api" } >> { span.db.system = "postgresql" }"#,
        r#"(>> {(= span.http.url "/api")} {(= span.db.system "postgresql")})"#,
    ),
    (
        "{ status = error } | by(resource.service.name) | count() > 1",
        "{(= SpanStatus error)} | by(resource.service.name) | (> count 1)",
    ),
    (
        r#"{ resource.service.name = "foo" } | rate() by (span:name)"#,
        r#"{(= resource.service.name "foo")} | rate by(SpanName)"#,
    ),
    // Empty and trivial filters.
    ("{}", "{}"),
    ("{ }", "{}"),
    ("  {\n}\n", "{}"),
    ("{ true }", "{true}"),
    ("{ false }", "{false}"),
    // Attribute scopes and names.
    (
        r#"{ .http.request.method = "GET" }"#,
        r#"{(= .http.request.method "GET")}"#,
    ),
    (
        r#"{ event.exception.type = "IOError" }"#,
        r#"{(= event.exception.type "IOError")}"#,
    ),
    (r#"{ link.peer = "db" }"#, r#"{(= link.peer "db")}"#),
    (
        r#"{ instrumentation.library = "otel" }"#,
        r#"{(= instrumentation.library "otel")}"#,
    ),
    (r#"{ span."foo bar" = 1 }"#, r#"{(= span."foo bar" 1)}"#),
    ("{ .`raw name` = 1 }", r#"{(= ."raw name" 1)}"#),
    (r#"{ ."quoted" = true }"#, "{(= .quoted true)}"),
    ("{ .x-forwarded-for != nil }", "{(!= .x-forwarded-for nil)}"),
    ("{ span.http.status_code>=500 }", "{(>= span.http.status_code 500)}"),
    ("{.a=1&&.b!=2}", "{(and (= .a 1) (!= .b 2))}"),
    ("{ .5xx = 1 }", "{(= .5xx 1)}"),
    // Condition precedence, parentheses, negation, flattening.
    (
        "{ .a = 1 && .b = 2 || .c = 3 }",
        "{(or (and (= .a 1) (= .b 2)) (= .c 3))}",
    ),
    (
        "{ .a = 1 || .b = 2 && .c = 3 }",
        "{(or (= .a 1) (and (= .b 2) (= .c 3)))}",
    ),
    (
        "{ (.a = 1 || .b = 2) && .c = 3 }",
        "{(and (or (= .a 1) (= .b 2)) (= .c 3))}",
    ),
    (
        "{ .a = 1 && .b = 2 && .c = 3 }",
        "{(and (= .a 1) (= .b 2) (= .c 3))}",
    ),
    (
        "{ (.a = 1 && .b = 2) && (.c = 3 && .d = 4) }",
        "{(and (= .a 1) (= .b 2) (= .c 3) (= .d 4))}",
    ),
    ("{ !(.a = 1) }", "{(not (= .a 1))}"),
    (
        "{ !.a = 1 && .b = 2 }",
        "{(and (not (= .a 1)) (= .b 2))}",
    ),
    (
        "{ !(.a = 1 || .b = 2) }",
        "{(not (or (= .a 1) (= .b 2)))}",
    ),
    ("{ ((.a = 1)) }", "{(= .a 1)}"),
    // Comparison operators and flipping.
    (
        r#"{ name !~ `^/health.*` }"#,
        r#"{(!~ SpanName "^/health.*")}"#,
    ),
    (
        "{ .a < 1 && .b <= 2 && .c > 3 && .d >= 4 && .e = 5 && .f != 6 }",
        "{(and (< .a 1) (<= .b 2) (> .c 3) (>= .d 4) (= .e 5) (!= .f 6))}",
    ),
    (
        "{ 500 <= span.http.status_code }",
        "{(>= span.http.status_code 500)}",
    ),
    ("{ 1s < duration }", "{(> SpanDuration 1s)}"),
    (r#"{ "GET" = name }"#, r#"{(= SpanName "GET")}"#),
    // Durations.
    ("{ duration >= 1h30m }", "{(>= SpanDuration 5400s)}"),
    ("{ duration < 1.5s }", "{(< SpanDuration 1.5s)}"),
    ("{ duration <= 300µs }", "{(<= SpanDuration 300µs)}"),
    ("{ duration <= 300μs }", "{(<= SpanDuration 300µs)}"),
    ("{ duration > 10us }", "{(> SpanDuration 10µs)}"),
    ("{ duration > 5ns }", "{(> SpanDuration 5ns)}"),
    ("{ duration > 2m }", "{(> SpanDuration 120s)}"),
    ("{ duration > 2h }", "{(> SpanDuration 7200s)}"),
    ("{ duration > 0s }", "{(> SpanDuration 0ns)}"),
    // Intrinsics, legacy and scoped.
    (
        r#"{ statusMessage = "timeout" }"#,
        r#"{(= SpanStatusMessage "timeout")}"#,
    ),
    (
        r#"{ rootName = "GET /" && rootServiceName = "frontend" && traceDuration > 1s }"#,
        r#"{(and (= TraceRootName "GET /") (= TraceRootService "frontend") (> TraceDuration 1s))}"#,
    ),
    (
        r#"{ span:name = "x" && span:status = error && span:kind = server && span:duration > 1ms }"#,
        r#"{(and (= SpanName "x") (= SpanStatus error) (= SpanKind server) (> SpanDuration 1ms))}"#,
    ),
    (
        r#"{ trace:rootName = "a" || trace:rootService = "b" || trace:duration > 2s }"#,
        r#"{(or (= TraceRootName "a") (= TraceRootService "b") (> TraceDuration 2s))}"#,
    ),
    (
        r#"{ trace:id = "0af7651916cd43dd8448eb211c80319c" && span:id = "b7ad6b7169203331" }"#,
        r#"{(and (= TraceId "0af7651916cd43dd8448eb211c80319c") (= SpanId "b7ad6b7169203331"))}"#,
    ),
    (
        r#"{ event:name = "exception" && link:traceID != nil && span:parentID = "" }"#,
        r#"{(and (= EventName "exception") (!= LinkTraceId nil) (= SpanParentId ""))}"#,
    ),
    (
        r#"{ span:childCount > 2 && instrumentation:name = "io.opentelemetry" && event:timeSinceStart > 1ms }"#,
        r#"{(and (> SpanChildCount 2) (= InstrumentationName "io.opentelemetry") (> EventTimeSinceStart 1ms))}"#,
    ),
    (
        "{ kind = client || kind = producer || kind = consumer || kind = internal || kind = unspecified }",
        "{(or (= SpanKind client) (= SpanKind producer) (= SpanKind consumer) (= SpanKind internal) (= SpanKind unspecified))}",
    ),
    (
        "{ status != ok && status != unset }",
        "{(and (!= SpanStatus ok) (!= SpanStatus unset))}",
    ),
    // Literals.
    ("{ .a = 1.5 }", "{(= .a 1.5f)}"),
    ("{ .a = -3 }", "{(= .a -3)}"),
    ("{ .a > -2.5 }", "{(> .a -2.5f)}"),
    ("{ .a = 1e3 }", "{(= .a 1000.0f)}"),
    ("{ .a = 2.5E-3 }", "{(= .a 0.0025f)}"),
    ("{ .a = 9223372036854775807 }", "{(= .a 9223372036854775807)}"),
    ("{ .a = -9223372036854775808 }", "{(= .a -9223372036854775808)}"),
    ("{ .a = false }", "{(= .a false)}"),
    ("{ .a = nil }", "{(= .a nil)}"),
    (
        r#"{ .a = "q\"uote\\ \n\t\u00e9\x41" }"#,
        r#"{(= .a "q\"uote\\ \n\téA")}"#,
    ),
    (r#"{ .a = "" }"#, r#"{(= .a "")}"#),
    // Spanset operators and their precedence.
    ("{ .a = 1 } && { .b = 2 }", "(&& {(= .a 1)} {(= .b 2)})"),
    ("{ .a = 1 } || { .b = 2 }", "(|| {(= .a 1)} {(= .b 2)})"),
    ("{ .a = 1 } > { .b = 2 }", "(> {(= .a 1)} {(= .b 2)})"),
    ("{ .a = 1 } < { .b = 2 }", "(< {(= .a 1)} {(= .b 2)})"),
    ("{ .a = 1 } << { .b = 2 }", "(<< {(= .a 1)} {(= .b 2)})"),
    ("{ .a = 1 } ~ { .b = 2 }", "(~ {(= .a 1)} {(= .b 2)})"),
    (
        "{ .a = 1 } > { .b = 2 } && { .c = 3 }",
        "(&& (> {(= .a 1)} {(= .b 2)}) {(= .c 3)})",
    ),
    (
        "{ .a = 1 } || { .b = 2 } && { .c = 3 }",
        "(|| {(= .a 1)} (&& {(= .b 2)} {(= .c 3)}))",
    ),
    (
        "({ .a = 1 } || { .b = 2 }) >> { .c = 3 }",
        "(>> (|| {(= .a 1)} {(= .b 2)}) {(= .c 3)})",
    ),
    (
        "{ .a = 1 } > { .b = 2 } >> { .c = 3 }",
        "(>> (> {(= .a 1)} {(= .b 2)}) {(= .c 3)})",
    ),
    (
        "{ .a = 1 } > ({ .b = 2 } > { .c = 3 })",
        "(> {(= .a 1)} (> {(= .b 2)} {(= .c 3)}))",
    ),
    (
        "{ .a = 1 } && { .b = 2 } && ({ .c = 3 } && { .d = 4 })",
        "(&& {(= .a 1)} {(= .b 2)} {(= .c 3)} {(= .d 4)})",
    ),
    ("{}>{}", "(> {} {})"),
    // Pipelines.
    ("{ } | count() > 2", "{} | (> count 2)"),
    ("{ } | count() >= 2.5", "{} | (>= count 2.5f)"),
    (
        "{ } | avg(duration) > 20ms",
        "{} | (> (avg SpanDuration) 20ms)",
    ),
    ("{ } | min(span.x) <= -3", "{} | (<= (min span.x) -3)"),
    ("{ } | max(duration) < 1s", "{} | (< (max SpanDuration) 1s)"),
    ("{ } | sum(.bytes) != 1000000", "{} | (!= (sum .bytes) 1000000)"),
    ("{ } | sum(.bytes) = 1.5", "{} | (= (sum .bytes) 1.5f)"),
    ("{ } | by(.a, span:name)", "{} | by(.a, SpanName)"),
    (
        "{ } | select(span.http.url, duration, trace:id)",
        "{} | select(span.http.url, SpanDuration, TraceId)",
    ),
    ("{ } | coalesce()", "{} | coalesce"),
    (
        "{ } | { .a = 1 } | { .b = 2 } > { .c = 3 }",
        "{} | filter({(= .a 1)}) | filter((> {(= .b 2)} {(= .c 3)}))",
    ),
    (
        "{ status = error } | by(resource.service.name) | count() > 1 | select(.a) | avg(duration) > 1s",
        "{(= SpanStatus error)} | by(resource.service.name) | (> count 1) | select(.a) | (> (avg SpanDuration) 1s)",
    ),
    (
        "{ .a = 1 } && { .b = 2 } | count() > 1",
        "(&& {(= .a 1)} {(= .b 2)}) | (> count 1)",
    ),
    // Metrics.
    ("{ } | rate()", "{} | rate"),
    (
        "{ } | count_over_time() by (resource.service.name, span:kind)",
        "{} | count_over_time by(resource.service.name, SpanKind)",
    ),
    (
        "{ } | quantile_over_time(duration, .99, 0.9, 0.5, 1)",
        "{} | quantile_over_time(SpanDuration, [0.99, 0.9, 0.5, 1.0])",
    ),
    (
        "{ } | histogram_over_time(duration) by(span:name)",
        "{} | histogram_over_time(SpanDuration) by(SpanName)",
    ),
    (
        "{ } | min_over_time(duration)",
        "{} | min_over_time(SpanDuration)",
    ),
    (
        "{ } | max_over_time(.a)",
        "{} | max_over_time(.a)",
    ),
    (
        "{ } | avg_over_time(span.bytes)",
        "{} | avg_over_time(span.bytes)",
    ),
    (
        "{ } | sum_over_time(span.bytes)",
        "{} | sum_over_time(span.bytes)",
    ),
    (
        "{ status = error } | by(.a) | rate() by (.a)",
        "{(= SpanStatus error)} | by(.a) | rate by(.a)",
    ),
    // Layout.
    (
        "{\n  resource.service.name = \"cart\"\n  && duration > 1s\n}\n| count() > 1\n",
        r#"{(and (= resource.service.name "cart") (> SpanDuration 1s))} | (> count 1)"#,
    ),
];

/// (query, substring of the error's Display).
const MALFORMED: &[(&str, &str)] = &[
    ("", "line 1, column 1: expected a spanset filter such as { } or { status = error }, found end of input"),
    ("   \n ", "line 2, column 2: expected a spanset filter"),
    ("{", "expected a condition such as span.x = 1 after \"{\", found end of input"),
    (
        "{ span.x = 1",
        "line 1, column 13: expected \"&&\", \"||\" or \"}\" to close the \"{\" at line 1, column 1, found end of input",
    ),
    ("{ span.foo = }", "line 1, column 14: expected a value after \"=\", found \"}\""),
    (
        "{ span.x = \"abc }",
        "line 1, column 12: expected a closing \" for the string that starts here, found end of input",
    ),
    ("{ span.x = `abc }", "expected a closing ` for the string that starts here"),
    ("{ span.x == 1 }", "found \"==\"; TraceQL tests equality with a single ="),
    ("{ span.x => 1 }", "expected a value after \"=\", found \">\""),
    ("{ span.x <> 1 }", "expected a value after \"<\", found \">\""),
    ("{ span.x ! 1 }", "expected a comparison operator (=, !=, >, >=, <, <=, =~, !~) after \"span.x\", found \"!\""),
    ("{ span.x ~ \"a\" }", "found \"~\"; regex match is written =~"),
    ("{ nme = \"x\" }", "found \"nme\"; did you mean \"name\"?"),
    ("{ foo = \"x\" }", "attributes need a scope: span.foo, resource.foo or .foo"),
    ("{ span:nme = \"x\" }", "expected a known intrinsic, found \"span:nme\"; did you mean \"span:name\"?"),
    ("{ trace:foo = 1 }", "expected a known intrinsic, found \"trace:foo\""),
    ("{ span: = 1 }", "expected an intrinsic name after \"span:\""),
    (
        "{ } | count()",
        "expected a comparison (=, !=, >, >=, <, <=) after count(), found end of input; an aggregate filters spansets",
    ),
    ("{ } | count() | by(.a)", "after count(), found \"|\""),
    ("{ } | count() =~ 2", "expected a comparison (=, !=, >, >=, <, <=) after count(), found \"=~\""),
    (
        "{ duration > 200xs }",
        "line 1, column 17: expected a duration unit (ns, us, µs, ms, s, m or h), found \"xs\" in \"200xs\"",
    ),
    ("{ duration > 1h30 }", "expected a unit after \"30\" (ns, us, µs, ms, s, m or h)"),
    ("{ duration > 1e3ms }", "durations take no exponent"),
    (
        "{ } }",
        "expected a spanset operator (&&, ||, >, >>, <, <<, ~), \"|\" or the end of the query, found \"}\"",
    ),
    ("{ } garbage", "the end of the query, found \"garbage\""),
    ("{ } | count() > 2 foo", "expected \"|\" or the end of the query, found \"foo\""),
    ("{ span.x = 1 & span.y = 2 }", "expected \"&&\", found \"&\""),
    ("{ span.x }", "after \"span.x\", found \"}\"; a field alone is not a condition"),
    ("{ status = 200 }", "expected a status (ok, error or unset) to compare with span:status, found \"200\""),
    ("{ kind = \"server\" }", "expected a span kind (unspecified, internal, server, client, producer or consumer) to compare with span:kind, found string \"server\""),
    ("{ duration > 100 }", "expected a duration to compare with span:duration, found \"100\""),
    ("{ name = 5 }", "expected a string to compare with span:name"),
    ("{ span:childCount > \"2\" }", "expected a number to compare with span:childCount"),
    ("{ span.x = error }", "error is a status literal"),
    ("{ span.x = server }", "server is a span kind literal"),
    ("{ span.x =~ 5 }", "expected a regular expression string after \"=~\", found \"5\""),
    ("{ span.x > nil }", "expected = or != when comparing with nil, found \">\""),
    ("{ span.x >= true }", "expected = or != when comparing with true or false"),
    ("{ status > ok }", "expected = or != when comparing with span:status, found \">\""),
    ("{ span.a = span.b }", "comparing two fields is not supported"),
    ("{ 1 = 2 }", "one side of a comparison must be a field"),
    ("{ \"x\" =~ span.a }", "the regex goes on the right"),
    ("{ foo.bar = 1 }", "expected an attribute scope (span., resource., event., link., instrumentation.) or \".\", found \"foo.\""),
    ("{ spn.bar = 1 }", "did you mean \"span.bar\"?"),
    ("{ span. = 1 }", "expected an attribute name after \"span.\", found a space"),
    ("{ . = 1 }", "expected an attribute name after \".\""),
    ("{ .a = \"bad \\q escape\" }", "expected an escape sequence"),
    ("{ .a = \"\\x80\" }", "2 hex digits after \\x (00 to 7f)"),
    ("{ .a = \"\\u12\" }", "4 hex digits after \\u"),
    ("{ .a = 99999999999999999999 }", "expected an integer up to 9223372036854775807"),
    ("{ .a = 9223372036854775808 }", "expected an integer from -9223372036854775808 to 9223372036854775807"),
    ("{ .a = 1e999 }", "expected a float within"),
    ("{ .a = 'x' }", "strings use double quotes or backticks"),
    ("{ .a = -200ms }", "durations cannot be negative"),
    ("{ .a = - }", "expected a number after \"-\""),
    ("{ .a = 1 } >> ", "expected a spanset filter such as { status = error } after \">>\", found end of input"),
    ("{ .a = 1 } > > { }", "after \">\", found \">\""),
    ("{ .a = 1 } && span.b = 2", "conditions go inside braces"),
    ("({ .a = 1 }", "expected a spanset operator (&&, ||, >, >>, <, <<, ~) or \")\" to close the \"(\" at line 1, column 1"),
    ("{ ( .a = 1 }", "expected \"&&\", \"||\" or \")\" to close the \"(\" at line 1, column 3, found \"}\""),
    ("{ .a = 1 .b = 2 }", "to close the \"{\" at line 1, column 1, found \".b\""),
    ("({ } | count() > 1)", "a pipeline cannot be nested in parentheses"),
    ("{ } | rate() | count() > 1", "a metrics function must be the last stage"),
    ("{ } | rate() by(.a) by(.b)", "expected the end of the query after rate, found \"by\""),
    ("{ } | quantile_over_time(duration, 1.5)", "expected a quantile between 0 and 1"),
    ("{ } | quantile_over_time(duration)", "expected \",\" and at least one quantile"),
    ("{ } | rate(duration)", "rate() takes no arguments"),
    ("{ } | count(duration) > 1", "count() takes no arguments"),
    ("{ } | by()", "inside by( ), found \")\""),
    ("{ } | select(.a,)", "after \",\", found \")\""),
    ("{ } | select(.a", "expected \",\" or \")\" to close select(, found end of input"),
    ("{ } | by(1)", "expected a field (span.x, resource.x, .x or an intrinsic such as name, status, duration) inside by( ), found \"1\""),
    ("{ } | frobnicate()", "expected a pipeline stage after \"|\""),
    ("{ } | cont() > 1", "did you mean \"count\"?"),
    ("{ } |", "expected a pipeline stage after \"|\" (by(...), select(...), count() > N, avg(field) > N, rate(), { ... }), found end of input"),
    ("{ } | avg(name) > 1", "expected a numeric or duration field inside avg( ), found \"name\""),
    ("{ } | avg(duration) > 2", "expected a duration to compare with avg(span:duration), found \"2\""),
    ("{ } | count() > 1ms", "expected a number to compare with count(), found \"1ms\""),
    ("{ } | count() > \"1\"", "expected a number or duration after \">\", found string \"1\""),
    ("{ } | coalesce(1)", "coalesce() takes no arguments"),
    ("{ .a = 1 } # comment", "found \"#\""),
    (
        "{ span.a = 1 &&\n  span.b = }",
        "line 2, column 12: expected a value after \"=\", found \"}\"",
    ),
    (
        "{ span.a = 1 } >>\n\n   { span.b = \"x }",
        "line 3, column 15: expected a closing \" for the string",
    ),
];

#[test]
fn spec_examples_parse() {
    for q in SPEC_EXAMPLES {
        if let Err(e) = traceql::parse(q) {
            panic!("spec example {q:?} does not parse: {e}");
        }
    }
}

#[test]
fn valid_queries_have_the_expected_tree() {
    assert!(VALID.len() >= 46, "40 beyond the spec examples");
    let mut failures = Vec::new();
    for (q, want) in VALID {
        match traceql::parse(q) {
            Ok(parsed) => {
                let got = sexpr(&parsed);
                if got != *want {
                    failures.push(format!("{q:?}\n   got  {got}\n   want {want}"));
                }
            }
            Err(e) => failures.push(format!("{q:?}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn display_round_trips() {
    let mut failures = Vec::new();
    for q in SPEC_EXAMPLES.iter().chain(VALID.iter().map(|(q, _)| q)) {
        let parsed = traceql::parse(q).unwrap_or_else(|e| panic!("{q:?}: {e}"));
        let printed = parsed.to_string();
        match traceql::parse(&printed) {
            Ok(again) if again == parsed => {
                // Canonical text is a fixed point.
                assert_eq!(again.to_string(), printed);
            }
            Ok(again) => failures.push(format!("{q:?} -> {printed:?} -> {again:?}")),
            Err(e) => failures.push(format!("{q:?} -> {printed:?}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn canonical_text() {
    let cases = [
        ("{}", "{ }"),
        (
            "{name=~`a.*`&&duration>1500ms}",
            r#"{ span:name =~ "a.*" && span:duration > 1500ms }"#,
        ),
        ("{ 500 <= .a }", "{ .a >= 500 }"),
        ("{ !.a = 1 }", "{ !(.a = 1) }"),
        (
            "{ (.a = 1 || .b = 2) && .c = 3 }",
            "{ (.a = 1 || .b = 2) && .c = 3 }",
        ),
        ("{ duration > 90s }", "{ span:duration > 90s }"),
        ("{ duration > 1h30m }", "{ span:duration > 90m }"),
        ("{ duration > 1.5ms }", "{ span:duration > 1500us }"),
        ("{ .a = 1e3 }", "{ .a = 1000.0 }"),
        (r#"{ span."a b" = "x\ty" }"#, r#"{ span."a b" = "x\ty" }"#),
        ("{ } > ({ } > { })", "{ } > ({ } > { })"),
        ("({ } > { }) > { }", "{ } > { } > { }"),
        ("({ } || { }) && { }", "({ } || { }) && { }"),
        ("{ } | rate() by(span:name)", "{ } | rate() by (span:name)"),
        (
            "{ } | quantile_over_time(duration, .99)",
            "{ } | quantile_over_time(span:duration, 0.99)",
        ),
    ];
    for (q, want) in cases {
        let parsed = traceql::parse(q).unwrap_or_else(|e| panic!("{q:?}: {e}"));
        assert_eq!(parsed.to_string(), want, "for {q:?}");
    }
}

#[test]
fn malformed_queries_fail_with_a_precise_error() {
    assert!(MALFORMED.len() >= 30);
    let mut failures = Vec::new();
    for (q, want) in MALFORMED {
        match traceql::parse(q) {
            Ok(parsed) => failures.push(format!("{q:?} parsed as {parsed}")),
            Err(e) => {
                let text = e.to_string();
                if !text.contains(want) {
                    failures.push(format!("{q:?}\n   got  {text}\n   want …{want}…"));
                }
                // The location fields agree with each other.
                assert!(
                    e.offset <= q.len(),
                    "{q:?}: offset {} past the end",
                    e.offset
                );
                assert!(
                    q.is_char_boundary(e.offset),
                    "{q:?}: offset inside a character"
                );
                let before = &q[..e.offset];
                assert_eq!(e.line, before.matches('\n').count() + 1, "{q:?}: line");
                let line_start = before.rfind('\n').map_or(0, |i| i + 1);
                assert_eq!(
                    e.column,
                    before[line_start..].chars().count() + 1,
                    "{q:?}: column"
                );
                assert!(text.starts_with("parse error at line "), "{text}");
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn error_fields_are_structured() {
    let e = traceql::parse("{ span.foo = }").unwrap_err();
    assert_eq!((e.offset, e.line, e.column), (13, 1, 14));
    assert_eq!(e.expected, "a value after \"=\"");
    assert_eq!(e.found, "\"}\"");
    assert_eq!(e.note, None);
    assert_eq!(
        e.to_string(),
        "parse error at line 1, column 14: expected a value after \"=\", found \"}\""
    );
    // Columns count characters, not bytes.
    let e = traceql::parse("{ .é = \"é\" } x").unwrap_err();
    assert_eq!((e.offset, e.column), (15, 14));
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    let deep = format!("{}{{ }}{}", "(".repeat(10_000), ")".repeat(10_000));
    let e = traceql::parse(&deep).unwrap_err();
    assert!(
        e.to_string().contains("at most 64 levels of nesting"),
        "{e}"
    );
    let deep = format!("{{ {}.a = 1 }}", "!".repeat(10_000));
    assert!(traceql::parse(&deep)
        .unwrap_err()
        .to_string()
        .contains("levels of nesting"));
    let chain = vec!["{ }"; 1_000].join(" > ");
    assert!(traceql::parse(&chain)
        .unwrap_err()
        .to_string()
        .contains("levels of nesting"));
    // Long flat chains are fine: && and || are n-ary.
    let wide = format!("{{ {} }}", vec![".a = 1"; 5_000].join(" && "));
    let q = traceql::parse(&wide).unwrap();
    let SpansetExpr::Filter(f) = &q.spansets else {
        panic!()
    };
    assert!(matches!(&f.condition, Some(Condition::And(items)) if items.len() == 5_000));
    // Within the limit works.
    let ok = format!("{}{{ }}{}", "(".repeat(60), ")".repeat(60));
    traceql::parse(&ok).unwrap();
}

#[test]
fn too_long_is_refused() {
    let long = format!("{{ .a = \"{}\" }}", "x".repeat(traceql::MAX_QUERY_BYTES));
    let e = traceql::parse(&long).unwrap_err();
    assert!(e.to_string().contains("a query of at most"), "{e}");
}

#[test]
fn typed_tree_for_planners() {
    let q: Query = r#"{ resource.service.name = "cart" && span:duration > 200ms }"#
        .parse()
        .unwrap();
    let SpansetExpr::Filter(f) = &q.spansets else {
        panic!("filter")
    };
    let Some(Condition::And(items)) = &f.condition else {
        panic!("and")
    };
    assert_eq!(
        items[0],
        Condition::Compare(Comparison {
            field: Field::Attribute(Attribute {
                scope: AttributeScope::Resource,
                name: "service.name".into(),
            }),
            op: traceql::CompareOp::Eq,
            value: Literal::String("cart".into()),
        })
    );
    let Condition::Compare(c) = &items[1] else {
        panic!("compare")
    };
    assert_eq!(c.field, Field::Intrinsic(traceql::Intrinsic::SpanDuration));
    assert_eq!(c.field.value_type(), Some(traceql::ValueType::Duration));
    assert_eq!(
        c.value,
        Literal::Duration(std::time::Duration::from_millis(200))
    );
    assert!(!q.is_metrics());
    let q = traceql::parse("{ } | quantile_over_time(duration, 0.5) by (.a)").unwrap();
    let m = q.metrics.unwrap();
    assert!(
        matches!(m.function, MetricsFunction::QuantileOverTime { ref quantiles, .. } if quantiles == &[0.5])
    );
    assert_eq!(m.by.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// The S-expression notation used by VALID.

fn sexpr(q: &Query) -> String {
    let mut out = spanset(&q.spansets);
    for stage in &q.pipeline {
        out.push_str(" | ");
        out.push_str(&match stage {
            Stage::Filter(e) => format!("filter({})", spanset(e)),
            Stage::ScalarFilter(s) => {
                let agg = match &s.aggregate {
                    Aggregate::Count => "count".to_string(),
                    Aggregate::Avg(f) => format!("(avg {})", field(f)),
                    Aggregate::Min(f) => format!("(min {})", field(f)),
                    Aggregate::Max(f) => format!("(max {})", field(f)),
                    Aggregate::Sum(f) => format!("(sum {})", field(f)),
                };
                format!("({} {agg} {})", s.op, literal(&s.value))
            }
            Stage::By(fields) => format!("by({})", fields_list(fields)),
            Stage::Select(fields) => format!("select({})", fields_list(fields)),
            Stage::Coalesce => "coalesce".to_string(),
        });
    }
    if let Some(m) = &q.metrics {
        out.push_str(" | ");
        out.push_str(m.function.name());
        match &m.function {
            MetricsFunction::Rate | MetricsFunction::CountOverTime => {}
            MetricsFunction::QuantileOverTime {
                field: f,
                quantiles,
            } => {
                out.push_str(&format!("({}, {quantiles:?})", field(f)));
            }
            MetricsFunction::MinOverTime(f)
            | MetricsFunction::MaxOverTime(f)
            | MetricsFunction::AvgOverTime(f)
            | MetricsFunction::SumOverTime(f)
            | MetricsFunction::HistogramOverTime(f) => out.push_str(&format!("({})", field(f))),
        }
        if !m.by.is_empty() {
            out.push_str(&format!(" by({})", fields_list(&m.by)));
        }
    }
    out
}

fn spanset(e: &SpansetExpr) -> String {
    match e {
        SpansetExpr::Filter(f) => match &f.condition {
            None => "{}".to_string(),
            Some(c) => format!("{{{}}}", condition(c)),
        },
        SpansetExpr::And(items) => nary("&&", items.iter().map(spanset)),
        SpansetExpr::Or(items) => nary("||", items.iter().map(spanset)),
        SpansetExpr::Structural { op, lhs, rhs } => {
            format!("({op} {} {})", spanset(lhs), spanset(rhs))
        }
    }
}

fn condition(c: &Condition) -> String {
    match c {
        Condition::Compare(c) => format!("({} {} {})", c.op, field(&c.field), literal(&c.value)),
        Condition::Bool(b) => b.to_string(),
        Condition::Not(c) => format!("(not {})", condition(c)),
        Condition::And(items) => nary("and", items.iter().map(condition)),
        Condition::Or(items) => nary("or", items.iter().map(condition)),
    }
}

fn nary(op: &str, items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    format!("({op} {})", items.join(" "))
}

fn field(f: &Field) -> String {
    match f {
        Field::Intrinsic(i) => format!("{i:?}"),
        Field::Attribute(a) => {
            let scope = match a.scope {
                AttributeScope::Unscoped => "",
                AttributeScope::Span => "span",
                AttributeScope::Resource => "resource",
                AttributeScope::Event => "event",
                AttributeScope::Link => "link",
                AttributeScope::Instrumentation => "instrumentation",
            };
            if a.name.contains(' ') {
                format!("{scope}.{:?}", a.name)
            } else {
                format!("{scope}.{}", a.name)
            }
        }
    }
}

fn fields_list(fields: &[Field]) -> String {
    fields.iter().map(field).collect::<Vec<_>>().join(", ")
}

fn literal(l: &Literal) -> String {
    match l {
        Literal::String(s) => format!("{s:?}"),
        Literal::Int(i) => i.to_string(),
        Literal::Float(x) => format!("{x:?}f"),
        Literal::Duration(d) => format!("{d:?}"),
        Literal::Bool(b) => b.to_string(),
        Literal::Nil => "nil".to_string(),
        Literal::Status(s) => s.to_string(),
        Literal::Kind(k) => k.to_string(),
    }
}
