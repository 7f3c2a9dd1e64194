//! `GET /api/metrics/red` and `GET /api/service-graph` against the real binary: a loadgen hour,
//! flushed (so its rollups are written), and every series and edge compared with SQL over the
//! raw spans.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::compaction::metric;
use crate::server::{run_loadgen, TestServer};

/// A closed hour two days ago (unix seconds).
fn old_hour() -> u64 {
    let now = crate::data::now_nanos() / 1_000_000_000;
    now - now % 3600 - 48 * 3600
}

async fn red(server: &TestServer, query: &str) -> (u16, Value) {
    let response = reqwest::get(server.url(&format!("/api/metrics/red?{query}")))
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// The value at rank floor(q (n - 1)) of `values`, which DDSketch approximates within 1 %.
fn rank(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[(q * (values.len() - 1) as f64).floor() as usize]
}

#[tokio::test]
async fn red_metrics_and_service_graph_match_sql_over_the_spans() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--flush-interval", "500ms"]).await;
    let hour = old_hour();
    let summary = run_loadgen(&[
        "--traces",
        "400",
        "--rate",
        "0",
        "--seed",
        "29",
        "--start-time",
        &hour.to_string(),
        "--time-spread",
        "30m",
        "--endpoint",
        &server.grpc_url(),
    ]);
    let acked = summary["spans_acked"].as_u64().unwrap();
    server
        .eventually(
            Duration::from_secs(20),
            "spans flushed with rollups",
            || async {
                metric(&server, "tracelake_spans_flushed_total").await >= acked
                    && metric(&server, "tracelake_rollup_rows_total").await > 0
            },
        )
        .await;

    // The busiest service with server spans.
    let top = server
        .sql(
            "SELECT service_name AS s FROM spans WHERE kind = 2 GROUP BY 1 \
             ORDER BY count(*) DESC, 1 LIMIT 1",
        )
        .await;
    let service = top[0]["s"].as_str().unwrap().to_string();
    let rows = server
        .sql(&format!(
            "SELECT name, duration_nano AS d, \
             CASE WHEN status_code = 2 OR http_response_status_code >= 500 THEN 1 ELSE 0 END AS e \
             FROM spans WHERE kind = 2 AND service_name = '{service}'"
        ))
        .await;
    let mut truth: BTreeMap<String, (Vec<f64>, u64)> = BTreeMap::new();
    for r in &rows {
        let entry = truth
            .entry(r["name"].as_str().unwrap().to_string())
            .or_default();
        entry.0.push(r["d"].as_f64().unwrap());
        entry.1 += r["e"].as_u64().unwrap();
    }
    assert!(truth.len() >= 2, "{truth:?}");

    let (status, body) = red(
        &server,
        &format!("service={service}&start={hour}&end={}&step=5m", hour + 3600),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["step"], 300);
    let series = body["series"].as_array().unwrap();
    assert_eq!(
        series
            .iter()
            .map(|s| s["group"].as_str().unwrap())
            .collect::<Vec<_>>(),
        truth.keys().map(String::as_str).collect::<Vec<_>>(),
        "one series per operation"
    );
    for s in series {
        let (durations, errors) = truth.get_mut(s["group"].as_str().unwrap()).unwrap();
        let total = &s["total"];
        let n = durations.len() as f64;
        assert_eq!(total["count"].as_f64().unwrap(), n, "{s}");
        assert!((total["rate"].as_f64().unwrap() - n / 3600.0).abs() < 1e-9);
        assert!((total["errorRate"].as_f64().unwrap() - *errors as f64 / n).abs() < 1e-9);
        for (key, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
            let exact = rank(durations, q) / 1e6;
            let got = total[key].as_f64().unwrap();
            assert!(
                (got - exact).abs() <= 0.01 * exact + 1e-9,
                "{key}: {got} ms vs exact {exact} ms"
            );
        }
        // Points cover 5-minute steps from the start, and add up to the total.
        let points = s["points"].as_array().unwrap();
        let mut sum = 0.0;
        for p in points {
            let t = p["timestamp"].as_u64().unwrap();
            assert!(
                t >= hour && t < hour + 3600 && (t - hour).is_multiple_of(300),
                "{p}"
            );
            sum += p["count"].as_f64().unwrap();
            assert!(
                (p["rate"].as_f64().unwrap() * 300.0 - p["count"].as_f64().unwrap()).abs() < 1e-6
            );
        }
        assert_eq!(sum, n);
    }

    // By route: the routes of the service's server spans.
    let (status, body) = red(
        &server,
        &format!(
            "service={service}&groupBy=route&start={hour}&end={}",
            hour + 3600
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let routes = server
        .sql(&format!(
            "SELECT DISTINCT coalesce(http_route, '') AS r FROM spans \
             WHERE kind = 2 AND service_name = '{service}' ORDER BY 1"
        ))
        .await;
    assert_eq!(
        body["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["group"].clone())
            .collect::<Vec<_>>(),
        routes.iter().map(|r| r["r"].clone()).collect::<Vec<_>>()
    );
    assert_eq!(body["step"], 60, "default step: the window / 60");

    // The service graph: caller -> callee edges with weighted calls and errors, as SQL over the
    // spans computes them, and the same calls on Jaeger's /api/dependencies.
    let expected = server
        .sql(
            "SELECT p.service_name AS parent, c.service_name AS child, \
             sum(coalesce(c.adjusted_count, 1.0)) AS calls, \
             sum(CASE WHEN c.status_code = 2 OR c.http_response_status_code >= 500 \
                 THEN coalesce(c.adjusted_count, 1.0) ELSE 0.0 END) AS errors \
             FROM spans c JOIN spans p \
               ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id \
             WHERE p.service_name <> c.service_name GROUP BY 1, 2 ORDER BY 1, 2",
        )
        .await;
    let graph: Value = reqwest::get(server.url(&format!(
        "/api/service-graph?start={hour}&end={}",
        hour + 3600
    )))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let edges = graph["edges"].as_array().unwrap();
    assert!(edges.len() >= 3, "{graph}");
    assert_eq!(edges.len(), expected.len(), "{graph}");
    let mut with_errors = 0;
    for (edge, want) in edges.iter().zip(&expected) {
        assert_eq!(edge["parent"], want["parent"]);
        assert_eq!(edge["child"], want["child"]);
        assert_eq!(edge["calls"].as_f64(), want["calls"].as_f64(), "{edge}");
        assert_eq!(edge["errors"].as_f64(), want["errors"].as_f64(), "{edge}");
        with_errors += usize::from(edge["errors"].as_f64().unwrap() > 0.0);
    }
    assert!(with_errors > 0, "the workload has failing calls: {graph}");
    let jaeger: Value = reqwest::get(server.jaeger_url(&format!(
        "/api/dependencies?endTs={}&lookback=3600000",
        (hour + 3600) * 1000 - 1
    )))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let links = jaeger["data"].as_array().unwrap();
    assert_eq!(links.len(), edges.len(), "{jaeger}");
    for (link, edge) in links.iter().zip(edges) {
        assert_eq!(link["parent"], edge["parent"]);
        assert_eq!(
            link["callCount"].as_f64().unwrap(),
            edge["calls"].as_f64().unwrap().round()
        );
    }
    let (status, body) = {
        let r = reqwest::get(server.url("/api/service-graph?start=10&end=5"))
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(status, 400);
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("must be after start"));

    // Bad requests say what is wrong.
    for (query, needle) in [
        ("start=1&end=2".to_string(), "service is required"),
        (format!("service={service}&groupBy=host"), "invalid groupBy"),
        (format!("service={service}&kind=sideways"), "invalid kind"),
        (
            format!("service={service}&step=90s"),
            "whole number of minutes",
        ),
        (
            format!("service={service}&start=100&end=50"),
            "must be after start",
        ),
        (
            format!("service={service}&start=0&end=3600000&step=1m"),
            "points per series",
        ),
    ] {
        let (status, body) = red(&server, &query).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(needle),
            "{query}: {body}"
        );
    }
}
