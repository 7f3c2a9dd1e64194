//! `POST /api/sql` output formats: the JSON array, and the streamed JSON lines, CSV and Arrow
//! IPC, with the same rows; the row limit in each; errors before and after the first row.

use serde_json::Value;

use crate::server::{loaded_server, TestServer};

async fn post(server: &TestServer, format: &str, sql: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(server.url(&format!("/api/sql?format={format}")))
        .body(sql.to_string())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn every_format_carries_the_same_rows_and_the_row_limit_is_never_silent() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tracelake.toml");
    std::fs::write(&config, "[query]\nmax_rows = 500\n").unwrap();
    let (server, acked) = loaded_server(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
        100,
        3,
    )
    .await;
    assert!(acked > 500, "{acked} spans: the limit must cut them");

    let sql = "SELECT encode(span_id, 'hex') AS id, name, duration_nano, http_route \
               FROM spans ORDER BY id LIMIT 400";
    let json = server.sql(sql).await;
    assert_eq!(json.len(), 400);

    // JSON lines: one object per line, the same objects.
    let resp = post(&server, "jsonl", sql).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/x-ndjson"
    );
    let body = resp.text().await.unwrap();
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, json);

    // CSV: a header, then the rows.
    let resp = post(&server, "csv", sql).await;
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    let mut rows = body.lines();
    assert_eq!(rows.next(), Some("id,name,duration_nano,http_route"));
    let rows: Vec<&str> = rows.collect();
    assert_eq!(rows.len(), 400);
    for (row, want) in rows.iter().zip(&json) {
        let mut cells = row.split(',');
        assert_eq!(cells.next(), want["id"].as_str());
        assert_eq!(cells.next(), want["name"].as_str());
        assert_eq!(
            cells.next().map(str::to_string),
            Some(want["duration_nano"].to_string())
        );
    }

    // Arrow IPC: a stream a reader takes, the same rows.
    let resp = post(&server, "arrow", sql).await;
    assert_eq!(resp.status(), 200);
    let bytes = resp.bytes().await.unwrap();
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
    let names: Vec<String> = reader
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["id", "name", "duration_nano", "http_route"]);
    let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
    let mut ids = Vec::new();
    for b in &batches {
        let col = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
        let col = col
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap();
        ids.extend(col.iter().map(|v| v.unwrap().to_string()));
    }
    let want: Vec<String> = json
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, want);

    // No rows: CSV still has its header, Arrow its schema, JSON lines nothing.
    let empty = "SELECT name FROM spans WHERE name = 'no such span'";
    assert_eq!(
        post(&server, "csv", empty).await.text().await.unwrap(),
        "name\n"
    );
    assert_eq!(
        post(&server, "jsonl", empty).await.text().await.unwrap(),
        ""
    );
    let bytes = post(&server, "arrow", empty).await.bytes().await.unwrap();
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
    assert_eq!(reader.schema().field(0).name(), "name");
    assert_eq!(reader.map(|b| b.unwrap().num_rows()).sum::<usize>(), 0);

    // More rows than query.max_rows (500).
    let all = "SELECT encode(span_id, 'hex') AS id FROM spans";
    // JSON: cut, and the header says so.
    let resp = post(&server, "json", all).await;
    assert_eq!(resp.headers()["x-tracelake-truncated"], "true");
    assert_eq!(resp.json::<Vec<Value>>().await.unwrap().len(), 500);
    // JSON lines: the rows, then a line with the error.
    let body = post(&server, "jsonl", all).await.text().await.unwrap();
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len(),
        501,
        "{}",
        &body[body.len().saturating_sub(300)..]
    );
    let last = lines.last().unwrap();
    assert!(
        last["error"].as_str().unwrap().contains("query.max_rows"),
        "{last}"
    );
    assert!(lines[..500].iter().all(|l| l["id"].is_string()));
    // CSV and Arrow: the transfer breaks instead of ending as if complete.
    for format in ["csv", "arrow"] {
        let resp = post(&server, format, all).await;
        assert_eq!(resp.status(), 200);
        assert!(
            resp.bytes().await.is_err(),
            "{format}: a cut stream must not look complete"
        );
    }

    // Errors before the first row are ordinary error responses, in every format.
    for format in ["jsonl", "csv", "arrow"] {
        let resp = post(&server, format, "SELECT FROM WHERE").await;
        assert_eq!(resp.status(), 400, "{format}");
        let body: Value = resp.json().await.unwrap();
        assert!(body["error"].is_string(), "{body}");
        let resp = post(&server, format, "DROP TABLE spans").await;
        assert_eq!(resp.status(), 400, "{format}");
        let body: Value = resp.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("read-only"),
            "{body}"
        );
    }
    let resp = post(&server, "yaml", "SELECT 1").await;
    assert_eq!(resp.status(), 400);
    assert_eq!(server.count("").await, acked);
}
