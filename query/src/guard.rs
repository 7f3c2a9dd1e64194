//! The read-only SQL guard: the one gate every SQL front-end passes through.
//!
//! Only `SELECT`, `WITH`, `EXPLAIN`, `SHOW` and `DESCRIBE` pass. DataFusion's own
//! [`SQLOptions`](datafusion::execution::context::SQLOptions) (no DDL, no DML, no statements)
//! then checks the planned query again, so a statement that slips past the parser check is
//! still refused at planning.

use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::Statement;

use crate::error::{Error, Result};

/// Longest SQL text accepted, in bytes.
pub const MAX_SQL_BYTES: usize = 256 * 1024;

const ALLOWED: &str = "only read-only queries are allowed (SELECT, WITH, EXPLAIN, SHOW, DESCRIBE)";

/// Refuses SQL text longer than [`MAX_SQL_BYTES`], before anything parses it.
pub fn check_size(sql: &str) -> Result<()> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(Error::Refused(format!(
            "sql text is {} bytes; the limit is {MAX_SQL_BYTES}",
            sql.len()
        )));
    }
    Ok(())
}

/// Checks that `sql` is exactly one read-only statement.
pub fn check(sql: &str) -> Result<()> {
    check_size(sql)?;
    let statements = DFParser::parse_sql(sql).map_err(|e| {
        Error::Parse(match e.find_root() {
            datafusion::error::DataFusionError::SQL(p, _) => p.to_string(),
            other => other.to_string(),
        })
    })?;
    match statements.len() {
        0 => {
            return Err(Error::Refused(
                "empty sql: send one SELECT statement".into(),
            ))
        }
        1 => {}
        n => {
            return Err(Error::Refused(format!(
                "{n} statements sent: send exactly one statement per request"
            )))
        }
    }
    check_statement(&statements[0])
}

fn check_statement(statement: &DFStatement) -> Result<()> {
    match statement {
        DFStatement::Statement(s) => check_sql_statement(s),
        DFStatement::Explain(explain) => check_statement(&explain.statement),
        DFStatement::CreateExternalTable(_) => Err(refused("CREATE EXTERNAL TABLE")),
        DFStatement::CopyTo(_) => Err(refused("COPY")),
        #[allow(unreachable_patterns)]
        _ => Err(refused("this statement")),
    }
}

fn check_sql_statement(statement: &Statement) -> Result<()> {
    match statement {
        Statement::Query(_)
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ExplainTable { .. } => Ok(()),
        Statement::Explain { statement, .. } => check_sql_statement(statement),
        Statement::ShowVariable { .. } => Ok(()),
        other => {
            let text = other.to_string();
            let kind: String = text
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
                .to_uppercase();
            Err(refused(&kind))
        }
    }
}

fn refused(what: &str) -> Error {
    Error::Refused(format!("{what} is not allowed: {ALLOWED}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_reads() {
        for sql in [
            "SELECT 1",
            "select count(*) from spans",
            "WITH t AS (SELECT 1 AS x) SELECT x FROM t",
            "EXPLAIN SELECT * FROM spans",
            "EXPLAIN ANALYZE SELECT * FROM spans",
            "SHOW TABLES",
            "SHOW COLUMNS FROM spans",
            "DESCRIBE spans",
        ] {
            check(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }

    #[test]
    fn refuses_writes_and_files() {
        for sql in [
            "INSERT INTO spans VALUES (1)",
            "DELETE FROM spans",
            "UPDATE spans SET name = 'x'",
            "DROP TABLE spans",
            "CREATE TABLE t AS SELECT 1",
            "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/etc'",
            "COPY (SELECT 1) TO '/tmp/x.parquet'",
            "CREATE VIEW v AS SELECT 1",
            "SET datafusion.execution.batch_size = 1",
            "EXPLAIN INSERT INTO spans VALUES (1)",
            "SELECT 1; DROP TABLE spans",
            "",
        ] {
            let err = check(sql).expect_err(sql);
            assert!(
                matches!(err, Error::Refused(_)),
                "{sql}: expected a refusal, got {err}"
            );
        }
    }

    #[test]
    fn reports_parse_errors() {
        assert!(matches!(
            check("SELEC 1"),
            Err(Error::Refused(_) | Error::Parse(_))
        ));
        assert!(matches!(check("SELECT (1"), Err(Error::Parse(_))));
    }
}
