//! TraceQL search (`GET /api/search`) against the real binary, checked against independent SQL.
//!
//! The conformance table pairs each TraceQL query with a SQL query over `/api/sql` that finds
//! the same traces another way: filters on the typed columns and attribute maps, `INTERSECT`
//! and `UNION` for `&&` and `||` between spansets, self-joins for `>`, `<` and `~`, recursive
//! CTEs for `>>` and `<<`, `GROUP BY ... HAVING` for pipelines. Every row must give the same
//! set of trace ids, once while the spans are in the write buffer and once from Parquet after
//! a restart.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::server::{run_loadgen, TestServer};

/// The loadgen workload's base time (unix seconds): all spans start within minutes of it.
const BASE: u64 = 1_764_000_000;
const TRACES: &str = "400";

fn window() -> String {
    format!("start={}&end={}", BASE - 600, BASE + 3_600)
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

async fn get(server: &TestServer, path_and_query: &str) -> (u16, Value) {
    let resp = reqwest::get(server.url(path_and_query)).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    let json = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, json)
}

/// Trace ids (32 hex digits) that `/api/search` returns for `q`.
async fn search_ids(server: &TestServer, q: &str, extra: &str) -> BTreeSet<String> {
    let path = format!(
        "/api/search?q={}&limit=10000&{}{extra}",
        urlencode(q),
        window()
    );
    let (status, body) = get(server, &path).await;
    assert_eq!(status, 200, "{q}: {body}");
    body["traces"]
        .as_array()
        .unwrap_or_else(|| panic!("{q}: no traces array: {body}"))
        .iter()
        .map(|t| format!("{:0>32}", t["traceID"].as_str().unwrap()))
        .collect()
}

/// Trace ids (column `id`, hex) from SQL.
async fn sql_ids(server: &TestServer, sql: &str) -> BTreeSet<String> {
    server
        .sql(sql)
        .await
        .iter()
        .map(|row| {
            row["id"]
                .as_str()
                .unwrap_or_else(|| panic!("{sql}: no id in {row}"))
                .to_string()
        })
        .collect()
}

/// Spans of alias `s` matching `pred` (written with `{}` for the alias).
fn f(pred: &str) -> String {
    format!(
        "SELECT DISTINCT encode(s.trace_id, 'hex') AS id FROM spans s WHERE {}",
        pred.replace("{}", "s")
    )
}

/// `{a} > {b}`: a `b` span whose parent is an `a` span.
fn child(a: &str, b: &str) -> String {
    format!(
        "SELECT DISTINCT encode(b.trace_id, 'hex') AS id FROM spans a JOIN spans b \
         ON a.trace_id = b.trace_id AND b.parent_span_id = a.span_id WHERE {} AND {}",
        a.replace("{}", "a"),
        b.replace("{}", "b")
    )
}

/// Traces with a `low` span that has a `high` ancestor (recursive walk up the parent links).
fn ancestry(low: &str, high: &str) -> String {
    format!(
        "WITH RECURSIVE up(trace_id, anc_id, depth) AS ( \
           SELECT trace_id, parent_span_id, 1 FROM spans l WHERE {} \
           UNION ALL \
           SELECT u.trace_id, p.parent_span_id, u.depth + 1 FROM up u JOIN spans p \
             ON p.trace_id = u.trace_id AND p.span_id = u.anc_id WHERE u.depth < 64) \
         SELECT DISTINCT encode(up.trace_id, 'hex') AS id FROM up JOIN spans h \
           ON h.trace_id = up.trace_id AND h.span_id = up.anc_id WHERE {}",
        low.replace("{}", "l"),
        high.replace("{}", "h")
    )
}

/// `{a} ~ {b}`: a `b` span with a different `a` span under the same parent.
fn sibling(a: &str, b: &str) -> String {
    format!(
        "SELECT DISTINCT encode(b.trace_id, 'hex') AS id FROM spans a JOIN spans b \
         ON a.trace_id = b.trace_id AND a.parent_span_id = b.parent_span_id \
         AND a.span_id <> b.span_id \
         WHERE encode(b.parent_span_id, 'hex') <> '' AND {} AND {}",
        a.replace("{}", "a"),
        b.replace("{}", "b")
    )
}

fn and(a: &str, b: &str) -> String {
    format!("({}) INTERSECT ({})", f(a), f(b))
}

fn or(a: &str, b: &str) -> String {
    format!("({}) UNION ({})", f(a), f(b))
}

/// Traces whose spans matching `pred`, grouped by `group`, have a group meeting `having`.
fn grouped(pred: &str, group: &str, having: &str) -> String {
    format!(
        "SELECT DISTINCT encode(trace_id, 'hex') AS id FROM spans s WHERE {} \
         GROUP BY trace_id{} HAVING {}",
        pred.replace("{}", "s"),
        if group.is_empty() {
            String::new()
        } else {
            format!(", {group}")
        },
        having
    )
}

/// Per-trace columns: duration, root name and service.
const PER_TRACE: &str = "(SELECT trace_id AS t_id, max(end_time_unix_nano) - min(start_time_unix_nano) AS t_dur, \
     max(CASE WHEN coalesce(encode(parent_span_id, 'hex'), '') = '' THEN name END) AS t_root, \
     max(CASE WHEN coalesce(encode(parent_span_id, 'hex'), '') = '' THEN service_name END) AS t_root_svc \
     FROM spans GROUP BY trace_id)";

fn with_trace(pred: &str) -> String {
    format!(
        "SELECT DISTINCT encode(s.trace_id, 'hex') AS id FROM spans s JOIN {PER_TRACE} t \
         ON s.trace_id = t.t_id WHERE {}",
        pred.replace("{}", "s")
    )
}

fn with_children(pred: &str) -> String {
    format!(
        "SELECT DISTINCT encode(s.trace_id, 'hex') AS id FROM spans s LEFT JOIN \
         (SELECT trace_id AS c_t, parent_span_id AS c_p, count(*) AS n FROM spans \
          GROUP BY trace_id, parent_span_id) c ON c.c_t = s.trace_id AND c.c_p = s.span_id \
         WHERE {}",
        pred.replace("{}", "s")
    )
}

fn int(key: &str) -> String {
    format!("{{}}.span_attributes['{key}']['int']")
}

fn string(key: &str) -> String {
    format!("{{}}.span_attributes['{key}']['str']")
}

/// The conformance table: (TraceQL, independent SQL giving the same trace ids).
fn table() -> Vec<(&'static str, String)> {
    let status = int("http.response.status_code");
    let db = string("db.system");
    let method = string("http.request.method");
    vec![
        // SPECS.md §5 examples (loadgen sends http.response.status_code, not http.status_code,
        // and has no http.url: those two match nothing, in both).
        (
            r#"{ resource.service.name = "cart" && span.http.status_code >= 500 }"#,
            f("{}.service_name = 'cart' AND {}.span_attributes['http.status_code']['int'] >= 500"),
        ),
        (
            r#"{ name =~ "GET /api/.*" && duration > 200ms }"#,
            f("{}.name ~ '^GET /api/.*$' AND {}.duration_nano > 200000000"),
        ),
        (
            "{ status = error && kind = server }",
            f("{}.status_code = 2 AND {}.kind = 2"),
        ),
        (
            r#"{ span.http.url = "/api" } >> { span.db.system = "postgresql" }"#,
            ancestry(
                &format!("{db} = 'postgresql'"),
                "{}.span_attributes['http.url']['str'] = '/api'",
            ),
        ),
        (
            "{ status = error } | by(resource.service.name) | count() > 1",
            grouped("{}.status_code = 2", "service_name", "count(*) > 1"),
        ),
        // Attributes: dedicated columns, maps, types, nil.
        (
            r#"{ resource.service.name = "cart" && span.http.response.status_code >= 500 }"#,
            f(&format!("{{}}.service_name = 'cart' AND {status} >= 500")),
        ),
        (
            "{ span.http.response.status_code = 404 }",
            f(&format!("{status} = 404")),
        ),
        (
            "{ span.http.response.status_code != 200 }",
            f(&format!("{status} <> 200")),
        ),
        (
            r#"{ span.http.request.method = "GET" && span.http.response.status_code >= 400 && span.http.response.status_code < 500 }"#,
            f(&format!("{method} = 'GET' AND {status} >= 400 AND {status} < 500")),
        ),
        (
            r#"{ .service.name = "payment" }"#,
            f("{}.resource_attributes['service.name']['str'] = 'payment'"),
        ),
        (
            r#"{ span.http.route = "/api/cart/{userId}" }"#,
            f("{}.span_attributes['http.route']['str'] = '/api/cart/{userId}'"),
        ),
        (
            r#"{ span.http.route =~ "/api/products.*" }"#,
            f("{}.span_attributes['http.route']['str'] ~ '^/api/products.*$'"),
        ),
        (
            r#"{ span.http.route !~ "/api/.*" && kind = server }"#,
            f("{}.span_attributes['http.route']['str'] !~ '^/api/.*$' AND {}.kind = 2"),
        ),
        (
            r#"{ span.url.path = "/api/products" }"#,
            f(&format!("{} = '/api/products'", string("url.path"))),
        ),
        (r#"{ span.db.system = "redis" }"#, f(&format!("{db} = 'redis'"))),
        (
            r#"{ span.db.system = "postgresql" && duration > 5ms }"#,
            f(&format!("{db} = 'postgresql' AND {{}}.duration_nano > 5000000")),
        ),
        (
            r#"{ kind = client && span.rpc.service =~ "shop.*" }"#,
            f("{}.kind = 3 AND {}.span_attributes['rpc.service']['str'] ~ '^shop.*$'"),
        ),
        (
            "{ span.rpc.grpc.status_code > 0 }",
            f(&format!("{} > 0", int("rpc.grpc.status_code"))),
        ),
        (
            "{ span.app.cache.hit = true }",
            f("{}.span_attributes['app.cache.hit']['bool'] = true"),
        ),
        (
            r#"{ span.app.cache.hit = false && resource.service.name = "catalog" }"#,
            f("{}.span_attributes['app.cache.hit']['bool'] = false AND {}.service_name = 'catalog'"),
        ),
        (
            "{ span.app.payment.amount > 100.5 }",
            f("coalesce({}.span_attributes['app.payment.amount']['double'], \
               CAST({}.span_attributes['app.payment.amount']['int'] AS DOUBLE)) > 100.5"),
        ),
        (
            "{ span.app.cart.items >= 3 }",
            f(&format!("{} >= 3", int("app.cart.items"))),
        ),
        (
            "{ span.error.type != nil }",
            f("{}.span_attributes['error.type'] IS NOT NULL"),
        ),
        (
            "{ span.error.type = nil && status = error }",
            f("{}.span_attributes['error.type'] IS NULL AND {}.status_code = 2"),
        ),
        (
            "{ span.server.port = 5432 }",
            f(&format!("{} = 5432", int("server.port"))),
        ),
        (
            r#"{ .server.address =~ ".*postgres.*" }"#,
            f(&format!("{} ~ '^.*postgres.*$'", string("server.address"))),
        ),
        (
            r#"{ resource.deployment.environment.name =~ "prod.*" && kind = server }"#,
            f("{}.resource_attributes['deployment.environment.name']['str'] ~ '^prod.*$' AND {}.kind = 2"),
        ),
        (
            r#"{ resource.k8s.pod.name =~ "checkout-.*" }"#,
            f("{}.k8s_pod_name ~ '^checkout-.*$'"),
        ),
        // Intrinsics.
        (r#"{ name = "SELECT products" }"#, f("{}.name = 'SELECT products'")),
        (
            r#"{ name != "GET" && kind = client && resource.service.name = "frontend" }"#,
            f("{}.name <> 'GET' AND {}.kind = 3 AND {}.service_name = 'frontend'"),
        ),
        ("{ duration >= 1s }", f("{}.duration_nano >= 1000000000")),
        (
            "{ duration < 100us && kind = internal }",
            f("{}.duration_nano < 100000 AND {}.kind = 1"),
        ),
        ("{ status = ok }", f("{}.status_code = 1")),
        ("{ status != unset }", f("{}.status_code <> 0")),
        ("{ kind = producer }", f("{}.kind = 4")),
        ("{ kind = consumer || kind = producer }", f("{}.kind IN (4, 5)")),
        (r#"{ statusMessage != "" }"#, f("{}.status_message <> ''")),
        (
            r#"{ (span.http.request.method = "POST" || span.http.request.method = "DELETE") && kind = server }"#,
            f(&format!("{method} IN ('POST', 'DELETE') AND {{}}.kind = 2")),
        ),
        (
            r#"{ !(resource.service.name = "frontend") && kind = server && duration > 50ms }"#,
            f("NOT coalesce({}.service_name = 'frontend', false) AND {}.kind = 2 \
               AND {}.duration_nano > 50000000"),
        ),
        ("{ }", f("true")),
        ("{ false }", f("false")),
        // Spanset operators.
        (
            r#"{ status = error } && { resource.service.name = "checkout" }"#,
            and("{}.status_code = 2", "{}.service_name = 'checkout'"),
        ),
        (
            r#"{ status = error } || { span.db.system = "redis" && duration > 2ms }"#,
            or(
                "{}.status_code = 2",
                &format!("{db} = 'redis' AND {{}}.duration_nano > 2000000"),
            ),
        ),
        (
            r#"{ resource.service.name = "frontend" } > { resource.service.name = "catalog" }"#,
            child("{}.service_name = 'frontend'", "{}.service_name = 'catalog'"),
        ),
        (
            r#"{ kind = server } > { kind = client && span.db.system = "postgresql" }"#,
            child("{}.kind = 2", &format!("{{}}.kind = 3 AND {db} = 'postgresql'")),
        ),
        (
            r#"{ resource.service.name = "checkout" } >> { resource.service.name = "inventory" }"#,
            ancestry("{}.service_name = 'inventory'", "{}.service_name = 'checkout'"),
        ),
        (
            r#"{ resource.service.name = "inventory" } << { resource.service.name = "frontend" }"#,
            ancestry("{}.service_name = 'inventory'", "{}.service_name = 'frontend'"),
        ),
        (
            r#"{ span.db.system = "postgresql" } < { kind = server }"#,
            child("{}.kind = 2", &format!("{db} = 'postgresql'")),
        ),
        (
            r#"{ span.db.system = "redis" } ~ { span.db.system = "postgresql" }"#,
            sibling(&format!("{db} = 'redis'"), &format!("{db} = 'postgresql'")),
        ),
        (
            r#"{ resource.service.name = "checkout" } >> { status = error }"#,
            ancestry("{}.status_code = 2", "{}.service_name = 'checkout'"),
        ),
        (
            r#"({ kind = server } > { kind = client }) && { span.db.system = "redis" }"#,
            format!(
                "({}) INTERSECT ({})",
                child("{}.kind = 2", "{}.kind = 3"),
                f(&format!("{db} = 'redis'"))
            ),
        ),
        // Pipelines.
        ("{ } | count() > 20", grouped("true", "", "count(*) > 20")),
        (
            "{ kind = server } | by(resource.service.name) | count() >= 3",
            grouped("{}.kind = 2", "service_name", "count(*) >= 3"),
        ),
        (
            r#"{ span.db.system = "postgresql" } | avg(duration) > 10ms"#,
            grouped(&format!("{db} = 'postgresql'"), "", "avg(duration_nano) > 10000000"),
        ),
        (
            "{ kind = client } | max(duration) > 500ms",
            grouped("{}.kind = 3", "", "max(duration_nano) > 500000000"),
        ),
        (
            "{ kind = server } | min(duration) < 1ms",
            grouped("{}.kind = 2", "", "min(duration_nano) < 1000000"),
        ),
        (
            "{ span.app.cart.items > 0 } | sum(span.app.cart.items) > 5",
            grouped(
                "{}.span_attributes['app.cart.items']['int'] > 0",
                "",
                "sum(span_attributes['app.cart.items']['int']) > 5",
            ),
        ),
        (
            r#"{ status = error } | { resource.service.name = "cart" }"#,
            f("{}.status_code = 2 AND {}.service_name = 'cart'"),
        ),
        (
            "{ kind = server } | select(span.http.route, status)",
            f("{}.kind = 2"),
        ),
        (
            "{ status = error } | by(resource.service.name) | coalesce()",
            f("{}.status_code = 2"),
        ),
        // Trace-level intrinsics and child counts.
        ("{ traceDuration > 1s }", with_trace("t.t_dur > 1000000000")),
        (
            r#"{ rootServiceName = "api-gateway" && status = error }"#,
            with_trace("t.t_root_svc = 'api-gateway' AND {}.status_code = 2"),
        ),
        (
            r#"{ rootName = "POST /api/checkout" && kind = client && duration > 100ms }"#,
            with_trace("t.t_root = 'POST /api/checkout' AND {}.kind = 3 AND {}.duration_nano > 100000000"),
        ),
        ("{ childCount > 5 }", with_children("c.n > 5")),
        (
            "{ childCount = 0 && kind = server }",
            with_children("c.n IS NULL AND {}.kind = 2"),
        ),
    ]
}

async fn check_table(server: &TestServer, phase: &str) {
    let rows = table();
    let mut non_empty = 0;
    for (q, sql) in &rows {
        let expected = sql_ids(server, sql).await;
        let got = search_ids(server, q, "").await;
        assert_eq!(
            got,
            expected,
            "{phase}: {q}\n  only in search: {:?}\n  only in SQL: {:?}\n  SQL: {sql}",
            got.difference(&expected).take(5).collect::<Vec<_>>(),
            expected.difference(&got).take(5).collect::<Vec<_>>(),
        );
        non_empty += usize::from(!expected.is_empty());
    }
    // The table is only a test if most rows select something, and not everything.
    assert!(
        non_empty * 10 >= rows.len() * 8,
        "{phase}: only {non_empty} of {} queries match any trace",
        rows.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn traceql_search_matches_independent_sql() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(dir.path(), &[]).await;
    let base = BASE.to_string();
    run_loadgen(&[
        "--traces",
        TRACES,
        "--rate",
        "0",
        "--seed",
        "5",
        "--start-time",
        &base,
        "--endpoint",
        &server.grpc_url(),
    ]);
    assert_eq!(
        table().len(),
        65,
        "the table's size is quoted in the README"
    );

    for phase in ["buffered", "flushed"] {
        check_table(&server, phase).await;

        // A trace id found by SQL, searched for by id.
        let rows = server
            .sql("SELECT encode(trace_id, 'hex') AS id FROM spans ORDER BY id LIMIT 1")
            .await;
        let id = rows[0]["id"].as_str().unwrap().to_string();
        let q = format!(r#"{{ trace:id = "{id}" }}"#);
        assert_eq!(
            search_ids(&server, &q, "").await,
            BTreeSet::from([id.clone()])
        );

        // `limit` keeps the traces whose matching spans are the newest.
        let path = format!(
            "/api/search?q={}&limit=5&{}",
            urlencode("{ kind = server }"),
            window()
        );
        let (status, body) = get(&server, &path).await;
        assert_eq!(status, 200, "{body}");
        let newest: BTreeSet<String> = body["traces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| format!("{:0>32}", t["traceID"].as_str().unwrap()))
            .collect();
        let expected = sql_ids(
            &server,
            "SELECT encode(trace_id, 'hex') AS id FROM spans WHERE kind = 2 \
             GROUP BY trace_id ORDER BY max(start_time_unix_nano) DESC LIMIT 5",
        )
        .await;
        assert_eq!(newest, expected);

        // minDuration / maxDuration bound the trace duration.
        let long = sql_ids(&server, &with_trace("t.t_dur >= 500000000 AND {}.kind = 2")).await;
        assert!(!long.is_empty());
        assert_eq!(
            search_ids(&server, "{ kind = server }", "&minDuration=500ms").await,
            long
        );
        let short = sql_ids(&server, &with_trace("t.t_dur <= 20000000 AND {}.kind = 2")).await;
        assert_eq!(
            search_ids(&server, "{ kind = server }", "&maxDuration=20ms").await,
            short
        );

        // Legacy logfmt tags.
        let path = format!(
            "/api/search?tags={}&limit=10000&{}",
            urlencode("service.name=catalog http.response.status_code=200"),
            window()
        );
        let (status, body) = get(&server, &path).await;
        assert_eq!(status, 200, "{body}");
        let tagged: BTreeSet<String> = body["traces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| format!("{:0>32}", t["traceID"].as_str().unwrap()))
            .collect();
        let status = int("http.response.status_code");
        let expected = sql_ids(
            &server,
            &f(&format!(
                "({{}}.resource_attributes['service.name']['str'] = 'catalog' \
                  OR {{}}.span_attributes['service.name']['str'] = 'catalog') \
                 AND ({status} = 200 \
                  OR {{}}.span_attributes['http.response.status_code']['str'] = '200')"
            )),
        )
        .await;
        assert!(!expected.is_empty());
        assert_eq!(tagged, expected);

        // The reply's shape: root service and name, start, duration, spansets with at most
        // `spss` spans and the matched count.
        let path = format!(
            "/api/search?q={}&limit=3&spss=2&{}",
            urlencode("{ kind = client }"),
            window()
        );
        let (status, body) = get(&server, &path).await;
        assert_eq!(status, 200, "{body}");
        let traces = body["traces"].as_array().unwrap();
        assert_eq!(traces.len(), 3, "{body}");
        for t in traces {
            let id = format!("{:0>32}", t["traceID"].as_str().unwrap());
            let truth = &server
                .sql(&format!(
                    "SELECT min(start_time_unix_nano) AS start, \
                     (max(end_time_unix_nano) - min(start_time_unix_nano)) / 1000000 AS ms, \
                     max(CASE WHEN coalesce(encode(parent_span_id, 'hex'), '') = '' THEN service_name END) AS svc, \
                     max(CASE WHEN coalesce(encode(parent_span_id, 'hex'), '') = '' THEN name END) AS root, \
                     sum(CASE WHEN kind = 3 THEN 1 ELSE 0 END) AS clients \
                     FROM spans WHERE encode(trace_id, 'hex') = '{id}'"
                ))
                .await[0];
            assert_eq!(t["rootServiceName"], truth["svc"], "{t}");
            assert_eq!(t["rootTraceName"], truth["root"], "{t}");
            assert_eq!(t["startTimeUnixNano"], truth["start"].to_string(), "{t}");
            assert_eq!(t["durationMs"], truth["ms"], "{t}");
            let set = &t["spanSets"][0];
            assert_eq!(set["matched"], truth["clients"], "{t}");
            let spans = set["spans"].as_array().unwrap();
            assert_eq!(
                spans.len(),
                truth["clients"].as_u64().unwrap().min(2) as usize
            );
            for span in spans {
                assert_eq!(span["spanID"].as_str().unwrap().len(), 16);
                assert!(span["durationNanos"]
                    .as_str()
                    .unwrap()
                    .parse::<u64>()
                    .is_ok());
            }
        }
        // A window before the data finds nothing.
        let path = format!(
            "/api/search?q={}&start={}&end={}",
            urlencode("{ }"),
            BASE - 7_200,
            BASE - 3_600
        );
        let (status, body) = get(&server, &path).await;
        assert_eq!(status, 200);
        assert_eq!(body["traces"], serde_json::json!([]));

        if phase == "buffered" {
            assert!(server.terminate().success());
            server = TestServer::start(dir.path(), &[]).await;
        }
    }
}

/// Bad queries and parameters get a 400 whose message says what is wrong and where.
#[tokio::test(flavor = "multi_thread")]
async fn bad_searches_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]).await;
    let cases: &[(&str, &str)] = &[
        (
            "q={ span.foo = }",
            r#"line 1, column 14: expected a value after "=", found "}""#,
        ),
        (
            "q={ status = error",
            "line 1, column 17: expected \"&&\", \"||\" or \"}\" to close",
        ),
        ("q={ duration > 5 apples }", "line 1"),
        ("q={ .a = 1 } | count(", "line 1"),
        ("q={ name =~ 5 }", "line 1"),
        (
            "q={ event.name = \"x\" }",
            "event and link fields cannot be searched",
        ),
        (
            "q={ resource.service.name = \"foo\" } | rate() by (span:name)",
            "/api/metrics/query_range",
        ),
        ("q={ }&limit=0", "invalid limit 0"),
        ("q={ }&limit=many", "invalid limit \"many\""),
        ("q={ }&start=20&end=10", "end (10) is before start (20)"),
        ("q={ }&minDuration=fast", "invalid minDuration"),
        (
            "q={ }&minDuration=2s&maxDuration=1s",
            "less than minDuration",
        ),
        ("tags=noequals", "logfmt"),
        ("q={ span:id = \"xyz\" }", "not an id"),
    ];
    for (query, expected) in cases {
        let (path_q, rest) = query.split_once('&').map_or((*query, ""), |(a, b)| (a, b));
        let (key, value) = path_q.split_once('=').unwrap();
        let path = format!("/api/search?{key}={}&{rest}", urlencode(value));
        let (status, body) = get(&server, &path).await;
        assert_eq!(status, 400, "{query}: {body}");
        let message = body["error"].as_str().unwrap_or_default();
        assert!(
            message.contains(expected),
            "{query}: expected {expected:?} in {message:?}"
        );
    }
    // The tenant comes from X-Scope-OrgID: a malformed one is refused, an unknown one is empty.
    let client = reqwest::Client::new();
    let url = server.url("/api/search?q=%7B%20%7D");
    let resp = client
        .get(&url)
        .header("X-Scope-OrgID", "no such/tenant")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("tenant"), "{body}");
    let resp = client
        .get(&url)
        .header("X-Scope-OrgID", "nobody")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["traces"], serde_json::json!([]));
    // The server still answers afterwards.
    let (status, _) = get(&server, "/api/search?q=%7B%20%7D").await;
    assert_eq!(status, 200);
}
