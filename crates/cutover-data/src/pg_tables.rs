//! Restore points of selected PostgreSQL tables (`tables: [...]`), for stacks where only a
//! few tables belong to the application being upgraded (the Inmanta seed backs up two).
//!
//! Taking one: in one REPEATABLE READ transaction (a consistent snapshot across the tables),
//! each table is copied, with its defaults, constraints and indexes (`LIKE … INCLUDING
//! ALL`), into the schema `cutover_rp_<release>` of the same database. Restoring: in one
//! transaction, with triggers and foreign-key checks off (`session_replication_role =
//! replica`, so other tables referencing these are not cascaded into), the live rows are
//! copied aside to `cutover_failed_<release>` for inspection, deleted, and the copied rows
//! put back, column by column. Columns a migration added keep their defaults; a column the
//! migration dropped cannot be filled, and the restore refuses rather than lose it. Sequences
//! are not rewound (ids stay unique, with a gap).

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::postgres::{PgError, quote_ident};

/// One copied table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableCopy {
    /// `schema.table` as it lives.
    pub schema: String,
    pub table: String,
    /// Its name in the restore point's schema.
    pub copy: String,
    pub columns: Vec<String>,
    pub rows: i64,
}

/// A restore point of selected tables.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgTables {
    pub database: String,
    /// `cutover_rp_<release>`.
    pub schema: String,
    /// `cutover_failed_<release>`, where a restore sets the live rows aside.
    pub failed_schema: String,
    pub tables: Vec<TableCopy>,
    /// Bytes of the tables (with indexes) when copied.
    pub bytes: i64,
}

fn sql(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> PgError {
    let what = what.into();
    move |source| PgError::Sql { what, source }
}

/// `schema.table` or `table` (in `public`).
fn split(name: &str) -> (String, String) {
    match name.split_once('.') {
        Some((s, t)) => (s.to_string(), t.to_string()),
        None => ("public".to_string(), name.to_string()),
    }
}

async fn columns(client: &Client, schema: &str, table: &str) -> Result<Vec<String>, PgError> {
    let rows = client
        .query(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
            &[&schema, &table],
        )
        .await
        .map_err(sql(format!("cannot read the columns of {schema}.{table}")))?;
    Ok(rows.into_iter().map(|r| r.get(0)).collect())
}

/// Size of the tables with their indexes, for the disk-space preflight.
pub async fn size_of(client: &Client, tables: &[String]) -> Result<i64, PgError> {
    let mut total = 0;
    for t in tables {
        let (schema, table) = split(t);
        let row = client
            .query_one(
                "SELECT pg_total_relation_size(format('%I.%I', $1::text, $2::text)::regclass)",
                &[&schema, &table],
            )
            .await
            .map_err(sql(format!("table {schema}.{table} cannot be read")))?;
        total += row.get::<_, i64>(0);
    }
    Ok(total)
}

/// Copies `tables` into `cutover_rp_<release>` (replacing what an interrupted run left).
pub async fn take(
    client: &mut Client,
    database: &str,
    tables: &[String],
    release: u64,
) -> Result<PgTables, PgError> {
    let schema = format!("cutover_rp_{release}");
    let bytes = size_of(client, tables).await?;
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .map_err(sql("cannot begin the copy"))?;
    tx.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS {s} CASCADE; CREATE SCHEMA {s};",
        s = quote_ident(&schema)
    ))
    .await
    .map_err(sql(format!("cannot create schema {schema}")))?;
    let mut copies = Vec::new();
    for t in tables {
        let (s, table) = split(t);
        let copy = format!("{s}__{table}");
        let cols = columns(tx.client(), &s, &table).await?;
        if cols.is_empty() {
            return Err(PgError::Invalid(format!(
                "table {s}.{table} does not exist in `{database}`"
            )));
        }
        tx.batch_execute(&format!(
            "CREATE TABLE {rp}.{c} (LIKE {s}.{t} INCLUDING ALL); INSERT INTO {rp}.{c} SELECT * FROM {s}.{t};",
            rp = quote_ident(&schema),
            c = quote_ident(&copy),
            s = quote_ident(&s),
            t = quote_ident(&table)
        ))
        .await
        .map_err(sql(format!("cannot copy {s}.{table}")))?;
        let rows: i64 = tx
            .query_one(
                &format!(
                    "SELECT count(*) FROM {}.{}",
                    quote_ident(&schema),
                    quote_ident(&copy)
                ),
                &[],
            )
            .await
            .map_err(sql("cannot count the copied rows"))?
            .get(0);
        copies.push(TableCopy {
            schema: s,
            table,
            copy,
            columns: cols,
            rows,
        });
    }
    tx.commit().await.map_err(sql("cannot commit the copy"))?;
    Ok(PgTables {
        database: database.to_string(),
        failed_schema: format!("cutover_failed_{release}"),
        schema,
        tables: copies,
        bytes,
    })
}

/// Checks the copies are all there with the rows they were taken with.
pub async fn verify(client: &Client, rp: &PgTables) -> Result<(), PgError> {
    for t in &rp.tables {
        let rows: i64 = client
            .query_one(
                &format!(
                    "SELECT count(*) FROM {}.{}",
                    quote_ident(&rp.schema),
                    quote_ident(&t.copy)
                ),
                &[],
            )
            .await
            .map_err(sql(format!("the copy of {}.{} is gone", t.schema, t.table)))?
            .get(0);
        if rows != t.rows {
            return Err(PgError::Invalid(format!(
                "the copy of {}.{} holds {rows} rows, {} were copied: it was changed",
                t.schema, t.table, t.rows
            )));
        }
    }
    Ok(())
}

/// Puts the copied rows back (see the module documentation).
pub async fn restore(client: &mut Client, rp: &PgTables) -> Result<(), PgError> {
    verify(client, rp).await?;
    for t in &rp.tables {
        let live = columns(client, &t.schema, &t.table).await?;
        let lost: Vec<&String> = t.columns.iter().filter(|c| !live.contains(c)).collect();
        if !lost.is_empty() {
            return Err(PgError::Invalid(format!(
                "{}.{} no longer has column(s) {}: restoring its rows would lose them; restore the whole database instead",
                t.schema,
                t.table,
                lost.iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let tx = client
        .transaction()
        .await
        .map_err(sql("cannot begin the restore"))?;
    tx.batch_execute(&format!(
        "SET LOCAL session_replication_role = replica; DROP SCHEMA IF EXISTS {f} CASCADE; CREATE SCHEMA {f};",
        f = quote_ident(&rp.failed_schema)
    ))
    .await
    .map_err(sql("cannot prepare the restore"))?;
    for t in &rp.tables {
        let cols = t
            .columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        tx.batch_execute(&format!(
            "CREATE TABLE {f}.{c} AS TABLE {s}.{t}; DELETE FROM {s}.{t}; \
             INSERT INTO {s}.{t} ({cols}) SELECT {cols} FROM {rp}.{c};",
            f = quote_ident(&rp.failed_schema),
            c = quote_ident(&t.copy),
            s = quote_ident(&t.schema),
            t = quote_ident(&t.table),
            rp = quote_ident(&rp.schema),
        ))
        .await
        .map_err(sql(format!("cannot restore {}.{}", t.schema, t.table)))?;
    }
    tx.commit().await.map_err(sql("cannot commit the restore"))
}

/// Drops the restore point's schema (and the failed rows, with `failed`).
pub async fn drop(client: &Client, rp: &PgTables, failed: bool) -> Result<(), PgError> {
    let mut stmt = format!("DROP SCHEMA IF EXISTS {} CASCADE;", quote_ident(&rp.schema));
    if failed {
        stmt.push_str(&format!(
            " DROP SCHEMA IF EXISTS {} CASCADE;",
            quote_ident(&rp.failed_schema)
        ));
    }
    client
        .batch_execute(&stmt)
        .await
        .map_err(sql("cannot drop the restore point's schema"))
}
