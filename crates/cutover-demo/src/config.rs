//! The app's configuration, read from the environment only: the Docker images bake the
//! version in with `ENV`, and a stack file adds faults with `environment:`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where the app listens unless `DEMO_LISTEN` says otherwise.
const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// The database file unless `DEMO_DB` says otherwise.
const DEFAULT_DB: &str = "/data/demo.sqlite";

/// Everything the server needs to start.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `DEMO_VERSION` as given, e.g. `v2`: what `GET /version` answers.
    pub version: String,
    /// The schema version this app version wants: the number after the `v`.
    pub schema: u32,
    /// `DEMO_LISTEN`: an IP address and port. Never a host name, so the app does no DNS
    /// lookups (a static glibc binary cannot do them reliably).
    pub listen: SocketAddr,
    /// `DEMO_DB`: the SQLite file; its parent directory is created if missing.
    pub db: PathBuf,
    /// The faults switched on, to exercise cutover's failure paths.
    pub faults: Faults,
}

/// Faults a stack file (or an image) can switch on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// `DEMO_FAIL_HEALTH=1`: `/health` answers 500.
    pub fail_health: bool,
    /// `DEMO_CRASH_AFTER=<seconds>`: exit with code 70 that long after start.
    pub crash_after: Option<Duration>,
    /// `DEMO_SLOW_START=<seconds>`: wait that long before listening.
    pub slow_start: Option<Duration>,
    /// `DEMO_BREAK_MIGRATION=1`: apply the last migration halfway, then exit with code 71.
    pub break_migration: bool,
    /// `DEMO_IGNORE_SIGTERM=1`: install no SIGTERM handler. As PID 1 in a container the
    /// process then ignores SIGTERM, as many real servers do: a stop waits its whole grace
    /// period and ends in SIGKILL.
    pub ignore_sigterm: bool,
    /// `DEMO_LOG_AT_START=<text>`: log this line at start, as real apps log their connection
    /// URL (a stack passes one built from a secret, to check that cutover redacts it).
    pub log_at_start: Option<String>,
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config, String> {
        Config::from_lookup(|key| match std::env::var(key) {
            Ok(value) => Ok(Some(value)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(format!("{key} is not valid UTF-8")),
        })
    }

    /// Reads the configuration through `get`, which answers a variable's value (or `None` when
    /// it is unset). Kept apart from [`Config::from_env`] so tests need not touch the process
    /// environment.
    fn from_lookup(get: impl Fn(&str) -> Result<Option<String>, String>) -> Result<Config, String> {
        let version =
            get("DEMO_VERSION")?.ok_or("DEMO_VERSION is not set (expected v1, v2, v3, ...)")?;
        let schema = parse_version(&version)?;

        let listen = match get("DEMO_LISTEN")? {
            Some(text) => text.parse().map_err(|_| {
                format!("DEMO_LISTEN={text:?} is not an IP address and port, like {DEFAULT_LISTEN}")
            })?,
            None => DEFAULT_LISTEN
                .parse()
                .map_err(|_| format!("bad built-in default listen address {DEFAULT_LISTEN}"))?,
        };

        let db = get("DEMO_DB")?.map_or_else(|| PathBuf::from(DEFAULT_DB), PathBuf::from);

        let faults = Faults {
            fail_health: flag(&get, "DEMO_FAIL_HEALTH")?,
            crash_after: seconds(&get, "DEMO_CRASH_AFTER")?,
            slow_start: seconds(&get, "DEMO_SLOW_START")?,
            break_migration: flag(&get, "DEMO_BREAK_MIGRATION")?,
            ignore_sigterm: flag(&get, "DEMO_IGNORE_SIGTERM")?,
            log_at_start: get("DEMO_LOG_AT_START")?.filter(|t| !t.is_empty()),
        };

        Ok(Config {
            version,
            schema,
            listen,
            db,
            faults,
        })
    }
}

/// `v3` → 3. The version number is the schema version the app wants, so it must be at least 1.
fn parse_version(version: &str) -> Result<u32, String> {
    version
        .strip_prefix('v')
        .and_then(|digits| digits.parse::<u32>().ok())
        .filter(|&n| n >= 1)
        .ok_or_else(|| format!("DEMO_VERSION={version:?} is not v<number>, like v1, v2 or v3"))
}

/// A boolean switch: unset, empty, `0`, `false` or `no` is off; `1`, `true` or `yes` is on.
fn flag(get: &impl Fn(&str) -> Result<Option<String>, String>, key: &str) -> Result<bool, String> {
    match get(key)?.as_deref().map(str::trim) {
        None | Some("" | "0" | "false" | "no") => Ok(false),
        Some("1" | "true" | "yes") => Ok(true),
        Some(other) => Err(format!("{key}={other:?} is not 1 or 0")),
    }
}

/// A duration in (possibly fractional) seconds; unset or empty is `None`.
fn seconds(
    get: &impl Fn(&str) -> Result<Option<String>, String>,
    key: &str,
) -> Result<Option<Duration>, String> {
    match get(key)?.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => text
            .parse::<f64>()
            .ok()
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
            .map(Some)
            .ok_or_else(|| format!("{key}={text:?} is not a number of seconds")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, String> {
        Config::from_lookup(|key| {
            Ok(vars
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| (*v).to_owned()))
        })
    }

    #[test]
    fn defaults_and_version() {
        let c = config(&[("DEMO_VERSION", "v2")]).expect("valid config");
        assert_eq!(c.version, "v2");
        assert_eq!(c.schema, 2);
        assert_eq!(c.listen, "0.0.0.0:8080".parse().expect("address"));
        assert_eq!(c.db, PathBuf::from("/data/demo.sqlite"));
        assert_eq!(c.faults, Faults::default());
    }

    #[test]
    fn faults_are_read() {
        let c = config(&[
            ("DEMO_VERSION", "v3"),
            ("DEMO_FAIL_HEALTH", "1"),
            ("DEMO_CRASH_AFTER", "2.5"),
            ("DEMO_SLOW_START", "3"),
            ("DEMO_BREAK_MIGRATION", "true"),
        ])
        .expect("valid config");
        assert!(c.faults.fail_health);
        assert_eq!(c.faults.crash_after, Some(Duration::from_millis(2500)));
        assert_eq!(c.faults.slow_start, Some(Duration::from_secs(3)));
        assert!(c.faults.break_migration);
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(config(&[]).is_err());
        for version in ["2", "v", "v0", "vx", "V2"] {
            assert!(config(&[("DEMO_VERSION", version)]).is_err(), "{version}");
        }
        let bad = [
            ("DEMO_LISTEN", "localhost:8080"),
            ("DEMO_FAIL_HEALTH", "maybe"),
            ("DEMO_CRASH_AFTER", "-1"),
            ("DEMO_SLOW_START", "soon"),
        ];
        for (key, value) in bad {
            assert!(
                config(&[("DEMO_VERSION", "v1"), (key, value)]).is_err(),
                "{key}={value}"
            );
        }
    }
}
