//! `data:`: data sets (PostgreSQL, SQLite, volumes, directories), their writers and schema
//! versions.

use super::*;

impl Cx {
    pub(super) fn data_ref(&mut self, what: &str, t: &Text, raw: &RawStack) -> bool {
        if raw.data.contains_key(&t.value) {
            return true;
        }
        let names: Vec<&str> = raw.data.keys().map(String::as_str).collect();
        self.error(
            DiagKind::DanglingReference,
            t.at,
            format!("{what} names data `{}`, which is not defined", t.value),
        )
        .hint = Some(if names.is_empty() {
            "this stack declares no `data`".into()
        } else {
            format!("data: {}", names.join(", "))
        });
        false
    }

    pub(super) fn data(
        &mut self,
        name: &str,
        d: &RawData,
        vars: &Vars,
        raw: &RawStack,
    ) -> Option<DataSet> {
        let at = d_loc(d).unwrap_or_else(|| self.key_at(&["data", name]));
        let kinds = [d.postgres.is_some(), d.sqlite.is_some(), d.volume.is_some()];
        if kinds.iter().filter(|k| **k).count() != 1 {
            self.error(
                DiagKind::InvalidValue,
                at,
                format!("data `{name}` needs exactly one of `postgres`, `sqlite` or `volume`"),
            );
            return None;
        }
        let kind = if let Some(pg) = &d.postgres {
            let (Some(url), Some(db)) = (&pg.url, &pg.database) else {
                self.error(
                    DiagKind::Missing,
                    at,
                    format!("data `{name}`: postgres needs `url` and `database`"),
                )
                .hint = Some("url: ${DB_ADMIN_URL} (a secret), database: NAME".into());
                return None;
            };
            DataKind::Postgres {
                url: self.value(url, vars)?,
                database: self.plain(db, vars)?,
                tables: pg
                    .tables
                    .iter()
                    .flatten()
                    .filter_map(|t| self.plain(t, vars))
                    .collect(),
            }
        } else if let Some(sq) = &d.sqlite {
            let Some(p) = &sq.path else {
                self.error(
                    DiagKind::Missing,
                    at,
                    format!("data `{name}`: sqlite needs `path`"),
                );
                return None;
            };
            let p = self.plain(p, vars)?;
            DataKind::Sqlite {
                path: self.resolve_path(&p).display().to_string(),
            }
        } else {
            let v = d.volume.as_ref()?;
            match (&v.name, &v.path) {
                (Some(n), None) => {
                    let name = self.plain(n, vars)?;
                    DataKind::Volume {
                        name: self.compose_volumes.get(&name).cloned().unwrap_or(name),
                    }
                }
                (None, Some(p)) => {
                    let p = self.plain(p, vars)?;
                    DataKind::Directory {
                        path: self.resolve_path(&p).display().to_string(),
                    }
                }
                _ => {
                    self.error(
                        DiagKind::InvalidValue,
                        at,
                        format!("data `{name}`: a volume needs exactly one of `name` or `path`"),
                    );
                    return None;
                }
            }
        };
        let writers = match &d.writers {
            Some(ws) => ws
                .iter()
                .filter(|w| self.service_ref(&format!("data `{name}` writers"), w, raw))
                .map(|w| w.value.clone())
                .collect(),
            None => raw.services.keys().cloned().collect(),
        };
        let schema_version = match &d.schema_version {
            None => None,
            Some(sv) => {
                let Some(q) = &sv.query else {
                    self.error(
                        DiagKind::Missing,
                        at,
                        format!("data `{name}`: schema_version needs `query`"),
                    );
                    return None;
                };
                Some(SchemaVersion {
                    query: self.plain(q, vars)?,
                    expect: match &sv.expect {
                        Some(e) => Some(self.plain(e, vars)?),
                        None => None,
                    },
                })
            }
        };
        let v = d.volume.as_ref();
        let method = match v.and_then(|v| v.method.as_ref()) {
            None => CopyMethod::Snapshot,
            Some(m) => match self.plain(m, vars)?.as_str() {
                "snapshot" => CopyMethod::Snapshot,
                "archive" => CopyMethod::Archive,
                other => {
                    self.error(
                        DiagKind::InvalidValue,
                        m.at,
                        format!("data `{name}`: method `{other}` is not one of `snapshot`, `archive`"),
                    )
                    .hint = Some("snapshot: a clone on the volume's own filesystem (default); archive: tar+zstd in the state dir".into());
                    return None;
                }
            },
        };
        Some(DataSet {
            kind,
            writers,
            schema_version,
            method,
            durable: v.and_then(|v| v.durable.as_ref()).is_some_and(|d| d.value),
        })
    }

    /// A PostgreSQL data set is copied on its running server: the service that serves it
    /// (named by the URL's host, or publishing the URL's loopback port) must not be stopped
    /// with the writers. Left out of the default writers; an error when named.
    pub(super) fn writers_exclude_server(
        &mut self,
        name: &str,
        d: &RawData,
        ds: &mut DataSet,
        services: &IndexMap<String, Service>,
    ) {
        let DataKind::Postgres { url, .. } = &ds.kind else {
            return;
        };
        // The URL may be a secret as a whole (`${DB_ADMIN_URL}`): its value tells the host.
        let Some(server) = serving_service(url.expose().unwrap_or(url.shown()), services) else {
            return;
        };
        match &d.writers {
            None => ds.writers.retain(|w| *w != server),
            Some(ws) => {
                if let Some(w) = ws.iter().find(|w| w.value == server) {
                    self.error(
                        DiagKind::InvalidValue,
                        w.at,
                        format!(
                            "data `{name}` is served by `{server}` (its URL points there), which is among its writers: the restore point is copied on the running server, so stopping `{server}` first would make it fail"
                        ),
                    )
                    .hint = Some(format!(
                        "writers are the services that write to the database: remove `{server}`"
                    ));
                }
            }
        }
    }
}

pub(super) fn d_loc(d: &RawData) -> Option<Loc> {
    d.postgres
        .as_ref()
        .and_then(|p| p.url.as_ref().or(p.database.as_ref()))
        .or(d.sqlite.as_ref().and_then(|s| s.path.as_ref()))
        .or(d
            .volume
            .as_ref()
            .and_then(|v| v.name.as_ref().or(v.path.as_ref())))
        .map(|t| t.at)
}
