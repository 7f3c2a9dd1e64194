//! PostgreSQL's catalog for the SQL front-ends: `pg_catalog` tables and the functions `psql`,
//! Grafana's PostgreSQL data source and other PostgreSQL tools ask for, from
//! `datafusion-pg-catalog`. They describe the tenant's own tables and views.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, StringBuilder};
use arrow::datatypes::DataType;
use datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::{
    context::EmptyContextProvider, create_current_database_udf, setup_pg_catalog,
};

use crate::error::{Error, Result};

/// The catalog every tenant's tables are in.
const CATALOG: &str = "tracelake";

/// Registers `pg_catalog` and PostgreSQL's session functions on `ctx`; `current_database()`
/// is the tenant, as the PostgreSQL database name selects the tenant.
pub(crate) fn register(ctx: &SessionContext, tenant: &str) -> Result<()> {
    setup_pg_catalog(ctx, CATALOG, EmptyContextProvider)
        .map_err(|e| Error::Internal(format!("setting up pg_catalog: {e}")))?;
    ctx.register_udf(create_current_database_udf(tenant));
    ctx.register_udf(current_setting());
    Ok(())
}

/// Removes `pg_catalog` from `ctx`. The schema refers to the catalog list that holds it, so the
/// session (and the storage its tables read) is only freed once it is removed.
pub(crate) fn unregister(ctx: &SessionContext) {
    if let Some(catalog) = ctx.catalog(CATALOG) {
        let _ = catalog.deregister_schema("pg_catalog", true);
    }
}

/// The server's value of a PostgreSQL setting clients read, as `SHOW` and `current_setting()`
/// give it; `None` for settings tracelake does not have.
pub fn server_setting(name: &str) -> Option<&'static str> {
    Some(match name.to_ascii_lowercase().as_str() {
        "server_version" => "16.6",
        "server_version_num" => "160006",
        "server_encoding" | "client_encoding" => "UTF8",
        "standard_conforming_strings" | "integer_datetimes" => "on",
        "transaction_read_only" | "default_transaction_read_only" => "on",
        "transaction_isolation" | "default_transaction_isolation" => "read committed",
        "timezone" => "UTC",
        "datestyle" => "ISO, MDY",
        "intervalstyle" => "postgres",
        "bytea_output" => "hex",
        "extra_float_digits" => "1",
        "search_path" => "public",
        "statement_timeout" | "lock_timeout" | "idle_in_transaction_session_timeout" => "0",
        "application_name" => "",
        "client_min_messages" => "notice",
        "max_identifier_length" => "63",
        _ => return None,
    })
}

/// `current_setting(name)`: the server settings PostgreSQL clients read (Grafana reads
/// `search_path`). Read-only: there is no `set_config`.
fn current_setting() -> datafusion::logical_expr::ScalarUDF {
    let func = |args: &[ColumnarValue]| -> datafusion::error::Result<ColumnarValue> {
        match &args[0] {
            ColumnarValue::Scalar(s) => {
                let name = match s {
                    ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v) => {
                        v.as_deref()
                    }
                    _ => None,
                };
                let value = name.and_then(server_setting).map(str::to_string);
                Ok(ColumnarValue::Scalar(ScalarValue::Utf8(value)))
            }
            ColumnarValue::Array(a) => {
                let names = arrow::compute::cast(a, &DataType::Utf8)?;
                let mut out = StringBuilder::new();
                for name in names.as_string::<i32>() {
                    out.append_option(name.and_then(server_setting));
                }
                Ok(ColumnarValue::Array(Arc::new(out.finish()) as ArrayRef))
            }
        }
    };
    create_udf(
        "current_setting",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(func),
    )
}

#[cfg(test)]
mod tests {
    use arrow::array::Array;

    use super::*;

    #[tokio::test]
    async fn catalog_and_settings() {
        let ctx = SessionContext::new_with_config(
            datafusion::prelude::SessionConfig::new()
                .with_information_schema(true)
                .with_default_catalog_and_schema(CATALOG, "public"),
        );
        register(&ctx, "acme").unwrap();
        let batches = ctx
            .sql(
                "SELECT current_database() AS db, current_setting('search_path') AS path, \
                 current_setting('no_such_thing') AS none",
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let row = &batches[0];
        let text = |i: usize| {
            let col = arrow::compute::cast(row.column(i), &DataType::Utf8).unwrap();
            let col = col.as_string::<i32>();
            (!col.is_null(0)).then(|| col.value(0).to_string())
        };
        assert_eq!(text(0).as_deref(), Some("acme"));
        assert_eq!(text(1).as_deref(), Some("public"));
        assert_eq!(text(2), None);
        let tables = ctx
            .sql("SELECT count(*) FROM pg_catalog.pg_namespace")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(tables[0].num_rows(), 1);
    }
}
