//! Takes or restores a PostgreSQL restore point outside of an upgrade: for the benchmark
//! (`bench/restore_points`) and the crash test, which time and kill the real code path.
//!
//! usage: pg-restore-point take ADMIN_URL DATABASE RELEASE > rp.json
//!        pg-restore-point restore ADMIN_URL rp.json
//!
//! Prints one JSON line: how long it took (milliseconds) and, for `take`, the record that
//! `restore` reads back.

use std::process::ExitCode;
use std::time::Instant;

use cutover_data::postgres::{Admin, PgCopy, PgError};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pg-restore-point: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match args.as_slice() {
            [verb, url, db, release] if verb == "take" => {
                let release: u64 = release
                    .parse()
                    .map_err(|_| PgError::Invalid("RELEASE must be a number".into()))?;
                let admin = Admin::connect(url, db).await?;
                let started = Instant::now();
                let rp = admin.take(db, release).await?;
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                Ok(serde_json::json!({ "op": "take", "ms": ms, "restore_point": rp }).to_string())
            }
            [verb, url, file] if verb == "restore" => {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| PgError::Invalid(format!("cannot read {file}: {e}")))?;
                let v: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| PgError::Invalid(format!("{file}: {e}")))?;
                let rp: PgCopy = serde_json::from_value(v["restore_point"].clone())
                    .map_err(|e| PgError::Invalid(format!("{file}: {e}")))?;
                let mut admin = Admin::connect(url, &rp.database).await?;
                let started = Instant::now();
                let report = admin.restore(&rp).await?;
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                Ok(serde_json::json!({
                    "op": "restore",
                    "ms": ms,
                    "swap_ms": report.swap.as_secs_f64() * 1000.0,
                    "failed_copy": report.failed_copy,
                })
                .to_string())
            }
            _ => Err(PgError::Invalid(
                "usage: pg-restore-point take ADMIN_URL DATABASE RELEASE | restore ADMIN_URL FILE"
                    .into(),
            )),
        }
    });
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pg-restore-point: {e}");
            ExitCode::FAILURE
        }
    }
}
