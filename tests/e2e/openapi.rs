//! The OpenAPI documents of both listeners, fetched from the real binary and checked against
//! what the server really routes: every documented path exists, answers the documented
//! methods and no others, and the document names every endpoint of the API.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::server::TestServer;

/// Sampling on, so `/api/sampling` has something to report.
const CONFIG: &str = "[sampling]\nenabled = true\n";

/// Every endpoint each listener must document (SPECS.md and issue 4).
const HTTP_PATHS: [&str; 23] = [
    "/api/traces/{id}",
    "/api/v2/traces/{id}",
    "/api/search",
    "/api/search/tags",
    "/api/v2/search/tags",
    "/api/search/tag/{tag}/values",
    "/api/v2/search/tag/{tag}/values",
    "/api/status/buildinfo",
    "/api/sql",
    "/api/metrics/red",
    "/api/metrics/query_range",
    "/api/metrics/query",
    "/api/service-graph",
    "/api/slo",
    "/api/slo/{name}",
    "/api/slo/{name}/series",
    "/api/slo/reload",
    "/api/sampling",
    "/api/sampling/reload",
    "/api/echo",
    "/ready",
    "/metrics",
    "/api/openapi.json",
];
const JAEGER_PATHS: [&str; 11] = [
    "/api/services",
    "/api/services/{service}/operations",
    "/api/operations",
    "/api/traces",
    "/api/traces/{id}",
    "/api/dependencies",
    "/api/v3/services",
    "/api/v3/operations",
    "/api/v3/traces",
    "/api/v3/traces/{trace_id}",
    "/api/openapi.json",
];
const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

async fn document(url: String) -> Value {
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status(), 200, "{url}");
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    resp.json().await.unwrap()
}

/// `path` with its parameters filled with plausible values.
fn concrete(path: &str) -> String {
    path.replace("{id}", "1")
        .replace("{trace_id}", "1")
        .replace("{tag}", "service.name")
        .replace("{service}", "cart")
}

/// Checks one listener's document against the listener.
async fn check(listener: &str, base: impl Fn(&str) -> String, expected: &[&str]) {
    let doc = document(base("/api/openapi.json")).await;
    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(
        version.starts_with("3."),
        "{listener}: openapi = {version:?}"
    );
    assert!(doc["info"]["title"].is_string(), "{listener}");
    let paths = doc["paths"].as_object().expect("paths");
    let documented: BTreeSet<&str> = paths.keys().map(String::as_str).collect();
    assert_eq!(
        documented,
        expected.iter().copied().collect(),
        "{listener}: documented paths"
    );

    let client = reqwest::Client::new();
    for (path, item) in paths {
        let methods: BTreeSet<String> = METHODS
            .iter()
            .filter(|m| item.get(**m).is_some())
            .map(|m| m.to_uppercase())
            .collect();
        assert!(!methods.is_empty(), "{listener} {path}");
        let url = base(&concrete(path));

        // Each documented GET without path parameters is routed: no 404, no 405.
        if methods.contains("GET") && !path.contains('{') {
            let resp = client.get(&url).send().await.unwrap();
            let status = resp.status().as_u16();
            assert!(
                status != 404 && status != 405,
                "{listener} GET {path}: {status} {}",
                resp.text().await.unwrap()
            );
        }

        // An undocumented method is refused by the router, whose `Allow` lists exactly the
        // documented methods (and HEAD, which axum answers for every GET).
        let resp = client
            .request(reqwest::Method::OPTIONS, &url)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405, "{listener} OPTIONS {path}");
        let allow: BTreeSet<String> = resp.headers()["allow"]
            .to_str()
            .unwrap()
            .split(',')
            .map(|m| m.trim().to_string())
            .filter(|m| m != "HEAD")
            .collect();
        assert_eq!(
            allow, methods,
            "{listener} {path}: routed vs documented methods"
        );

        // Operations that read tenant data document X-Scope-OrgID.
        for method in &methods {
            let op = &item[method.to_lowercase()];
            assert!(
                op["responses"]["200"].is_object(),
                "{listener} {method} {path}"
            );
            let tenant = op["parameters"].as_array().is_some_and(|ps| {
                ps.iter()
                    .any(|p| p["name"] == "X-Scope-OrgID" && p["in"] == "header")
            });
            let reads_data = !matches!(
                path.as_str(),
                "/api/openapi.json"
                    | "/api/echo"
                    | "/ready"
                    | "/metrics"
                    | "/api/status/buildinfo"
                    | "/api/sampling"
                    | "/api/sampling/reload"
                    | "/api/slo/reload"
            );
            assert_eq!(
                tenant, reads_data,
                "{listener} {method} {path}: X-Scope-OrgID"
            );
        }
    }
}

#[tokio::test]
async fn openapi_documents_match_both_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tracelake.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    )
    .await;

    check("--http-addr", |p| server.url(p), &HTTP_PATHS).await;
    check("--jaeger-addr", |p| server.jaeger_url(p), &JAEGER_PATHS).await;

    // The two documents are different: each describes its own listener.
    let http = document(server.url("/api/openapi.json")).await;
    let jaeger = document(server.jaeger_url("/api/openapi.json")).await;
    assert_ne!(http["info"]["title"], jaeger["info"]["title"]);
    // Shapes are described, not only named: the tag values schema has its typed items.
    let v2_values = &http["paths"]["/api/v2/search/tag/{tag}/values"]["get"];
    let schema = &v2_values["responses"]["200"]["content"]["application/json"]["schema"];
    assert!(schema.is_object(), "{v2_values}");
    assert!(
        http["components"]["schemas"]["TypedValue"]["properties"]["type"].is_object(),
        "{}",
        http["components"]
    );
}
