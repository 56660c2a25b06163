//! `cutover-demo`: a small stateful web app for exercising cutover end to end.
//!
//! Each app version (`DEMO_VERSION=v1`, `v2`, `v3`) wants the schema version of its number and
//! migrates its SQLite database up to it on start. Faults switched on by environment variables
//! make it unhealthy, crash, start slowly or leave a migration half applied, so every failure
//! path of an upgrade can be played out against real containers. See `config.rs` for the
//! variables.
//!
//! `cutover-demo` serves until SIGTERM or SIGINT; `cutover-demo probe <url>` is the image's
//! health check.
//!
//! Exit codes: 0 after a graceful shutdown, 1 on an error (bad configuration, database,
//! migration, listening), 70 for `DEMO_CRASH_AFTER`, 71 for `DEMO_BREAK_MIGRATION`.

mod config;
mod log;
mod migrate;
mod probe;
mod server;

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;

use tokio::signal::unix::{SignalKind, signal};

use crate::config::Config;
use crate::log::log;
use crate::migrate::Outcome;

/// Exit code of the `DEMO_CRASH_AFTER` fault.
const EXIT_CRASH: u8 = 70;
/// Exit code of the `DEMO_BREAK_MIGRATION` fault.
const EXIT_BROKEN_MIGRATION: u8 = 71;

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    match args.first().map(|a| a.to_string_lossy()) {
        None => serve(),
        Some(cmd) if cmd == "probe" => probe::main(args.get(1..).unwrap_or_default()),
        Some(cmd) if cmd == "migrate" => migrate_only(),
        Some(cmd) if cmd == "-h" || cmd == "--help" => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("cutover-demo: unknown argument {other:?}\n\n{USAGE}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "\
usage: cutover-demo              serve (configured by DEMO_* environment variables)
       cutover-demo migrate      migrate the database to DEMO_VERSION's schema, then exit
       cutover-demo probe URL    GET http://IP:PORT/PATH; exit 0 on 2xx, 1 otherwise

environment: DEMO_VERSION (required, v1, v2, ...), DEMO_LISTEN (0.0.0.0:8080),
DEMO_DB (/data/demo.sqlite); faults: DEMO_FAIL_HEALTH=1, DEMO_CRASH_AFTER=<seconds>,
DEMO_SLOW_START=<seconds>, DEMO_BREAK_MIGRATION=1, DEMO_IGNORE_SIGTERM=1,
DEMO_LOG_AT_START=<text>";

/// `cutover-demo migrate`: what a real app's `db upgrade` command does — migrate the
/// database to the version's schema and exit (0; 71 for `DEMO_BREAK_MIGRATION`).
fn migrate_only() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            log!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(line) = &config.faults.log_at_start {
        log!("{line}");
    }
    let result = migrate::open(&config.db).and_then(|mut conn| {
        migrate::migrate(
            &mut conn,
            config.schema,
            config.faults.break_migration,
            |line| log!("{line}"),
        )
    });
    match result {
        Ok(Outcome::Migrated { .. } | Outcome::Ahead { .. }) => {
            log!("cutover-demo {} migrate: done", config.version);
            ExitCode::SUCCESS
        }
        Ok(Outcome::Broken { version }) => {
            log!("error: migration {version} died halfway (DEMO_BREAK_MIGRATION)");
            ExitCode::from(EXIT_BROKEN_MIGRATION)
        }
        Err(e) => {
            log!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The server mode: configure, migrate, serve until a signal.
fn serve() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            log!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // One thread is plenty for a demo; database work runs on tokio's blocking pool.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            log!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(code) => code,
        Err(e) => {
            log!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A future that completes with the name of the first shutdown signal received.
type ShutdownSignal = Pin<Box<dyn Future<Output = &'static str> + Send>>;

/// Installs the SIGTERM and SIGINT handlers. This must happen before anything slow: as PID 1
/// in a container the process gets no default signal handling from the kernel, and a SIGTERM
/// without a handler would be ignored until Docker gives up and kills it.
///
/// With `ignore_sigterm` (the `DEMO_IGNORE_SIGTERM` fault) only SIGINT is handled.
fn shutdown_signal(ignore_sigterm: bool) -> Result<ShutdownSignal, String> {
    let mut term = if ignore_sigterm {
        None
    } else {
        Some(signal(SignalKind::terminate()).map_err(|e| format!("cannot handle SIGTERM: {e}"))?)
    };
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| format!("cannot handle SIGINT: {e}"))?;
    Ok(Box::pin(async move {
        let term = async {
            match term.as_mut() {
                Some(term) => term.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = term => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    }))
}

async fn run(config: Config) -> Result<ExitCode, String> {
    let mut shutdown = shutdown_signal(config.faults.ignore_sigterm)?;
    let Config {
        version,
        schema,
        listen,
        db,
        faults,
    } = config;
    log!(
        "cutover-demo {version} starting: schema version {schema}, database {}, listen {listen}",
        db.display()
    );

    if faults.ignore_sigterm {
        log!("DEMO_IGNORE_SIGTERM: SIGTERM is ignored; stop with SIGINT or SIGKILL");
    }
    if let Some(line) = &faults.log_at_start {
        log!("{line}");
    }

    if let Some(after) = faults.crash_after {
        log!("DEMO_CRASH_AFTER: will crash {after:?} after start");
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            log!("DEMO_CRASH_AFTER: crashing now, exit code {EXIT_CRASH}");
            std::process::exit(i32::from(EXIT_CRASH));
        });
    }

    // Migrations are short and must finish before anything is served, so they run right here.
    let mut conn = migrate::open(&db)?;
    match migrate::migrate(&mut conn, schema, faults.break_migration, |line| {
        log!("{line}")
    })? {
        Outcome::Migrated { .. } | Outcome::Ahead { .. } => {}
        Outcome::Broken { version } => {
            log!(
                "error: migration {version} died halfway (DEMO_BREAK_MIGRATION); \
                 exiting with code {EXIT_BROKEN_MIGRATION}, the schema half applied"
            );
            return Ok(ExitCode::from(EXIT_BROKEN_MIGRATION));
        }
    }

    if let Some(delay) = faults.slow_start {
        log!("DEMO_SLOW_START: waiting {delay:?} before listening");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            name = &mut shutdown => {
                log!("received {name} while starting, exiting");
                return Ok(ExitCode::SUCCESS);
            }
        }
    }

    if faults.fail_health {
        log!("DEMO_FAIL_HEALTH: /health will answer 500");
    }
    let app = server::router(server::AppState::new(
        version.clone(),
        schema,
        faults.fail_health,
        conn,
    ));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    log!("cutover-demo {version} listening on {listen}");

    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let name = shutdown.await;
            log!("received {name}, finishing in-flight requests");
        })
        .await
        .map_err(|e| format!("server: {e}"))?;
    log!("cutover-demo {version} stopped");
    Ok(ExitCode::SUCCESS)
}
