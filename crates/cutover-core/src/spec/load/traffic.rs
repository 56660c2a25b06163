//! `traffic:`: the proxy's listener, routes and timeouts.

use super::*;

impl Cx {
    pub(super) fn traffic(&mut self, t: &RawTraffic, vars: &Vars) -> Traffic {
        let listen = match &t.listen {
            Some(l) => match self.plain(l, vars) {
                Some(v) if v.parse::<std::net::SocketAddr>().is_ok() => v,
                Some(v) => {
                    self.error(
                        DiagKind::InvalidValue,
                        l.at,
                        format!("`{v}` is not an address to listen on"),
                    )
                    .hint = Some("write IP:PORT, e.g. 0.0.0.0:8080".into());
                    v
                }
                None => String::new(),
            },
            None => "127.0.0.1:8080".to_string(),
        };
        let routes = t
            .routes
            .iter()
            .filter_map(|r| {
                let Some(service) = &r.service else {
                    let at = r
                        .host
                        .as_ref()
                        .or(r.path.as_ref())
                        .map_or_else(|| self.key_at(&["traffic", "routes"]), |t| t.at);
                    self.error(DiagKind::Missing, at, "a route needs `service`");
                    return None;
                };
                Some(Route {
                    host: r.host.as_ref().and_then(|h| self.plain(h, vars)),
                    path: r.path.as_ref().and_then(|p| self.plain(p, vars)),
                    service: service.value.clone(),
                })
            })
            .collect();
        Traffic {
            listen,
            routes,
            max_hold: self.duration(t.max_hold.as_ref(), vars, Duration::from_secs(10)),
            maintenance_page: t
                .maintenance_page
                .as_ref()
                .and_then(|p| self.plain(p, vars))
                .map(|p| self.resolve_path(&p).display().to_string()),
            tls: t.tls.as_ref().and_then(|tls| {
                let path = |cx: &mut Self, v: &Option<Text>, what: &str| match v {
                    Some(v) => cx
                        .plain(v, vars)
                        .map(|p| cx.resolve_path(&p).display().to_string()),
                    None => {
                        let at = cx.key_at(&["traffic", "tls"]);
                        cx.error(DiagKind::Missing, at, format!("`tls` needs `{what}`"))
                            .hint =
                            Some("cert: a PEM certificate chain; key: its private key".into());
                        None
                    }
                };
                let cert = path(self, &tls.cert, "cert");
                let key = path(self, &tls.key, "key");
                Some(crate::spec::Tls {
                    cert: cert?,
                    key: key?,
                })
            }),
        }
    }
}
