"""Runs the same SQL through Python's PostgreSQL driver (psycopg 3) and the ADBC Flight SQL
driver, against a running tracelake, and prints the rows as JSON for the Rust test to compare
with POST /api/sql.

usage: sql_clients.py PG_PORT FLIGHT_PORT QUERIES_JSON
"""

import json
import sys

import adbc_driver_flightsql.dbapi as flight_sql
import psycopg


def plain(value):
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return value


def main():
    pg_port, flight_port, queries = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
    out = {"pg": [], "pg_params": None, "flight": [], "flight_params": None, "errors": {}}

    with psycopg.connect(host="127.0.0.1", port=pg_port, dbname="default", user="notebook") as conn:
        for sql in queries:
            with conn.cursor() as cur:
                cur.execute(sql)
                names = [d.name for d in cur.description]
                out["pg"].append([dict(zip(names, map(plain, row))) for row in cur.fetchall()])
        # A server-side bound parameter (psycopg 3 binds on the server).
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) AS n FROM spans WHERE service_name = %s", ("frontend",))
            out["pg_params"] = cur.fetchone()[0]
        # The guard's refusal reaches Python as a psycopg error with its SQLSTATE.
        try:
            with conn.cursor() as cur:
                cur.execute("DELETE FROM spans")
        except psycopg.Error as e:
            out["errors"]["pg"] = [e.sqlstate, str(e)]
        conn.rollback()

    with flight_sql.connect(f"grpc://127.0.0.1:{flight_port}") as conn:
        for sql in queries:
            with conn.cursor() as cur:
                cur.execute(sql)
                table = cur.fetch_arrow_table()
                out["flight"].append(
                    [{k: plain(v) for k, v in row.items()} for row in table.to_pylist()]
                )
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) AS n FROM spans WHERE service_name = $1", parameters=("frontend",))
            out["flight_params"] = cur.fetch_arrow_table().to_pylist()[0]["n"]
        try:
            with conn.cursor() as cur:
                cur.execute("DELETE FROM spans")
                cur.fetch_arrow_table()
        except Exception as e:  # ADBC raises its DB-API error classes
            out["errors"]["flight"] = [type(e).__name__, str(e)]
        tables = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        out["flight_tables"] = sorted(
            t["table_name"]
            for catalog in tables
            for schema in catalog["catalog_db_schemas"] or []
            for t in schema["db_schema_tables"] or []
        )

    print(json.dumps(out))


if __name__ == "__main__":
    main()
