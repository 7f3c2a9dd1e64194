//! The Jaeger query API (v1 and api_v3) against the real binary.
//!
//! A loadgen workload plus hand-built traces are ingested; every answer is compared with what
//! was sent or with the same question asked in plain SQL over `/api/sql`.

use std::collections::{BTreeMap, BTreeSet};

use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use serde_json::{json, Value};

use crate::data::{kv, now_nanos, rich_trace, s, send, span_id, trace_id};
use crate::server::{run_loadgen, TestServer};

/// GET a Jaeger path as `tenant`: status and JSON body.
async fn get(server: &TestServer, path: &str, tenant: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .get(server.jaeger_url(path))
        .header("X-Scope-OrgID", tenant)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    let json = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("GET {path}: {status} body is not JSON ({e}): {body}"));
    (status, json)
}

/// GET a Jaeger path as the default tenant, asserting 200.
async fn ok(server: &TestServer, path: &str) -> Value {
    let (status, body) = get(server, path, "default").await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// A v1 answer's `data`, checking the envelope.
async fn data(server: &TestServer, path: &str) -> Value {
    let body = ok(server, path).await;
    for key in ["data", "total", "limit", "offset", "errors"] {
        assert!(body.get(key).is_some(), "GET {path}: no {key} in {body}");
    }
    body["data"].clone()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// 32 hex digits (Jaeger drops a zero high half).
fn full_id(id: &str) -> String {
    format!("{id:0>32}")
}

fn trace_ids(traces: &Value) -> BTreeSet<String> {
    traces
        .as_array()
        .unwrap()
        .iter()
        .map(|t| full_id(t["traceID"].as_str().unwrap()))
        .collect()
}

/// Trace ids of an api_v3 `{"result": {"resourceSpans": [...]}}` body.
fn otlp_trace_ids(body: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for rs in body["result"]["resourceSpans"].as_array().unwrap() {
        for ss in rs["scopeSpans"].as_array().unwrap() {
            for span in ss["spans"].as_array().unwrap() {
                out.insert(span["traceId"].as_str().unwrap().to_string());
            }
        }
    }
    out
}

async fn sql_ids(server: &TestServer, where_clause: &str) -> BTreeSet<String> {
    server
        .sql(&format!(
            "SELECT DISTINCT encode(trace_id, 'hex') AS id FROM spans WHERE {where_clause}"
        ))
        .await
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn tag<'a>(tags: &'a Value, key: &str) -> Option<&'a Value> {
    tags.as_array().unwrap().iter().find(|t| t["key"] == key)
}

/// Three spans over two services: front (server) -> front (client) -> back (server).
fn two_service_trace(trace: &[u8]) -> Vec<ResourceSpans> {
    let start = now_nanos() - 5_000_000_000;
    let span = |n: u64, parent: Option<u64>, name: &str, kind: i32| Span {
        trace_id: trace.to_vec(),
        span_id: span_id(trace, n),
        parent_span_id: parent.map(|p| span_id(trace, p)).unwrap_or_default(),
        name: name.into(),
        kind,
        start_time_unix_nano: start + n * 1_000_000,
        end_time_unix_nano: start + 100_000_000 - n * 1_000_000,
        status: Some(Status::default()),
        ..Default::default()
    };
    let resource = |service: &str, spans: Vec<Span>| ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv("service.name", s(service))],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    };
    vec![
        resource(
            "jaeger-front",
            vec![span(0, None, "GET /", 2), span(1, Some(0), "call back", 3)],
        ),
        resource("jaeger-back", vec![span(2, Some(1), "handle", 2)]),
    ]
}

/// A loadgen workload plus hand-built traces; every endpoint compared with SQL or the input.
#[tokio::test]
async fn jaeger_api_matches_sql_and_what_was_sent() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--flush-interval", "500ms"]).await;
    let summary = run_loadgen(&[
        "--traces",
        "120",
        "--rate",
        "0",
        "--seed",
        "17",
        "--endpoint",
        &server.grpc_url(),
    ]);
    let rich_id = trace_id(1);
    send(
        &server,
        "default",
        vec![rich_trace(&rich_id, "jaeger-rich", 3)],
    )
    .await;
    let dep_ids: Vec<_> = (10..13).map(trace_id).collect();
    for id in &dep_ids {
        send(&server, "default", two_service_trace(id)).await;
    }
    send(
        &server,
        "acme",
        vec![rich_trace(&trace_id(2), "acme-only", 2)],
    )
    .await;
    let expected = summary["spans_acked"].as_u64().unwrap() + 3 + 3 * 3;
    server
        .eventually(
            std::time::Duration::from_secs(30),
            "every span queryable",
            || async { server.count("").await == expected },
        )
        .await;
    let service = server
        .sql("SELECT service_name AS s FROM spans WHERE service_name NOT LIKE 'jaeger-%' GROUP BY service_name ORDER BY count(DISTINCT trace_id) DESC, s LIMIT 1")
        .await[0]["s"]
        .as_str()
        .unwrap()
        .to_string();

    services_and_operations(&server).await;
    traces_by_id(&server).await;
    rich_trace_mapping(&server, &hex::encode(&rich_id)).await;
    searches(&server, &service).await;
    v3(&server, &service, &hex::encode(&rich_id)).await;
    dependencies(&server).await;
    errors(&server).await;
    tenants(&server).await;
}

async fn services_and_operations(server: &TestServer) {
    let expected: Vec<String> = server
        .sql("SELECT DISTINCT service_name AS s FROM spans WHERE service_name IS NOT NULL ORDER BY s")
        .await
        .iter()
        .map(|r| r["s"].as_str().unwrap().to_string())
        .collect();
    assert!(expected.len() >= 8, "{expected:?}");
    let body = ok(server, "/api/services").await;
    assert_eq!(strings(&body["data"]), expected);
    assert_eq!(body["total"], expected.len());
    assert_eq!(body["errors"], Value::Null);
    assert_eq!(
        strings(&ok(server, "/api/v3/services").await["services"]),
        expected
    );

    let kind_names = ["", "internal", "server", "client", "producer", "consumer"];
    for service in expected.iter().take(5) {
        let rows = server
            .sql(&format!(
                "SELECT DISTINCT name, kind FROM spans WHERE service_name = '{service}' ORDER BY name, kind"
            ))
            .await;
        let names: BTreeSet<String> = rows
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect();
        let got = strings(
            &data(
                server,
                &format!("/api/services/{}/operations", enc(service)),
            )
            .await,
        );
        assert_eq!(
            got.iter().cloned().collect::<BTreeSet<_>>(),
            names,
            "{service}"
        );
        assert_eq!(got.len(), names.len(), "duplicate operation names: {got:?}");

        let pairs: BTreeSet<(String, String)> = rows
            .iter()
            .map(|r| {
                let kind = r["kind"].as_u64().unwrap() as usize;
                (
                    r["name"].as_str().unwrap().to_string(),
                    kind_names[kind].to_string(),
                )
            })
            .collect();
        let pairs_of = |v: &Value| -> BTreeSet<(String, String)> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|o| {
                    (
                        o["name"].as_str().unwrap().to_string(),
                        o["spanKind"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        };
        let got = data(server, &format!("/api/operations?service={}", enc(service))).await;
        assert_eq!(pairs_of(&got), pairs, "{service}");
        let servers: BTreeSet<_> = pairs
            .iter()
            .filter(|(_, k)| k == "server")
            .cloned()
            .collect();
        let got = data(
            server,
            &format!("/api/operations?service={}&spanKind=server", enc(service)),
        )
        .await;
        assert_eq!(pairs_of(&got), servers, "{service}");
        let v3 = ok(
            server,
            &format!("/api/v3/operations?service={}", enc(service)),
        )
        .await;
        let v3_pairs: BTreeSet<_> = pairs
            .iter()
            .map(|(n, k)| {
                (
                    n.clone(),
                    if k.is_empty() {
                        "internal".into()
                    } else {
                        k.clone()
                    },
                )
            })
            .collect();
        assert_eq!(pairs_of(&v3["operations"]), v3_pairs, "{service}");
    }
}

/// A sample of loadgen traces by id: spans, parents, processes and tags equal the stored rows.
async fn traces_by_id(server: &TestServer) {
    let sample = server
        .sql("SELECT encode(trace_id, 'hex') AS id FROM spans GROUP BY trace_id ORDER BY count(*) DESC, id LIMIT 6")
        .await;
    for row in sample {
        let id = row["id"].as_str().unwrap();
        let traces = data(server, &format!("/api/traces/{id}")).await;
        assert_eq!(traces.as_array().unwrap().len(), 1);
        let trace = &traces[0];
        assert_eq!(full_id(trace["traceID"].as_str().unwrap()), id);
        let rows = server
            .sql(&format!(
                "SELECT encode(span_id, 'hex') AS span, encode(parent_span_id, 'hex') AS parent, name, \
                 service_name, start_time_unix_nano AS st, duration_nano AS d, kind, status_code, \
                 http_route, resource_attributes['host.name']['str'] AS host \
                 FROM spans WHERE trace_id = decode('{id}', 'hex')"
            ))
            .await;
        let spans = trace["spans"].as_array().unwrap();
        assert_eq!(spans.len(), rows.len(), "trace {id}");
        let by_id: BTreeMap<&str, &Value> = spans
            .iter()
            .map(|s| (s["spanID"].as_str().unwrap(), s))
            .collect();
        assert_eq!(by_id.len(), rows.len(), "span ids are unique");
        let processes = trace["processes"].as_object().unwrap();
        for row in &rows {
            let span = by_id[row["span"].as_str().unwrap()];
            assert_eq!(span["traceID"], trace["traceID"]);
            assert_eq!(span["operationName"], row["name"]);
            assert_eq!(
                span["startTime"].as_i64().unwrap(),
                row["st"].as_i64().unwrap() / 1000
            );
            assert_eq!(
                span["duration"].as_i64().unwrap(),
                row["d"].as_i64().unwrap() / 1000
            );
            let refs = span["references"].as_array().unwrap();
            match row["parent"].as_str().filter(|p| !p.is_empty()) {
                Some(parent) => {
                    assert_eq!(refs[0]["refType"], "CHILD_OF");
                    assert_eq!(refs[0]["spanID"], parent);
                    assert_eq!(full_id(refs[0]["traceID"].as_str().unwrap()), id);
                }
                None => assert!(refs.iter().all(|r| r["refType"] != "CHILD_OF")),
            }
            let process = &processes[span["processID"].as_str().unwrap()];
            assert_eq!(process["serviceName"], row["service_name"]);
            let ptags = &process["tags"];
            assert_eq!(
                tag(ptags, "host.name").map(|t| &t["value"]),
                Some(&row["host"])
            );
            assert!(tag(ptags, "service.name").is_none());
            let tags = &span["tags"];
            if let Some(route) = row["http_route"].as_str() {
                assert_eq!(tag(tags, "http.route").unwrap()["value"], route);
            }
            let kind = row["kind"].as_u64().unwrap() as usize;
            let kinds = [
                None,
                Some("internal"),
                Some("server"),
                Some("client"),
                Some("producer"),
                Some("consumer"),
            ];
            assert_eq!(
                tag(tags, "span.kind").and_then(|t| t["value"].as_str()),
                kinds[kind]
            );
            let error = row["status_code"] == 2;
            assert_eq!(
                tag(tags, "error").map(|t| t["value"].clone()),
                error.then_some(json!(true))
            );
            if error {
                assert_eq!(tag(tags, "otel.status_code").unwrap()["value"], "ERROR");
            }
        }
    }
}

/// The hand-built trace: every part of the OTLP -> Jaeger mapping, against what was sent.
async fn rich_trace_mapping(server: &TestServer, id: &str) {
    let traces = data(server, &format!("/api/traces/{id}")).await;
    let trace = &traces[0];
    let processes = trace["processes"].as_object().unwrap();
    assert_eq!(processes.len(), 1, "one resource, one process");
    let process = &processes["p1"];
    assert_eq!(process["serviceName"], "jaeger-rich");
    assert_eq!(
        process["tags"],
        json!([
            {"key": "deployment.environment.name", "type": "string", "value": "test"},
            {"key": "k8s.pod.name", "type": "string", "value": "pod-1"},
        ])
    );
    let spans = trace["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 3);
    let root_id = hex::encode(span_id(&hex::decode(id).unwrap(), 0));
    let link_trace = full_id(&hex::encode(trace_id(999))[..]);
    for (i, span) in spans.iter().enumerate() {
        assert_eq!(span["operationName"], format!("GET /api/items/{i}"));
        assert_eq!(span["processID"], "p1");
        let refs = span["references"].as_array().unwrap();
        let follows = refs.last().unwrap();
        assert_eq!(follows["refType"], "FOLLOWS_FROM");
        assert_eq!(follows["spanID"], "0909090909090909");
        // The link's trace id was made at another instant: only its counter part is known.
        assert_eq!(
            &full_id(follows["traceID"].as_str().unwrap())[16..],
            &link_trace[16..]
        );
        if i == 0 {
            assert_eq!(refs.len(), 1);
        } else {
            assert_eq!(
                refs[0],
                json!({"refType": "CHILD_OF", "traceID": trace["traceID"], "spanID": root_id})
            );
        }
        let tags = &span["tags"];
        let expect = |key: &str, ty: &str, value: Value| {
            assert_eq!(
                tag(tags, key),
                Some(&json!({"key": key, "type": ty, "value": value})),
                "span {i} tag {key}: {tags}"
            );
        };
        expect("http.request.method", "string", json!("GET"));
        expect("http.response.status_code", "int64", json!(200 + i));
        expect("ratio", "float64", json!(0.25));
        expect("cached", "bool", json!(i % 2 == 0));
        expect("blob", "binary", json!("AAEC/w=="));
        expect("tags", "string", json!("[\"a\",7]"));
        expect("nested", "string", json!("{\"inner\":1.5}"));
        expect(
            "span.kind",
            "string",
            json!(if i == 0 { "server" } else { "client" }),
        );
        expect("otel.scope.name", "string", json!("e2e-scope"));
        expect("otel.scope.version", "string", json!("1.2.3"));
        if i == 1 {
            expect("otel.status_code", "string", json!("ERROR"));
            expect("error", "bool", json!(true));
            expect("otel.status_description", "string", json!("bad thing"));
        } else {
            expect("otel.status_code", "string", json!("OK"));
            assert!(tag(tags, "error").is_none());
            assert!(tag(tags, "otel.status_description").is_none());
        }
        let logs = span["logs"].as_array().unwrap();
        assert_eq!(logs.len(), 1);
        assert_eq!(
            logs[0]["fields"],
            json!([
                {"key": "event", "type": "string", "value": "exception"},
                {"key": "exception.message", "type": "string", "value": "boom"},
            ])
        );
        assert_eq!(
            logs[0]["timestamp"].as_i64().unwrap(),
            span["startTime"].as_i64().unwrap() + 1
        );
        assert_eq!(span["duration"], 250_000);
    }
    // Leading zeros may be trimmed; upper-case hex is accepted.
    let upper = data(server, &format!("/api/traces/{}", id.to_uppercase())).await;
    assert_eq!(upper[0]["traceID"], trace["traceID"]);
}

/// Searches: each answer's trace ids equal an equivalent SQL query's.
async fn searches(server: &TestServer, service: &str) {
    let service = service.to_string();
    let svc = format!("service_name = '{service}'");
    let bounds = server
        .sql(&format!("SELECT min(start_time_unix_nano) AS lo, max(start_time_unix_nano) AS hi FROM spans WHERE {svc}"))
        .await;
    let lo_us = bounds[0]["lo"].as_i64().unwrap() / 1000;
    let hi_us = bounds[0]["hi"].as_i64().unwrap() / 1000;
    let window = format!("&start={}&end={}", lo_us - 1_000_000, hi_us + 1_000_000);
    let search = |query: String| {
        let window = window.clone();
        let service = service.clone();
        async move {
            let path = format!(
                "/api/traces?service={}{window}&limit=1000{query}",
                enc(&service)
            );
            trace_ids(&data(server, &path).await)
        }
    };

    let all = search(String::new()).await;
    assert!(all.len() >= 10, "{all:?}");
    assert_eq!(all, sql_ids(server, &svc).await);
    // Without start/end the default window (the last two days) holds everything.
    let path = format!("/api/traces?service={}&limit=1000", enc(&service));
    assert_eq!(trace_ids(&data(server, &path).await), all);

    let op = server
        .sql(&format!("SELECT name FROM spans WHERE {svc} GROUP BY name ORDER BY count(DISTINCT trace_id) DESC, name LIMIT 1"))
        .await[0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let got = search(format!("&operation={}", enc(&op))).await;
    assert!(!got.is_empty());
    assert_eq!(
        got,
        sql_ids(server, &format!("{svc} AND name = '{op}'")).await
    );

    // Tags: a dedicated column, the pseudo tags and a plain resource attribute.
    if let Some(route) = server
        .sql(&format!("SELECT http_route AS r FROM spans WHERE {svc} AND http_route IS NOT NULL GROUP BY http_route ORDER BY count(*) DESC, r LIMIT 1"))
        .await
        .first()
        .and_then(|r| r["r"].as_str().map(str::to_string))
    {
        let got = search(format!("&tag={}", enc(&format!("http.route:{route}")))).await;
        assert!(!got.is_empty());
        assert_eq!(got, sql_ids(server, &format!("{svc} AND http_route = '{route}'")).await);
    }
    let cases = [
        (r#"{"error":"true"}"#, "status_code = 2"),
        (r#"{"otel.status_code":"ERROR"}"#, "status_code = 2"),
        (r#"{"span.kind":"client"}"#, "kind = 3"),
        (
            r#"{"span.kind":"server","http.request.method":"GET"}"#,
            "kind = 2 AND span_attributes['http.request.method']['str'] = 'GET'",
        ),
        (
            r#"{"cloud.region":"eu-west-1"}"#,
            "resource_attributes['cloud.region']['str'] = 'eu-west-1'",
        ),
        (
            r#"{"server.port":"5432"}"#,
            "span_attributes['server.port']['int'] = 5432",
        ),
    ];
    let mut matched = 0;
    for (tags, sql) in cases {
        let got = search(format!("&tags={}", enc(tags))).await;
        assert_eq!(
            got,
            sql_ids(server, &format!("{svc} AND {sql}")).await,
            "tags {tags}"
        );
        matched += usize::from(!got.is_empty() && got.len() < all.len());
    }
    assert!(
        matched >= 3,
        "too few tag searches narrowed the result: {matched}"
    );
    let errors = sql_ids(server, &format!("{svc} AND status_code = 2")).await;
    let got = search(format!("&tag={}", enc("error:true"))).await;
    assert_eq!(got, errors, "tag=error:true");

    // Durations: Go syntax, bounds inclusive.
    let median = server
        .sql(&format!(
            "SELECT approx_median(duration_nano) AS m FROM spans WHERE {svc}"
        ))
        .await[0]["m"]
        .as_f64()
        .unwrap() as i64;
    let min_us = median / 1000;
    let got = search(format!("&minDuration={min_us}us")).await;
    assert!(!got.is_empty());
    assert_eq!(
        got,
        sql_ids(
            server,
            &format!("{svc} AND duration_nano >= {}", min_us * 1000)
        )
        .await
    );
    let got = search(format!(
        "&minDuration=100us&maxDuration={}",
        enc(&format!("{}.5ms", median / 1_000_000))
    ))
    .await;
    let max_ns = (median / 1_000_000) * 1_000_000 + 500_000;
    assert_eq!(
        got,
        sql_ids(
            server,
            &format!("{svc} AND duration_nano BETWEEN 100000 AND {max_ns}")
        )
        .await
    );

    // A window in the middle of the data: spans starting in it.
    let mid_us = (lo_us + hi_us) / 2;
    let path = format!(
        "/api/traces?service={}&start={mid_us}&end={hi_us}&limit=1000",
        enc(&service)
    );
    let got = trace_ids(&data(server, &path).await);
    let expected = sql_ids(
        server,
        &format!(
            "{svc} AND start_time_unix_nano BETWEEN {} AND {}",
            mid_us * 1000,
            hi_us * 1000 + 999
        ),
    )
    .await;
    assert!(!expected.is_empty());
    assert_eq!(got, expected);

    // Limit: the most recently active traces first.
    let path = format!("/api/traces?service={}{window}&limit=3", enc(&service));
    let traces = data(server, &path).await;
    let got: Vec<String> = traces
        .as_array()
        .unwrap()
        .iter()
        .map(|t| full_id(t["traceID"].as_str().unwrap()))
        .collect();
    let expected: Vec<String> = server
        .sql(&format!("SELECT encode(trace_id, 'hex') AS id, max(start_time_unix_nano) AS last FROM spans WHERE {svc} GROUP BY trace_id ORDER BY last DESC, id LIMIT 3"))
        .await
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, expected);
    // Each found trace is whole: all its spans, not only the matching ones.
    for trace in traces.as_array().unwrap() {
        let id = full_id(trace["traceID"].as_str().unwrap());
        let n = server
            .count(&format!("WHERE trace_id = decode('{id}', 'hex')"))
            .await;
        assert_eq!(trace["spans"].as_array().unwrap().len() as u64, n);
    }

    // Repeated traceID: those traces; an unknown one is reported in errors.
    let ids: Vec<&String> = all.iter().take(2).collect();
    let unknown = "00000000000000000000000000abcdef";
    let body = ok(
        server,
        &format!(
            "/api/traces?traceID={}&traceID={}&traceID={unknown}",
            ids[0], ids[1]
        ),
    )
    .await;
    assert_eq!(
        trace_ids(&body["data"]),
        ids.iter().map(|s| s.to_string()).collect()
    );
    assert_eq!(body["errors"][0]["msg"], "trace not found");
    assert_eq!(body["errors"][0]["traceID"], unknown);
}

async fn v3(server: &TestServer, service: &str, rich_id: &str) {
    let body = ok(server, &format!("/api/v3/traces/{rich_id}")).await;
    assert_eq!(otlp_trace_ids(&body), BTreeSet::from([rich_id.to_string()]));
    let rs = &body["result"]["resourceSpans"][0];
    assert!(rs["resource"]["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["key"] == "service.name" && a["value"]["stringValue"] == "jaeger-rich"));
    assert_eq!(rs["scopeSpans"][0]["spans"].as_array().unwrap().len(), 3);

    let min = "2000-01-01T00:00:00Z";
    let max = "2100-01-01T00:00:00.000000001Z";
    let path = format!(
        "/api/v3/traces?query.service_name={service}&query.start_time_min={}&query.start_time_max={}&query.search_depth=1000",
        enc(min),
        enc(max)
    );
    let got = otlp_trace_ids(&ok(server, &path).await);
    assert!(!got.is_empty());
    assert_eq!(
        got,
        sql_ids(server, &format!("service_name = '{service}'")).await
    );
    // camelCase names, attributes and durations.
    let path = format!(
        "/api/v3/traces?query.serviceName={service}&query.startTimeMin={}&query.startTimeMax={}&query.searchDepth=1000&query.durationMin=1ms&query.attributes={}",
        enc(min),
        enc(max),
        enc(r#"{"span.kind":"server"}"#)
    );
    let (status, body) = get(server, &path, "default").await;
    let expected = sql_ids(
        server,
        &format!("service_name = '{service}' AND kind = 2 AND duration_nano >= 1000000"),
    )
    .await;
    if expected.is_empty() {
        assert_eq!(status, 404, "{body}");
    } else {
        assert_eq!(status, 200, "{body}");
        assert_eq!(otlp_trace_ids(&body), expected);
    }
    let (status, body) = get(
        server,
        &format!(
            "/api/v3/traces?query.serviceName=nope&query.startTimeMin={}&query.startTimeMax={}",
            enc(min),
            enc(max)
        ),
        "default",
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["httpCode"], 404);
}

async fn dependencies(server: &TestServer) {
    let body = ok(server, "/api/dependencies").await;
    let got: BTreeSet<(String, String, u64)> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["parent"].as_str().unwrap().to_string(),
                d["child"].as_str().unwrap().to_string(),
                d["callCount"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(
        got.contains(&("jaeger-front".into(), "jaeger-back".into(), 3)),
        "{got:?}"
    );
    let expected: BTreeSet<(String, String, u64)> = server
        .sql(
            "SELECT p.service_name AS parent, c.service_name AS child, \
             CAST(round(sum(c.adjusted_count)) AS BIGINT) AS n \
             FROM spans c JOIN spans p ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id \
             WHERE c.service_name <> p.service_name GROUP BY 1, 2",
        )
        .await
        .iter()
        .map(|r| {
            (
                r["parent"].as_str().unwrap().to_string(),
                r["child"].as_str().unwrap().to_string(),
                r["n"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(expected.len() > 3, "{expected:?}");
    assert_eq!(got, expected);
    // A window before any data has no edges.
    let body = ok(server, "/api/dependencies?endTs=1000000&lookback=1000").await;
    assert_eq!(body["data"], json!([]));
}

async fn errors(server: &TestServer) {
    for (path, status, needle) in [
        (
            "/api/traces?service=cart&minDuration=10",
            400,
            "minDuration",
        ),
        (
            "/api/traces?service=cart&maxDuration=1d",
            400,
            "unknown unit",
        ),
        (
            "/api/traces?service=cart&minDuration=2s&maxDuration=1s",
            400,
            "'maxDuration' should be greater than 'minDuration'",
        ),
        ("/api/traces?service=cart&start=abc", 400, "'start'"),
        ("/api/traces?service=cart&limit=x", 400, "'limit'"),
        ("/api/traces?service=cart&tag=novalue", 400, "key:value"),
        ("/api/traces?service=cart&tags=%7Bbad", 400, "'tags'"),
        ("/api/traces?limit=5", 400, "'service' is required"),
        ("/api/traces?traceID=xyz", 400, "traceID"),
        ("/api/traces/not-hex", 400, "invalid trace id"),
        (
            "/api/traces/abcdef0123456789abcdef0123456789",
            404,
            "trace not found",
        ),
        ("/api/operations", 400, "'service' is required"),
        (
            "/api/operations?service=cart&spanKind=sideways",
            400,
            "spanKind",
        ),
        ("/api/dependencies?endTs=soon", 400, "endTs"),
    ] {
        let (got, body) = get(server, path, "default").await;
        assert_eq!(got, status, "{path}: {body}");
        assert_eq!(body["data"], Value::Null, "{path}");
        let msg = body["errors"][0]["msg"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{path}: {body}");
        assert_eq!(body["errors"][0]["code"], status);
    }
    for (path, status, needle) in [
        ("/api/v3/traces/zz", 400, "trace_id"),
        ("/api/v3/traces/abcdef0123456789abcdef0123456789", 404, "No traces found"),
        ("/api/v3/traces?query.serviceName=cart", 400, "are required"),
        ("/api/v3/traces?query.startTimeMin=yesterday&query.startTimeMax=2030-01-01T00:00:00Z", 400, "query.startTimeMin"),
        ("/api/v3/traces?query.startTimeMin=2020-01-01T00:00:00Z&query.startTimeMax=2030-01-01T00:00:00Z&query.durationMin=5s&query.durationMax=1s", 400, "query.durationMax"),
        ("/api/v3/operations", 400, "'service' is required"),
    ] {
        let (got, body) = get(server, path, "default").await;
        assert_eq!(got, status, "{path}: {body}");
        assert_eq!(body["error"]["httpCode"], status, "{path}");
        let msg = body["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{path}: {body}");
    }
}

/// `X-Scope-OrgID` selects the tenant on every endpoint.
async fn tenants(server: &TestServer) {
    let (status, body) = get(server, "/api/services", "acme").await;
    assert_eq!(status, 200);
    assert_eq!(body["data"], json!(["acme-only"]));
    let (_, body) = get(server, "/api/v3/services", "acme").await;
    assert_eq!(body["services"], json!(["acme-only"]));
    let default = strings(&ok(server, "/api/services").await["data"]);
    assert!(!default.contains(&"acme-only".to_string()));
    let (_, body) = get(server, "/api/traces?service=acme-only", "acme").await;
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
    let id = full_id(body["data"][0]["traceID"].as_str().unwrap());
    let (status, _) = get(server, &format!("/api/traces/{id}"), "default").await;
    assert_eq!(status, 404, "another tenant's trace is not found");
    let (status, _) = get(server, &format!("/api/traces/{id}"), "acme").await;
    assert_eq!(status, 200);
    let (status, _) = get(server, &format!("/api/v3/traces/{id}"), "acme").await;
    assert_eq!(status, 200);
    let (_, body) = get(server, "/api/services/acme-only/operations", "acme").await;
    assert_eq!(
        strings(&body["data"]),
        vec!["GET /api/items/0", "GET /api/items/1"]
    );
    let (status, body) = get(server, "/api/services", "bad tenant!").await;
    assert_eq!(status, 400, "{body}");
}
