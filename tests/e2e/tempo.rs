//! Tempo trace-by-id v2, tags and tag values against the real binary.
//!
//! Every answer is compared with what was sent, with the v1 endpoint, or with the same question
//! asked in plain SQL over `/api/sql`.

use std::collections::BTreeSet;

use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, TracesData};
use prost::Message;
use serde_json::Value;

use crate::data::{flatten, kv, rich_trace, s, send, trace_id};
use crate::server::{run_loadgen, TestServer};

/// Tempo's `TraceByIDResponse`, written here independently of the server's definition. The
/// `trace` field is decoded as OTLP `TracesData`: Tempo's `Trace` must have the same bytes.
#[derive(Clone, PartialEq, prost::Message)]
struct TraceByIdResponse {
    #[prost(message, optional, tag = "1")]
    trace: Option<TracesData>,
    #[prost(message, optional, tag = "2")]
    metrics: Option<TraceByIdMetrics>,
    #[prost(int32, tag = "3")]
    status: i32,
    #[prost(string, tag = "4")]
    message: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TraceByIdMetrics {}

async fn get(server: &TestServer, path: &str, tenant: &str, accept: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(server.url(path))
        .header("X-Scope-OrgID", tenant)
        .header("Accept", accept)
        .send()
        .await
        .unwrap()
}

/// GET `path` as `tenant`, asserting 200, and parse the JSON body.
async fn json(server: &TestServer, path: &str, tenant: &str) -> Value {
    let resp = get(server, path, tenant, "application/json").await;
    let status = resp.status();
    let body = resp.text().await.unwrap();
    assert_eq!(status, 200, "GET {path} as {tenant}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The status and JSON error body of a request expected to fail.
async fn failure(server: &TestServer, path: &str, tenant: &str) -> (u16, String) {
    let resp = get(server, path, tenant, "application/json").await;
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn v2_proto(server: &TestServer, id: &str, tenant: &str, query: &str) -> TraceByIdResponse {
    let resp = get(
        server,
        &format!("/api/v2/traces/{id}{query}"),
        tenant,
        "application/protobuf",
    )
    .await;
    assert_eq!(resp.status(), 200, "v2 trace {id}");
    assert_eq!(resp.headers()["content-type"], "application/protobuf");
    TraceByIdResponse::decode(resp.bytes().await.unwrap()).unwrap()
}

async fn v1_proto(server: &TestServer, id: &str, tenant: &str) -> TracesData {
    let resp = get(
        server,
        &format!("/api/traces/{id}"),
        tenant,
        "application/protobuf",
    )
    .await;
    assert_eq!(resp.status(), 200, "v1 trace {id}");
    TracesData::decode(resp.bytes().await.unwrap()).unwrap()
}

/// Decodes an OTLP/JSON `ResourceSpans` array with the server's documented codec.
fn decode_json_spans(array: &Value) -> Vec<ResourceSpans> {
    tracelake_proto::json::decode_export_request(
        serde_json::json!({ "resourceSpans": array })
            .to_string()
            .as_bytes(),
    )
    .unwrap()
    .resource_spans
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// One column of SQL rows as a set of strings (nulls skipped, numbers and booleans as text).
async fn sql_set(server: &TestServer, tenant: &str, sql: &str) -> BTreeSet<String> {
    server
        .sql_tenant(sql, tenant)
        .await
        .iter()
        .filter_map(|row| match &row["v"] {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        })
        .collect()
}

fn scope_tags(v2: &Value, name: &str) -> Vec<String> {
    let scope = v2["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no scope {name} in {v2}"));
    strings(&scope["tags"])
}

/// `(type, value)` pairs of a v2 tag values answer.
fn typed(v2: &Value) -> BTreeSet<(String, String)> {
    v2["tagValues"]
        .as_array()
        .unwrap_or_else(|| panic!("no tagValues in {v2}"))
        .iter()
        .map(|tv| {
            (
                tv["type"].as_str().unwrap().to_string(),
                tv["value"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn of_type(t: &str, values: &BTreeSet<String>) -> BTreeSet<(String, String)> {
    values.iter().map(|v| (t.to_string(), v.clone())).collect()
}

#[tokio::test]
async fn trace_by_id_v2_matches_v1_and_what_was_sent() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(dir.path(), &[]).await;
    let tid = trace_id(1);
    let sent = rich_trace(&tid, "tempo-v2-svc", 4);
    send(&server, "default", vec![sent.clone()]).await;
    run_loadgen(&[
        "--traces",
        "30",
        "--rate",
        "0",
        "--seed",
        "21",
        "--endpoint",
        &server.grpc_url(),
    ]);
    let id = hex::encode(&tid);

    for phase in ["buffered", "flushed"] {
        // Protobuf: TraceByIDResponse whose trace has exactly the sent spans.
        let v2 = v2_proto(&server, &id, "default", "").await;
        assert_eq!(v2.status, 0, "{phase}: COMPLETE");
        assert!(v2.message.is_empty());
        let trace = v2.trace.expect("trace field set");
        assert_eq!(
            flatten(&trace.resource_spans),
            flatten(std::slice::from_ref(&sent)),
            "{phase}: v2 protobuf differs from what was sent"
        );
        // The protobuf trace is the v1 body, byte for byte.
        let v1 = v1_proto(&server, &id, "default").await;
        assert_eq!(trace.encode_to_vec(), v1.encode_to_vec(), "{phase}");

        // JSON: {"trace": {"resourceSpans": [...]}}, the same spans as v1's "batches".
        let body = json(&server, &format!("/api/v2/traces/{id}"), "default").await;
        assert!(body.get("status").is_none(), "COMPLETE is omitted: {body}");
        assert!(body.get("batches").is_none());
        let from_json = decode_json_spans(&body["trace"]["resourceSpans"]);
        assert_eq!(
            flatten(&from_json),
            flatten(std::slice::from_ref(&sent)),
            "{phase}: v2 JSON differs from what was sent"
        );
        let v1_json = json(&server, &format!("/api/traces/{id}"), "default").await;
        assert_eq!(body["trace"]["resourceSpans"], v1_json["batches"]);

        // A sample of the loadgen traces: v2 = v1, span counts = SQL.
        let rows = server
            .sql(
                "SELECT encode(trace_id, 'hex') AS id, count(*) AS n FROM spans \
                 WHERE service_name <> 'tempo-v2-svc' GROUP BY trace_id ORDER BY id LIMIT 5",
            )
            .await;
        assert_eq!(rows.len(), 5, "{rows:?}");
        for row in rows {
            let id = row["id"].as_str().unwrap();
            let v2 = v2_proto(&server, id, "default", "").await;
            let spans = v2.trace.unwrap();
            let v1 = v1_proto(&server, id, "default").await;
            assert_eq!(flatten(&spans.resource_spans), flatten(&v1.resource_spans));
            assert_eq!(
                flatten(&spans.resource_spans).len() as u64,
                row["n"].as_u64().unwrap(),
                "trace {id}"
            );
        }

        // start/end (unix seconds) narrow the partitions read.
        let now = crate::data::now_nanos() / 1_000_000_000;
        let window = format!("?start={}&end={}", now - 3600, now + 60);
        let windowed = v2_proto(&server, &id, "default", &window).await;
        assert_eq!(
            flatten(&windowed.trace.unwrap().resource_spans),
            flatten(std::slice::from_ref(&sent))
        );
        let (status, _) = failure(
            &server,
            &format!("/api/v2/traces/{id}?start=1000000000&end=1000003600"),
            "default",
        )
        .await;
        assert_eq!(status, 404, "{phase}: a window without the trace");

        if phase == "buffered" {
            // Restart: the spans are flushed to Parquet and read from the Delta table.
            assert!(server.terminate().success());
            server = TestServer::start(dir.path(), &[]).await;
        }
    }

    // Absent, malformed, and in another tenant.
    let absent = hex::encode(trace_id(999));
    let (status, body) = failure(&server, &format!("/api/v2/traces/{absent}"), "default").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("not found"), "{body}");
    for bad in ["xyz", &"a".repeat(33), "12-34"] {
        let (status, body) = failure(&server, &format!("/api/v2/traces/{bad}"), "default").await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("error"), "{body}");
    }
    let (status, body) = failure(
        &server,
        &format!("/api/v2/traces/{id}?start=2000&end=1000"),
        "default",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = failure(&server, &format!("/api/v2/traces/{id}"), "acme").await;
    assert_eq!(
        status, 404,
        "tenant acme does not see the default tenant's trace"
    );
    let acme_tid = trace_id(7);
    let acme_sent = rich_trace(&acme_tid, "acme-svc", 2);
    send(&server, "acme", vec![acme_sent.clone()]).await;
    let acme_id = hex::encode(&acme_tid);
    let got = v2_proto(&server, &acme_id, "acme", "").await;
    assert_eq!(
        flatten(&got.trace.unwrap().resource_spans),
        flatten(std::slice::from_ref(&acme_sent))
    );
    let (status, _) = failure(&server, &format!("/api/v2/traces/{acme_id}"), "default").await;
    assert_eq!(status, 404);
}

/// Asks every tag question of `tenant` and compares the answers with SQL over the same data.
async fn check_tags_against_sql(server: &TestServer, tenant: &str) {
    let span_keys = sql_set(
        server,
        tenant,
        "SELECT DISTINCT unnest(map_keys(span_attributes)) AS v FROM spans",
    )
    .await;
    let resource_keys = sql_set(
        server,
        tenant,
        "SELECT DISTINCT unnest(map_keys(resource_attributes)) AS v FROM spans",
    )
    .await;
    assert!(resource_keys.contains("service.name"), "{resource_keys:?}");

    // v1: span and resource keys together, each once.
    let v1 = json(server, "/api/search/tags", tenant).await;
    let names = strings(&v1["tagNames"]);
    let expected: BTreeSet<String> = span_keys.union(&resource_keys).cloned().collect();
    assert_eq!(names.iter().cloned().collect::<BTreeSet<_>>(), expected);
    assert_eq!(names.len(), expected.len(), "each key once: {names:?}");

    // v2: per scope.
    let v2 = json(server, "/api/v2/search/tags", tenant).await;
    let scope_names: Vec<_> = v2["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(scope_names, ["resource", "span", "intrinsic"]);
    assert_eq!(
        scope_tags(&v2, "span").into_iter().collect::<BTreeSet<_>>(),
        span_keys
    );
    assert_eq!(
        scope_tags(&v2, "resource")
            .into_iter()
            .collect::<BTreeSet<_>>(),
        resource_keys
    );
    let intrinsics = scope_tags(&v2, "intrinsic");
    for i in [
        "duration",
        "kind",
        "name",
        "status",
        "statusMessage",
        "rootName",
        "rootServiceName",
        "traceDuration",
        "span:id",
        "trace:id",
    ] {
        assert!(intrinsics.contains(&i.to_string()), "{i} in {intrinsics:?}");
    }
    let only_span = json(server, "/api/v2/search/tags?scope=span", tenant).await;
    assert_eq!(only_span["scopes"].as_array().unwrap().len(), 1);
    assert_eq!(
        scope_tags(&only_span, "span")
            .into_iter()
            .collect::<BTreeSet<_>>(),
        span_keys
    );
    let v1_resource = json(server, "/api/search/tags?scope=resource", tenant).await;
    assert_eq!(
        strings(&v1_resource["tagNames"])
            .into_iter()
            .collect::<BTreeSet<_>>(),
        resource_keys
    );

    // v2 values, typed, against SQL.
    let services = sql_set(
        server,
        tenant,
        "SELECT DISTINCT resource_attributes['service.name']['str'] AS v FROM spans",
    )
    .await;
    let expected = of_type("string", &services);
    for tag in [
        "resource.service.name",
        "resource%252Eservice%252Ename", // Grafana's double encoding
        "resource%2Eservice%2Ename",
        ".service.name",
    ] {
        let got = json(server, &format!("/api/v2/search/tag/{tag}/values"), tenant).await;
        assert_eq!(typed(&got), expected, "{tag}");
    }
    // v1 values of the same key: plain strings.
    let v1_values = json(server, "/api/search/tag/service.name/values", tenant).await;
    assert_eq!(
        strings(&v1_values["tagValues"])
            .into_iter()
            .collect::<BTreeSet<_>>(),
        services
    );
    let names = sql_set(server, tenant, "SELECT DISTINCT name AS v FROM spans").await;
    let got = json(server, "/api/v2/search/tag/name/values", tenant).await;
    assert_eq!(typed(&got), of_type("string", &names));
    let roots = sql_set(
        server,
        tenant,
        "SELECT DISTINCT service_name AS v FROM spans WHERE parent_span_id IS NULL",
    )
    .await;
    let got = json(server, "/api/v2/search/tag/rootServiceName/values", tenant).await;
    assert_eq!(typed(&got), of_type("string", &roots));
    let got = json(
        server,
        "/api/v2/search/tag/trace:rootService/values",
        tenant,
    )
    .await;
    assert_eq!(typed(&got), of_type("string", &roots));
}

#[tokio::test]
async fn tags_and_values_match_sql_and_what_was_sent() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(dir.path(), &[]).await;
    let tid = trace_id(1);
    let mut sent = rich_trace(&tid, "tags-svc", 4);
    // A key whose name needs encoding, and one on the resource only.
    sent.scope_spans[0].spans[0]
        .attributes
        .push(kv("odd key/with%chars", s("odd value")));
    sent.resource
        .as_mut()
        .unwrap()
        .attributes
        .push(kv("e2e.arch", s("riscv")));
    send(&server, "default", vec![sent]).await;
    run_loadgen(&[
        "--traces",
        "40",
        "--rate",
        "0",
        "--seed",
        "5",
        "--endpoint",
        &server.grpc_url(),
    ]);
    // Tenant acme: its own service and an attribute nobody else has.
    let acme_tid = trace_id(2);
    let mut acme = rich_trace(&acme_tid, "acme-only-svc", 2);
    acme.scope_spans[0].spans[1]
        .attributes
        .push(kv("acme.secret", V::IntValue(42)));
    send(&server, "acme", vec![acme]).await;

    for phase in ["buffered", "flushed"] {
        check_tags_against_sql(&server, "default").await;
        check_tags_against_sql(&server, "acme").await;

        // Typed values of the attributes rich_trace sends.
        let values = |tag: &'static str| {
            let server = &server;
            async move {
                typed(
                    &json(
                        server,
                        &format!("/api/v2/search/tag/{tag}/values"),
                        "default",
                    )
                    .await,
                )
            }
        };
        let pairs = |t: &str, vs: &[&str]| -> BTreeSet<(String, String)> {
            vs.iter().map(|v| (t.to_string(), v.to_string())).collect()
        };
        let codes = sql_set(
            &server,
            "default",
            "SELECT DISTINCT span_attributes['http.response.status_code']['int'] AS v FROM spans \
             WHERE span_attributes['http.response.status_code']['type'] = 3",
        )
        .await;
        assert!(codes.contains("203"), "{codes:?}");
        assert_eq!(
            values("span.http.response.status_code").await,
            of_type("int", &codes)
        );
        assert_eq!(values("span.ratio").await, pairs("float", &["0.25"]));
        assert_eq!(
            values("span.cached").await,
            pairs("bool", &["false", "true"])
        );
        assert_eq!(values(".cached").await, pairs("bool", &["false", "true"]));
        assert!(values("span.blob").await.is_empty(), "bytes are not listed");
        assert!(
            values("span.tags").await.is_empty(),
            "arrays are not listed"
        );
        assert_eq!(
            values("resource.e2e.arch").await,
            pairs("string", &["riscv"])
        );
        assert!(values("span.e2e.arch").await.is_empty(), "resource only");
        assert_eq!(values("e2e.arch").await, pairs("string", &["riscv"]));
        assert_eq!(
            values("span.%22odd%20key%2Fwith%25chars%22").await,
            pairs("string", &["odd value"])
        );
        assert_eq!(
            values("span.odd%2520key%252Fwith%2525chars").await,
            pairs("string", &["odd value"]),
            "double-encoded"
        );
        assert_eq!(
            values("status").await,
            pairs("keyword", &["error", "ok", "unset"])
        );
        assert_eq!(values("span:status").await.len(), 3);
        assert_eq!(values("kind").await.len(), 6);
        assert!(values("kind")
            .await
            .contains(&("keyword".into(), "server".into())));
        assert!(values("duration").await.is_empty());
        assert!(values("statusMessage")
            .await
            .contains(&("string".into(), "bad thing".into())));
        assert!(values("event:name")
            .await
            .contains(&("string".into(), "exception".into())));
        assert!(values("instrumentation:name")
            .await
            .contains(&("string".into(), "e2e-scope".into())));

        // Event, link and instrumentation scopes when asked for by name.
        for (scope, key) in [
            ("event", "exception.message"),
            ("link", "link.kind"),
            ("instrumentation", "scope.attr"),
        ] {
            let got = json(
                &server,
                &format!("/api/v2/search/tags?scope={scope}"),
                "default",
            )
            .await;
            assert!(scope_tags(&got, scope).contains(&key.to_string()), "{got}");
        }
        assert_eq!(
            values("event.exception.message").await,
            pairs("string", &["boom"])
        );
        assert_eq!(
            values("link.link.kind").await,
            pairs("string", &["follows"])
        );
        assert_eq!(
            values("instrumentation.scope.attr").await,
            pairs("int", &["42"])
        );

        // v1 values are strings, whatever the type.
        let v1 = json(
            &server,
            "/api/search/tag/http.response.status_code/values",
            "default",
        )
        .await;
        assert_eq!(
            strings(&v1["tagValues"])
                .into_iter()
                .collect::<BTreeSet<_>>(),
            codes
        );

        // Tenant isolation.
        let default_tags = strings(&json(&server, "/api/search/tags", "default").await["tagNames"]);
        assert!(!default_tags.contains(&"acme.secret".to_string()));
        let acme_tags = strings(&json(&server, "/api/search/tags", "acme").await["tagNames"]);
        assert!(acme_tags.contains(&"acme.secret".to_string()));
        let acme_services = typed(
            &json(
                &server,
                "/api/v2/search/tag/resource.service.name/values",
                "acme",
            )
            .await,
        );
        assert_eq!(acme_services, pairs("string", &["acme-only-svc"]));
        assert!(values("span.acme.secret").await.is_empty());

        // q narrows values (and names) to the spans it matches, as SQL does.
        let cart_routes = sql_set(
            &server,
            "default",
            "SELECT DISTINCT span_attributes['http.route']['str'] AS v FROM spans \
             WHERE service_name = 'cart' AND span_attributes['http.route']['type'] = 1",
        )
        .await;
        assert!(!cart_routes.is_empty(), "loadgen sends cart routes");
        let cart_q = "%7B%20resource.service.name%20%3D%20%22cart%22%20%7D";
        let got = json(
            &server,
            &format!("/api/v2/search/tag/span.http.route/values?q={cart_q}"),
            "default",
        )
        .await;
        assert_eq!(typed(&got), of_type("string", &cart_routes));
        let all_routes = values("span.http.route").await;
        assert!(
            all_routes.len() > cart_routes.len(),
            "the filter must narrow: {all_routes:?}"
        );
        let got = json(
            &server,
            &format!("/api/search/tag/http.route/values?q={cart_q}"),
            "default",
        )
        .await;
        assert_eq!(
            strings(&got["tagValues"])
                .into_iter()
                .collect::<BTreeSet<_>>(),
            cart_routes
        );
        let got = json(
            &server,
            &format!("/api/v2/search/tag/resource.service.name/values?q={cart_q}"),
            "default",
        )
        .await;
        assert_eq!(typed(&got), pairs("string", &["cart"]));
        let cart_keys = sql_set(
            &server,
            "default",
            "SELECT DISTINCT unnest(map_keys(span_attributes)) AS v FROM spans \
             WHERE service_name = 'cart'",
        )
        .await;
        let got = json(
            &server,
            &format!("/api/v2/search/tags?scope=span&q={cart_q}"),
            "default",
        )
        .await;
        assert_eq!(
            scope_tags(&got, "span")
                .into_iter()
                .collect::<BTreeSet<_>>(),
            cart_keys
        );

        // An incomplete, unparseable or multi-span q gives the unfiltered list.
        let unfiltered = values("resource.service.name").await;
        for q in [
            "%7B%20resource.cluster%20%3D%20%7D",
            "%7B",
            "garbage",
            "%7B%20%7D",
            "%7B%20.a%20%3D%201%20%7D%20%3E%3E%20%7B%20.b%20%3D%202%20%7D",
        ] {
            let got = json(
                &server,
                &format!("/api/v2/search/tag/resource.service.name/values?q={q}"),
                "default",
            )
            .await;
            assert_eq!(typed(&got), unfiltered, "q={q}");
            json(&server, &format!("/api/v2/search/tags?q={q}"), "default").await;
        }

        // limit caps the answer.
        let got = json(&server, "/api/v2/search/tag/name/values?limit=2", "default").await;
        assert_eq!(typed(&got).len(), 2);
        let got = json(&server, "/api/search/tags?limit=3", "default").await;
        assert_eq!(strings(&got["tagNames"]).len(), 3, "{got}");

        // A window without spans: no attribute names, still the intrinsics.
        let old = "start=1000000000&end=1000003600";
        let got = json(&server, &format!("/api/v2/search/tags?{old}"), "default").await;
        assert!(scope_tags(&got, "span").is_empty(), "{got}");
        assert!(scope_tags(&got, "resource").is_empty(), "{got}");
        assert!(!scope_tags(&got, "intrinsic").is_empty());
        let got = json(
            &server,
            &format!("/api/v2/search/tag/resource.service.name/values?{old}"),
            "default",
        )
        .await;
        assert!(typed(&got).is_empty(), "{got}");
        let now = crate::data::now_nanos() / 1_000_000_000;
        let got = json(
            &server,
            &format!(
                "/api/search/tag/service.name/values?start={}&end={}",
                now - 3600,
                now + 60
            ),
            "default",
        )
        .await;
        assert!(strings(&got["tagValues"]).contains(&"tags-svc".to_string()));

        // Bad input.
        for (path, what) in [
            ("/api/v2/search/tags?scope=spans", "invalid scope"),
            ("/api/search/tags?scope=bogus", "invalid scope"),
            ("/api/v2/search/tag/span:nope/values", "unknown intrinsic"),
            ("/api/v2/search/tag/span./values", "names no attribute"),
            ("/api/v2/search/tag/%2520/values", "empty"),
            ("/api/v2/search/tags?start=20&end=10", "before start"),
        ] {
            let (status, body) = failure(&server, path, "default").await;
            assert_eq!(status, 400, "{path}: {body}");
            assert!(body.contains(what), "{path}: {body}");
        }

        if phase == "buffered" {
            assert!(server.terminate().success());
            server = TestServer::start(dir.path(), &[]).await;
        }
    }
}

#[tokio::test]
async fn build_info_has_tempos_shape() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[]).await;
    let info = json(&server, "/api/status/buildinfo", "default").await;
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    for key in ["revision", "branch", "buildUser", "buildDate", "goVersion"] {
        assert!(info[key].is_string(), "{key} in {info}");
    }
}
