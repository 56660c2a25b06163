//! PostgreSQL restore points on the same server: a template copy, restored by a rename swap.
//!
//! Taking one (the stack's writers are stopped): forbid new connections to the database,
//! terminate the sessions left, `CREATE DATABASE <db>__rp_<release> TEMPLATE <db> STRATEGY
//! FILE_COPY` (a file-level copy: as fast as the disk, no SQL replay), allow connections
//! again. The copy itself is left with connections forbidden, so nothing writes to it.
//!
//! Restoring: forbid and terminate again, then in **one transaction** rename the live
//! database to `<db>__failed_<release>` and the copy to `<db>`. Renames touch only the
//! catalog, so the swap takes milliseconds whatever the size. What a template copy does not
//! carry — per-database settings (`pg_db_role_setting` is keyed by the database's OID), the
//! database ACL, the owner, `CONNECTION LIMIT` — was recorded when the restore point was
//! taken; it is applied to the swapped-in database and read back to verify.
//!
//! Limits, stated plainly: a swap drops every write made after the restore point (that is
//! the point); the copy lives on the same server, so it does not survive the loss of that
//! server (the durable dump is the answer to that); the admin connection needs `CREATEDB`
//! and the right to terminate sessions (a superuser, in practice). TLS is not used yet: the
//! admin URL must reach the server over a local socket or a trusted network.

use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_postgres::{Client, Config, NoTls};

/// Settings whose value is a list (GUC_LIST_QUOTE): stored as SQL list syntax.
const LIST_SETTINGS: &[&str] = &[
    "search_path",
    "temp_tablespaces",
    "session_preload_libraries",
    "shared_preload_libraries",
    "local_preload_libraries",
];

/// Identifiers PostgreSQL keeps (NAMEDATALEN - 1).
const MAX_IDENT: usize = 63;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("cannot connect to PostgreSQL ({target}): {source}")]
    Connect {
        target: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("{what}: {source}")]
    Sql {
        what: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

fn sql(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> PgError {
    let what = what.into();
    move |source| PgError::Sql { what, source }
}

/// What a restore point of a whole database records, to restore and verify it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgCopy {
    /// The live database.
    pub database: String,
    /// The copy: `<db>__rp_<release>`.
    pub copy: String,
    /// The copy's OID: a dropped and re-created copy of the same name is not this one.
    pub copy_oid: u32,
    /// Where the live database goes on restore: `<db>__failed_<release>`.
    pub failed_name: String,
    pub owner: String,
    /// `datacl` as text (`{=Tc/owner,app=c/owner}`), `None` for the default.
    pub acl: Option<String>,
    pub connection_limit: i32,
    pub allow_connections: bool,
    /// `ALTER DATABASE … SET …` (role `None`) and `ALTER ROLE r IN DATABASE … SET …`:
    /// (role, `name=value` items).
    pub settings: Vec<(Option<String>, Vec<String>)>,
    pub size_bytes: i64,
    pub server_version: i32,
}

/// An admin connection, to the maintenance database (never the one being copied: a
/// template must have no sessions).
pub struct Admin {
    client: Client,
    target: String,
}

/// The URL's connection settings with the password left out, for messages.
fn describe(cfg: &Config) -> String {
    let hosts: Vec<String> = cfg
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .collect();
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    format!(
        "host {} port {port} user {}",
        hosts.join(","),
        cfg.get_user().unwrap_or("?")
    )
}

/// A connection to `database` itself (for table restore points and SQL steps).
pub async fn connect_db(url: &str, database: &str) -> Result<Client, PgError> {
    let mut cfg = parse_url(url)?;
    cfg.dbname(database);
    connect_cfg(&cfg).await
}

async fn connect_cfg(cfg: &Config) -> Result<Client, PgError> {
    let (client, conn) = cfg
        .connect(NoTls)
        .await
        .map_err(|source| PgError::Connect {
            target: describe(cfg),
            source,
        })?;
    // The connection runs beside the client until the client is dropped.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

fn parse_url(url: &str) -> Result<Config, PgError> {
    Config::from_str(url).map_err(|e| {
        // The error text of a malformed URL can quote it; keep a password out of it.
        let _ = e;
        PgError::Invalid(
            "the PostgreSQL admin URL cannot be parsed (it is not printed: it may hold a password)"
                .into(),
        )
    })
}

fn check_ident(name: &str) -> Result<(), PgError> {
    if name.is_empty() || name.len() > MAX_IDENT {
        return Err(PgError::Invalid(format!(
            "database name `{name}` must be 1 to {MAX_IDENT} bytes (restore point names add a suffix to the database name)"
        )));
    }
    Ok(())
}

/// `"name"`, quoted for SQL.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

impl Admin {
    /// Connects with `url` to its maintenance database: `postgres`, or `template1` when the
    /// URL names `postgres` as the database to copy.
    pub async fn connect(url: &str, database: &str) -> Result<Admin, PgError> {
        let mut cfg = parse_url(url)?;
        let maintenance = if database == "postgres" {
            "template1"
        } else {
            "postgres"
        };
        cfg.dbname(maintenance);
        let client = connect_cfg(&cfg).await?;
        Ok(Admin {
            client,
            target: describe(&cfg),
        })
    }

    /// Where this connects, without the password.
    pub fn target(&self) -> &str {
        &self.target
    }

    async fn server_version(&self) -> Result<i32, PgError> {
        let row = self
            .client
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .await
            .map_err(sql("cannot read the server version"))?;
        Ok(row.get(0))
    }

    /// The OID of a database, if it exists.
    pub async fn oid_of(&self, database: &str) -> Result<Option<u32>, PgError> {
        let row = self
            .client
            .query_opt(
                "SELECT oid FROM pg_database WHERE datname = $1",
                &[&database],
            )
            .await
            .map_err(sql(format!("cannot look up database `{database}`")))?;
        Ok(row.map(|r| r.get::<_, u32>(0)))
    }

    /// Size on disk, for the disk-space preflight.
    pub async fn size_of(&self, database: &str) -> Result<i64, PgError> {
        let row = self
            .client
            .query_one("SELECT pg_database_size($1::name)", &[&database])
            .await
            .map_err(sql(format!("cannot read the size of `{database}`")))?;
        Ok(row.get(0))
    }

    /// The server's data directory, when this user may read it (superusers), for a local
    /// free-space check.
    pub async fn data_directory(&self) -> Option<String> {
        self.client
            .query_one("SELECT current_setting('data_directory')", &[])
            .await
            .ok()
            .map(|r| r.get(0))
    }

    /// Lets connections into a restore point's copy (for `pg_dump`) or shuts them out again.
    pub async fn open_copy(&self, rp: &PgCopy, open: bool) -> Result<(), PgError> {
        self.allow_connections(&rp.copy, open).await
    }

    async fn allow_connections(&self, database: &str, allow: bool) -> Result<(), PgError> {
        self.client
            .batch_execute(&format!(
                "ALTER DATABASE {} WITH ALLOW_CONNECTIONS {allow}",
                quote_ident(database)
            ))
            .await
            .map_err(sql(format!(
                "cannot set ALLOW_CONNECTIONS {allow} on `{database}`"
            )))
    }

    async fn terminate_sessions(&self, database: &str) -> Result<u64, PgError> {
        terminate_sessions(&self.client, database).await
    }

    async fn describe_database(&self, database: &str) -> Result<DbFacts, PgError> {
        let row = self
            .client
            .query_opt(
                "SELECT d.oid, pg_get_userbyid(d.datdba), d.datacl::text, d.datconnlimit, d.datallowconn \
                 FROM pg_database d WHERE d.datname = $1",
                &[&database],
            )
            .await
            .map_err(sql(format!("cannot read database `{database}`")))?
            .ok_or_else(|| PgError::Invalid(format!("database `{database}` does not exist")))?;
        let oid: u32 = row.get(0);
        let settings = self
            .client
            .query(
                "SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END, s.setconfig \
                 FROM pg_db_role_setting s WHERE s.setdatabase = $1 ORDER BY 1 NULLS FIRST",
                &[&oid],
            )
            .await
            .map_err(sql(format!("cannot read the settings of `{database}`")))?
            .into_iter()
            .map(|r| (r.get::<_, Option<String>>(0), r.get::<_, Vec<String>>(1)))
            .collect();
        Ok(DbFacts {
            oid,
            owner: row.get(1),
            acl: row.get(2),
            connection_limit: row.get(3),
            allow_connections: row.get(4),
            settings,
        })
    }

    /// Drops a database if it exists, ending its sessions.
    pub async fn drop_database(&self, database: &str) -> Result<bool, PgError> {
        if self.oid_of(database).await?.is_none() {
            return Ok(false);
        }
        let version = self.server_version().await?;
        let force = if version >= 130_000 {
            " WITH (FORCE)"
        } else {
            ""
        };
        self.client
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {}{force}",
                quote_ident(database)
            ))
            .await
            .map_err(sql(format!("cannot drop `{database}`")))?;
        Ok(true)
    }

    /// Takes the restore point of `database` for `release`. A copy of that name left by an
    /// interrupted run is dropped first: it was never recorded as complete.
    pub async fn take(&self, database: &str, release: u64) -> Result<PgCopy, PgError> {
        let copy = format!("{database}__rp_{release}");
        let failed_name = format!("{database}__failed_{release}");
        check_ident(&copy)?;
        check_ident(&failed_name)?;
        let version = self.server_version().await?;
        let facts = self.describe_database(database).await?;
        self.drop_database(&copy).await?;
        let size_bytes = self.size_of(database).await?;

        // The writers are stopped; end whatever else is connected (a template must have no
        // sessions) and copy. A client that reconnects in between makes the copy fail with
        // "being accessed by other users": end it and try again. The live database itself
        // is never altered, so a crash here leaves it as it was.
        let strategy = if version >= 150_000 {
            " STRATEGY FILE_COPY"
        } else {
            ""
        };
        let create = format!(
            "CREATE DATABASE {} TEMPLATE {} OWNER {}{strategy}",
            quote_ident(&copy),
            quote_ident(database),
            quote_ident(&facts.owner)
        );
        retry_busy(|| async {
            self.terminate_sessions(database).await?;
            self.client
                .batch_execute(&create)
                .await
                .map_err(sql(format!("cannot copy `{database}` to `{copy}`")))
        })
        .await?;
        // Nothing may write to the copy: it is the restore point.
        self.allow_connections(&copy, false).await?;
        let copy_oid = self
            .oid_of(&copy)
            .await?
            .ok_or_else(|| PgError::Invalid(format!("the copy `{copy}` vanished")))?;
        Ok(PgCopy {
            database: database.to_string(),
            copy,
            copy_oid,
            failed_name,
            owner: facts.owner,
            acl: facts.acl,
            connection_limit: facts.connection_limit,
            allow_connections: facts.allow_connections,
            settings: facts.settings,
            size_bytes,
            server_version: version,
        })
    }

    /// Checks the copy is still the one recorded (same name, same OID, no connections).
    pub async fn verify(&self, rp: &PgCopy) -> Result<(), PgError> {
        match self.oid_of(&rp.copy).await? {
            None => Err(PgError::Invalid(format!(
                "the restore point `{}` is gone from the server",
                rp.copy
            ))),
            Some(oid) if oid != rp.copy_oid => Err(PgError::Invalid(format!(
                "`{}` is not the restore point that was taken (OID {oid}, recorded {}): it was dropped and re-created",
                rp.copy, rp.copy_oid
            ))),
            Some(_) => Ok(()),
        }
    }

    /// Puts the restore point back: the live database becomes `<db>__failed_<release>`
    /// (kept for inspection), the copy becomes `<db>`, in one transaction. Then the
    /// database-level facts are applied and read back.
    pub async fn restore(&mut self, rp: &PgCopy) -> Result<SwapReport, PgError> {
        // Run again after a crash: the swap may have happened already.
        let swapped = self.oid_of(&rp.copy).await?.is_none()
            && self.oid_of(&rp.database).await? == Some(rp.copy_oid);
        let mut swap = Duration::ZERO;
        let live_exists = if swapped {
            self.oid_of(&rp.failed_name).await?.is_some()
        } else {
            self.verify(rp).await?;
            if self.oid_of(&rp.failed_name).await?.is_some() {
                return Err(PgError::Invalid(format!(
                    "`{}` exists already (an earlier revert's failed copy): drop or rename it first",
                    rp.failed_name
                )));
            }
            let live_exists = self.oid_of(&rp.database).await?.is_some();
            let aside = format!(
                "ALTER DATABASE {} RENAME TO {}",
                quote_ident(&rp.database),
                quote_ident(&rp.failed_name)
            );
            let into_place = format!(
                "ALTER DATABASE {} RENAME TO {}",
                quote_ident(&rp.copy),
                quote_ident(&rp.database)
            );
            let started = Instant::now();
            let client = &mut self.client;
            let mut attempt = 0;
            loop {
                attempt += 1;
                if live_exists {
                    terminate_sessions(client, &rp.database).await?;
                }
                let tx = client
                    .transaction()
                    .await
                    .map_err(sql("cannot begin the swap"))?;
                let result = async {
                    if live_exists {
                        tx.batch_execute(&aside)
                            .await
                            .map_err(sql(format!("cannot rename `{}` aside", rp.database)))?;
                    }
                    tx.batch_execute(&into_place)
                        .await
                        .map_err(sql(format!("cannot rename `{}` into place", rp.copy)))?;
                    tx.commit().await.map_err(sql("cannot commit the swap"))
                }
                .await;
                match result {
                    Ok(()) => break,
                    Err(e) if is_busy(&e) && attempt < BUSY_ATTEMPTS => continue,
                    Err(e) => return Err(e),
                }
            }
            swap = started.elapsed();
            live_exists
        };

        self.apply_facts(rp).await?;
        if live_exists {
            // The failed copy stays for inspection; let people in to look.
            self.allow_connections(&rp.failed_name, true).await?;
        }
        let facts = self.describe_database(&rp.database).await?;
        let mut differs = Vec::new();
        if facts.owner != rp.owner {
            differs.push(format!("owner {} (want {})", facts.owner, rp.owner));
        }
        if facts.acl != rp.acl {
            differs.push(format!("ACL {:?} (want {:?})", facts.acl, rp.acl));
        }
        if facts.settings != rp.settings {
            differs.push(format!(
                "settings {:?} (want {:?})",
                facts.settings, rp.settings
            ));
        }
        if facts.connection_limit != rp.connection_limit
            || facts.allow_connections != rp.allow_connections
        {
            differs.push("connection settings".into());
        }
        if !differs.is_empty() {
            return Err(PgError::Invalid(format!(
                "`{}` was swapped back, but its database-level settings differ from before: {}",
                rp.database,
                differs.join("; ")
            )));
        }
        Ok(SwapReport {
            swap,
            failed_copy: live_exists.then(|| rp.failed_name.clone()),
        })
    }

    /// Owner, ACL, connection limit and per-database settings onto the swapped-in database.
    async fn apply_facts(&self, rp: &PgCopy) -> Result<(), PgError> {
        let db = quote_ident(&rp.database);
        let mut stmts = vec![
            format!("ALTER DATABASE {db} OWNER TO {}", quote_ident(&rp.owner)),
            format!(
                "ALTER DATABASE {db} WITH CONNECTION LIMIT {}",
                rp.connection_limit
            ),
            format!(
                "ALTER DATABASE {db} WITH ALLOW_CONNECTIONS {}",
                rp.allow_connections
            ),
        ];
        for (role, items) in &rp.settings {
            for item in items {
                let Some((name, value)) = item.split_once('=') else {
                    continue;
                };
                let target = match role {
                    Some(r) => format!("ROLE {} IN DATABASE {db}", quote_ident(r)),
                    None => format!("DATABASE {db}"),
                };
                // List settings are stored in SQL list syntax already (`public, "$user"`);
                // quoting them as one literal would make them a one-element list.
                let value = if LIST_SETTINGS.contains(&name) {
                    value.to_string()
                } else {
                    quote_literal(value)
                };
                stmts.push(format!(
                    "ALTER {target} SET {} = {value}",
                    quote_ident(name)
                ));
            }
        }
        if let Some(acl) = &rp.acl {
            stmts.push(format!("REVOKE ALL ON DATABASE {db} FROM PUBLIC"));
            for item in parse_acl(acl)? {
                let grantee = if item.grantee.is_empty() {
                    "PUBLIC".to_string()
                } else {
                    quote_ident(&item.grantee)
                };
                if item.grantee == rp.owner {
                    continue; // the owner's rights are implicit in ownership
                }
                for (privilege, grant_option) in item.privileges {
                    stmts.push(format!(
                        "GRANT {privilege} ON DATABASE {db} TO {grantee}{}",
                        if grant_option {
                            " WITH GRANT OPTION"
                        } else {
                            ""
                        }
                    ));
                }
            }
        }
        for s in stmts {
            self.client.batch_execute(&s).await.map_err(sql(format!(
                "cannot restore a setting of `{}`",
                rp.database
            )))?;
        }
        Ok(())
    }

    /// Reads the schema version with `query` on `database` (first column of the first row,
    /// as text).
    pub async fn schema_version(
        url: &str,
        database: &str,
        query: &str,
    ) -> Result<Option<String>, PgError> {
        let mut cfg = parse_url(url)?;
        cfg.dbname(database);
        let client = connect_cfg(&cfg).await?;
        let msgs = client.simple_query(query).await.map_err(sql(format!(
            "the schema version query failed on `{database}`"
        )))?;
        Ok(msgs.into_iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        }))
    }
}

/// Runs `sql` (one or more statements) on `database`, for a stack file's `sql` step.
pub async fn execute(url: &str, database: &str, sql_text: &str) -> Result<(), PgError> {
    let mut cfg = parse_url(url)?;
    cfg.dbname(database);
    let client = connect_cfg(&cfg).await?;
    client
        .batch_execute(sql_text)
        .await
        .map_err(sql(format!("the SQL step failed on `{database}`")))
}

struct DbFacts {
    #[allow(dead_code)]
    oid: u32,
    owner: String,
    acl: Option<String>,
    connection_limit: i32,
    allow_connections: bool,
    settings: Vec<(Option<String>, Vec<String>)>,
}

/// How a swap went.
#[derive(Clone, Debug)]
pub struct SwapReport {
    /// The rename transaction alone.
    pub swap: Duration,
    /// The live database as it was, renamed aside.
    pub failed_copy: Option<String>,
}

struct AclItem {
    grantee: String,
    privileges: Vec<(&'static str, bool)>,
}

/// `{=Tc/owner,app=c*/owner}` → items. Database privileges are C (CREATE), c (CONNECT) and
/// T (TEMPORARY); `*` after one marks the grant option.
fn parse_acl(acl: &str) -> Result<Vec<AclItem>, PgError> {
    let inner = acl.trim().trim_start_matches('{').trim_end_matches('}');
    let mut out = Vec::new();
    for raw in inner.split(',').filter(|s| !s.is_empty()) {
        let raw = raw.trim_matches('"');
        let (grantee, rest) = raw
            .split_once('=')
            .ok_or_else(|| PgError::Invalid(format!("unreadable ACL item `{raw}`")))?;
        let privs = rest.split('/').next().unwrap_or("");
        let mut privileges = Vec::new();
        let chars: Vec<char> = privs.chars().collect();
        for (i, c) in chars.iter().enumerate() {
            let name = match c {
                'C' => "CREATE",
                'c' => "CONNECT",
                'T' => "TEMPORARY",
                '*' => continue,
                other => {
                    return Err(PgError::Invalid(format!(
                        "unknown database privilege `{other}` in ACL item `{raw}`"
                    )));
                }
            };
            privileges.push((name, chars.get(i + 1) == Some(&'*')));
        }
        out.push(AclItem {
            grantee: grantee.trim_matches('"').to_string(),
            privileges,
        });
    }
    Ok(out)
}

/// How often a copy or a swap is tried when a client reconnects in between.
const BUSY_ATTEMPTS: u32 = 5;

/// "source database is being accessed by other users" (55006, object_in_use).
fn is_busy(e: &PgError) -> bool {
    matches!(e, PgError::Sql { source, .. }
        if source.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE))
}

async fn retry_busy<F, Fut>(mut f: F) -> Result<(), PgError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), PgError>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match f().await {
            Err(e) if is_busy(&e) && attempt < BUSY_ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

/// Ends every session on `database` and waits until they are gone (a terminated backend
/// takes a moment to exit, and a template copy or a rename refuses while any remains).
async fn terminate_sessions(client: &Client, database: &str) -> Result<u64, PgError> {
    let ended = client
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&database],
        )
        .await
        .map_err(sql(format!("cannot end the sessions on `{database}`")))?
        .len() as u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&database],
            )
            .await
            .map_err(sql("cannot count sessions"))?
            .get(0);
        if left == 0 {
            return Ok(ended);
        }
        if Instant::now() > deadline {
            return Err(PgError::Invalid(format!(
                "{left} session(s) on `{database}` did not end within 10s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_items_become_grants() {
        let items = parse_acl("{=Tc/postgres,postgres=CTc/postgres,app=c*/postgres}").expect("acl");
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].grantee, "");
        assert_eq!(
            items[0].privileges,
            vec![("TEMPORARY", false), ("CONNECT", false)]
        );
        assert_eq!(items[2].grantee, "app");
        assert_eq!(items[2].privileges, vec![("CONNECT", true)]);
        assert!(parse_acl("{x=Q/y}").is_err());
    }

    #[test]
    fn identifiers_are_quoted_and_bounded() {
        assert_eq!(quote_ident(r#"we"ird"#), r#""we""ird""#);
        assert!(check_ident(&"x".repeat(64)).is_err());
        assert!(check_ident("grouper__rp_12").is_ok());
    }

    #[test]
    fn a_malformed_url_is_refused_without_echoing_it() {
        let err = parse_url("postgres://u:hunter2@[bad").expect_err("invalid");
        assert!(!err.to_string().contains("hunter2"));
    }
}
