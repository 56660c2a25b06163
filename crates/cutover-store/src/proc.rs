//! Facts about processes and this machine: who we are, whether a pid is
//! alive, fresh lease tokens.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{ErrorKind, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::model::Holder;

impl Holder {
    /// The current process: `$CUTOVER_ACTOR` when set — the person a front end (the
    /// dashboard) runs this process for —, else `$USER` (else `$LOGNAME`, else the name of its uid in
    /// `/etc/passwd`, else `uid N`, else `unknown`), the
    /// host name (from `/proc/sys/kernel/hostname`, else `/etc/hostname`, else
    /// `localhost`), [`std::process::id`] and its start time.
    pub fn current() -> Holder {
        let pid = std::process::id();
        Holder {
            user: current_user(),
            host: hostname(),
            pid,
            pid_start: process_start(pid),
        }
    }
}

fn current_user() -> String {
    user_from(|var| std::env::var(var).ok())
        .unwrap_or_else(|| user_of_uid().unwrap_or_else(|| "unknown".to_owned()))
}

/// The person named by the environment: the actor a front end set, else the login.
fn user_from(env: impl Fn(&str) -> Option<String>) -> Option<String> {
    ["CUTOVER_ACTOR", "USER", "LOGNAME"]
        .iter()
        .filter_map(|var| env(var))
        .map(|v| v.trim().to_owned())
        .find(|v| !v.is_empty())
}

/// The login name of this process's real uid (services and CI often have no `$USER`).
fn user_of_uid() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .to_owned();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    Some(name_of_uid(&passwd, &uid).unwrap_or_else(|| format!("uid {uid}")))
}

fn name_of_uid(passwd: &str, uid: &str) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let _password = f.next()?;
        (f.next()? == uid).then(|| name.to_owned())
    })
}

/// This machine's host name.
pub(crate) fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Start time of `pid` (clock ticks since boot), if it can be read.
pub(crate) fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|(_, start)| start)
}

/// Extracts (state, starttime) — fields 3 and 22 — from `/proc/<pid>/stat`.
/// Field 2 is the command name in parentheses and may itself contain spaces
/// and parentheses, so fields are counted after the last `)`.
fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // `fields` now starts at field 4; field 22 is 18 further on.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Whether the process `pid` (started at `pid_start`, if known) still runs on
/// this machine.
///
/// Dead means: no `/proc/<pid>`, a zombie, or a different start time (the pid
/// was reused). Anything we cannot tell (no procfs, permission denied,
/// unreadable stat) counts as alive, so a live holder is never robbed.
pub(crate) fn pid_alive(pid: u32, pid_start: Option<u64>) -> bool {
    if !Path::new("/proc/self/stat").exists() {
        return true;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => match parse_stat(&stat) {
            Some((state, start)) => {
                !matches!(state, 'Z' | 'X' | 'x') && pid_start.is_none_or(|s| s == start)
            }
            None => true,
        },
        // ESRCH: the process vanished while we were reading.
        Err(e) if e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(3) => false,
        Err(_) => true,
    }
}

/// A fresh, unguessable lease token: 128 bits as 32 hex digits, from
/// `/dev/urandom`, else from std's randomly keyed hasher mixed with time, pid
/// and a counter.
pub(crate) fn new_token() -> String {
    let mut bytes = [0u8; 16];
    let from_urandom = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok();
    if !from_urandom {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        for (i, chunk) in bytes.chunks_mut(8).enumerate() {
            let mut h = RandomState::new().build_hasher();
            h.write_u128(nanos);
            h.write_u32(std::process::id());
            h.write_u64(count);
            h.write_usize(i);
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_actor_a_front_end_names_comes_before_the_login() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            user_from(env(&[("USER", "root"), ("CUTOVER_ACTOR", "alice")])).as_deref(),
            Some("alice")
        );
        assert_eq!(
            user_from(env(&[("USER", "root"), ("CUTOVER_ACTOR", " ")])).as_deref(),
            Some("root")
        );
        assert_eq!(
            user_from(env(&[("LOGNAME", "ops")])).as_deref(),
            Some("ops")
        );
        assert_eq!(user_from(env(&[])), None);
    }

    use super::*;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    #[test]
    fn uid_names_come_from_passwd_lines() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nci:x:1001:1001::/home/ci:/bin/sh\n";
        assert_eq!(name_of_uid(passwd, "0").as_deref(), Some("root"));
        assert_eq!(name_of_uid(passwd, "1001").as_deref(), Some("ci"));
        assert_eq!(name_of_uid(passwd, "1002"), None);
        assert_eq!(name_of_uid("garbage", "0"), None);
    }

    #[test]
    fn current_holder_is_this_process() {
        let me = Holder::current();
        assert_eq!(me.pid, std::process::id());
        assert!(!me.user.is_empty());
        assert!(!me.host.is_empty());
        assert_eq!(me.host, hostname());
        if Path::new("/proc/self/stat").exists() {
            assert!(me.pid_start.is_some());
        }
    }

    #[test]
    fn parse_stat_counts_fields_after_the_command_name() {
        // Field 22 (starttime) is 987654; the command name contains ") " and "(".
        let stat = "4242 (we) ird (name) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615";
        assert_eq!(parse_stat(stat), Some(('S', 987_654)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) R 1 2"), None);
    }

    #[test]
    fn this_process_is_alive() {
        let me = Holder::current();
        assert!(pid_alive(me.pid, me.pid_start));
        assert!(pid_alive(me.pid, None));
    }

    #[test]
    fn reaped_child_is_dead() {
        if !Path::new("/proc/self/stat").exists() {
            return; // no procfs: liveness cannot be judged at all
        }
        let mut child = Command::new("true").spawn().expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait");
        assert!(!pid_alive(pid, None));
    }

    #[test]
    fn reused_pid_with_other_start_time_is_dead() {
        let me = Holder::current();
        let Some(start) = me.pid_start else {
            return; // no procfs
        };
        assert!(!pid_alive(me.pid, Some(start + 1)));
    }

    #[test]
    fn zombie_is_dead() {
        if !Path::new("/proc/self/stat").exists() {
            return;
        }
        let mut child = Command::new("true")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        // Not reaped yet: once it exits it lingers as a zombie.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut zombie = false;
        while Instant::now() < deadline {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
            if parse_stat(&stat).map(|(s, _)| s) == Some('Z') {
                zombie = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(zombie, "child never became a zombie");
        assert!(!pid_alive(pid, None));
        child.wait().expect("reap");
    }

    #[test]
    fn tokens_are_32_hex_digits_and_distinct() {
        let a = new_token();
        let b = new_token();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
