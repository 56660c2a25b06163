//! Who is asking and what they may do: roles, the three ways in (a session cookie, an API
//! token, a trusted proxy's header), CSRF on every state-changing request that carries
//! ambient credentials, and the login rate limit.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Method, header};
use serde::{Deserialize, Serialize};

use crate::home::{Home, HomeError};

/// What a person may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything: stacks, plans, operations, history, restore points, the audit log.
    Viewer,
    /// And changes stacks: apply, rollback, maintenance, abort, resume, verify.
    Operator,
    /// And decides approvals (never of an operation they started).
    Approver,
    /// Everything.
    Admin,
}

/// One kind of thing a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Read,
    Change,
    Approve,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Operator, Role::Approver, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }

    pub fn may(self, p: Permission) -> bool {
        match p {
            Permission::Read => true,
            Permission::Change => matches!(self, Role::Operator | Role::Admin),
            Permission::Approve => matches!(self, Role::Approver | Role::Admin),
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not a role: viewer, operator, approver or admin"))
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a request was authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A session cookie (the id, to derive its CSRF token).
    Session(String),
    /// `Authorization: Bearer …`: no ambient credential, so no CSRF token is needed.
    Token,
    /// A trusted proxy's header.
    Header,
}

impl Via {
    pub fn as_str(&self) -> &'static str {
        match self {
            Via::Session(_) => "session",
            Via::Token => "token",
            Via::Header => "header",
        }
    }
}

/// The person (or token) behind a request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    pub via: Via,
    pub remote: String,
}

impl Principal {
    /// The CSRF token their forms carry: none for a token.
    pub fn csrf(&self, home: &Home) -> String {
        match &self.via {
            Via::Session(id) => home.csrf_token(id),
            Via::Header => home.csrf_token(&format!("header:{}", self.name)),
            Via::Token => String::new(),
        }
    }

    /// The name an operation it starts records as its starter (`CUTOVER_ACTOR`); an
    /// approval compares with it.
    pub fn actor(&self) -> String {
        self.name.clone()
    }
}

/// Signing in through an authenticating reverse proxy (oauth2-proxy, Authelia): off unless
/// configured, and believed only from the proxies named.
#[derive(Debug, Clone)]
pub struct TrustedHeader {
    /// e.g. `X-Forwarded-User`, `Remote-User`.
    pub header: String,
    /// The peers allowed to send it (default loopback).
    pub proxies: Vec<IpAddr>,
    /// The role of a name that is not a local user.
    pub default_role: Role,
}

/// Why a request is not let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// 401: no credentials, or wrong ones.
    Unauthenticated(&'static str),
    /// 403: known, but the role does not allow it.
    Forbidden(String),
    /// 403: a state-changing request without the CSRF token of its session.
    Csrf,
}

pub const SESSION_COOKIE: &str = "cutover_session";
pub const CSRF_HEADER: &str = "x-csrf-token";

pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Who is asking: a bearer token, else a trusted proxy's header (from a trusted peer), else
/// a session cookie.
pub fn authenticate(
    home: &Home,
    trusted: Option<&TrustedHeader>,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<Principal, Denied> {
    let remote = peer.ip().to_string();
    let internal = |_: HomeError| Denied::Unauthenticated("the dashboard cannot read its records");
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let token = auth
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(Denied::Unauthenticated(
                "Authorization must be `Bearer TOKEN`",
            ))?;
        let (name, role) = home
            .check_token(token.trim())
            .map_err(internal)?
            .ok_or(Denied::Unauthenticated("the token is not valid"))?;
        return Ok(Principal {
            name: format!("token:{name}"),
            role,
            via: Via::Token,
            remote,
        });
    }
    if let Some(t) = trusted
        && let Some(name) = headers.get(t.header.as_str()).and_then(|v| v.to_str().ok())
    {
        if !t.proxies.contains(&peer.ip()) {
            return Err(Denied::Unauthenticated(
                "the sign-in header came from an address that is not a trusted proxy",
            ));
        }
        let name = name.trim();
        if !name.is_empty() {
            let role = home
                .role_of(name)
                .map_err(internal)?
                .unwrap_or(t.default_role);
            return Ok(Principal {
                name: name.to_string(),
                role,
                via: Via::Header,
                remote,
            });
        }
    }
    if let Some(id) = cookie(headers, SESSION_COOKIE) {
        if let Some(user) = home.session_user(id).map_err(internal)? {
            let role = home
                .role_of(&user)
                .map_err(internal)?
                .ok_or(Denied::Unauthenticated("the session's user was removed"))?;
            return Ok(Principal {
                name: user,
                role,
                via: Via::Session(id.to_string()),
                remote,
            });
        }
        return Err(Denied::Unauthenticated(
            "the session has ended: sign in again",
        ));
    }
    Err(Denied::Unauthenticated(
        "sign in, or send `Authorization: Bearer TOKEN`",
    ))
}

/// A request that changes something, made with ambient credentials (a cookie, a proxy's
/// header), must carry its session's CSRF token — in `X-CSRF-Token` or the form's `csrf`.
pub fn check_csrf(
    home: &Home,
    who: &Principal,
    method: &Method,
    headers: &HeaderMap,
    form_token: Option<&str>,
) -> Result<(), Denied> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) || who.via == Via::Token {
        return Ok(());
    }
    let want = who.csrf(home);
    let given = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .or(form_token);
    match given {
        Some(g) if constant_eq(g.as_bytes(), want.as_bytes()) => Ok(()),
        _ => Err(Denied::Csrf),
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn require(who: &Principal, p: Permission) -> Result<(), Denied> {
    if who.role.may(p) {
        Ok(())
    } else {
        let what = match p {
            Permission::Read => "read",
            Permission::Change => "change a stack (operator or admin)",
            Permission::Approve => "decide approvals (approver or admin)",
        };
        Err(Denied::Forbidden(format!(
            "{} is a {}: not allowed to {what}",
            who.name, who.role
        )))
    }
}

/// Failed sign-ins: after `LIMIT` within `WINDOW` from one address, or for one name, the
/// next attempts are refused until the window has passed.
#[derive(Default)]
pub struct LoginLimiter {
    failures: HashMap<String, VecDeque<Instant>>,
}

impl LoginLimiter {
    pub const LIMIT: usize = 5;
    pub const WINDOW: Duration = Duration::from_secs(60);

    fn keys(remote: &str, name: &str) -> [String; 2] {
        [format!("addr:{remote}"), format!("name:{name}")]
    }

    /// How long to wait before another attempt, when attempts are refused now.
    pub fn wait(&mut self, remote: &str, name: &str, now: Instant) -> Option<Duration> {
        Self::keys(remote, name)
            .iter()
            .filter_map(|k| {
                let q = self.failures.get_mut(k)?;
                while q
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= Self::WINDOW)
                {
                    q.pop_front();
                }
                (q.len() >= Self::LIMIT)
                    .then(|| q.front().map(|t| Self::WINDOW - now.duration_since(*t)))
                    .flatten()
            })
            .max()
    }

    pub fn failed(&mut self, remote: &str, name: &str, now: Instant) {
        for k in Self::keys(remote, name) {
            self.failures.entry(k).or_default().push_back(now);
        }
    }

    pub fn succeeded(&mut self, remote: &str, name: &str) {
        for k in Self::keys(remote, name) {
            self.failures.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn home() -> (tempfile::TempDir, Home) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let home = Home::open(&tmp.path().join("home")).expect("home");
        (tmp, home)
    }

    fn peer(ip: [u8; 4]) -> SocketAddr {
        SocketAddr::from((ip, 40000))
    }

    #[test]
    fn roles_allow_what_they_name() {
        assert!(Role::Viewer.may(Permission::Read));
        assert!(!Role::Viewer.may(Permission::Change));
        assert!(Role::Operator.may(Permission::Change));
        assert!(!Role::Operator.may(Permission::Approve));
        assert!(Role::Approver.may(Permission::Approve));
        assert!(!Role::Approver.may(Permission::Change));
        assert!(Role::Admin.may(Permission::Change) && Role::Admin.may(Permission::Approve));
        assert_eq!("approver".parse::<Role>(), Ok(Role::Approver));
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn a_session_needs_its_own_csrf_token_to_change_anything_and_a_token_needs_none() {
        let (_t, home) = home();
        home.put_user("alice", Role::Operator, Some("pw"))
            .expect("user");
        let id = home.start_session("alice").expect("session");
        let other = home.start_session("alice").expect("session");
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("theme=dark; {SESSION_COOKIE}={id}")).expect("h"),
        );
        let who = authenticate(&home, None, &h, peer([127, 0, 0, 1])).expect("in");
        assert_eq!((who.name.as_str(), who.role), ("alice", Role::Operator));
        assert_eq!(check_csrf(&home, &who, &Method::GET, &h, None), Ok(()));
        assert_eq!(
            check_csrf(&home, &who, &Method::POST, &h, None),
            Err(Denied::Csrf)
        );
        let theirs = home.csrf_token(&other);
        assert_eq!(
            check_csrf(&home, &who, &Method::POST, &h, Some(&theirs)),
            Err(Denied::Csrf),
            "another session's token does not fit"
        );
        let mine = who.csrf(&home);
        assert_eq!(
            check_csrf(&home, &who, &Method::POST, &h, Some(&mine)),
            Ok(())
        );

        let token = home.create_token("ci", Role::Viewer).expect("token");
        let mut t = HeaderMap::new();
        t.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).expect("h"),
        );
        let bot = authenticate(&home, None, &t, peer([10, 0, 0, 9])).expect("in");
        assert_eq!(
            (bot.name.as_str(), bot.via.clone()),
            ("token:ci", Via::Token)
        );
        assert_eq!(check_csrf(&home, &bot, &Method::POST, &t, None), Ok(()));
        assert!(require(&bot, Permission::Change).is_err());
    }

    #[test]
    fn a_trusted_header_counts_only_from_a_trusted_proxy() {
        let (_t, home) = home();
        home.put_user("carol", Role::Approver, None).expect("user");
        let trusted = TrustedHeader {
            header: "x-forwarded-user".into(),
            proxies: vec![IpAddr::from([127, 0, 0, 1])],
            default_role: Role::Viewer,
        };
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-user", HeaderValue::from_static("carol"));
        let who = authenticate(&home, Some(&trusted), &h, peer([127, 0, 0, 1])).expect("in");
        assert_eq!((who.role, who.via.clone()), (Role::Approver, Via::Header));
        assert!(matches!(
            authenticate(&home, Some(&trusted), &h, peer([192, 168, 1, 5])),
            Err(Denied::Unauthenticated(_))
        ));
        // Off by default: the header is nothing.
        assert!(matches!(
            authenticate(&home, None, &h, peer([127, 0, 0, 1])),
            Err(Denied::Unauthenticated(_))
        ));
        h.insert("x-forwarded-user", HeaderValue::from_static("dave"));
        let dave = authenticate(&home, Some(&trusted), &h, peer([127, 0, 0, 1])).expect("in");
        assert_eq!(
            dave.role,
            Role::Viewer,
            "an unknown name gets the default role"
        );
    }

    #[test]
    fn sign_ins_are_limited_per_address_and_per_name() {
        let mut l = LoginLimiter::default();
        let t0 = Instant::now();
        for _ in 0..LoginLimiter::LIMIT {
            assert_eq!(l.wait("1.2.3.4", "alice", t0), None);
            l.failed("1.2.3.4", "alice", t0);
        }
        assert!(
            l.wait("1.2.3.4", "bob", t0).is_some(),
            "the address is limited"
        );
        assert!(
            l.wait("5.6.7.8", "alice", t0).is_some(),
            "the name is limited"
        );
        assert_eq!(l.wait("5.6.7.8", "bob", t0), None);
        let later = t0 + LoginLimiter::WINDOW;
        assert_eq!(l.wait("1.2.3.4", "alice", later), None, "the window passed");
    }
}
