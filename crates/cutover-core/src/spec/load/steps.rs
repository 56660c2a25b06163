//! `checks:` and `steps:`: the stack file's own checks and custom steps.

use super::*;

impl Cx {
    pub(super) fn check(
        &mut self,
        name: &str,
        c: &RawCheck,
        vars: &Vars,
        raw: &RawStack,
    ) -> Option<Check> {
        let at = check_loc(c).unwrap_or_else(|| self.key_at(&["checks", name]));
        let count = [
            c.http.is_some(),
            c.tcp.is_some(),
            c.sql.is_some(),
            c.exec.is_some(),
            c.command.is_some(),
            c.logs.is_some(),
            c.container_health.is_some(),
        ]
        .iter()
        .filter(|k| **k)
        .count();
        if count != 1 {
            self.error(
                DiagKind::InvalidValue,
                at,
                format!("check `{name}` needs exactly one of http, tcp, sql, exec, command, logs, container_health"),
            );
            return None;
        }
        let kind = self.check_kind(&format!("check `{name}`"), c, vars, raw, at)?;
        Some(Check {
            kind,
            timeout: self.duration(c.timeout.as_ref(), vars, Duration::from_secs(10)),
            interval: self.duration(c.interval.as_ref(), vars, Duration::from_secs(2)),
            retries: c.retries.as_ref().map_or(1, |r| r.value),
        })
    }

    pub(super) fn http_check(
        &mut self,
        what: &str,
        h: &RawHttpCheck,
        vars: &Vars,
        raw: &RawStack,
        at: Loc,
    ) -> Option<CheckKind> {
        if h.url.is_some() == h.service.is_some() {
            self.error(
                DiagKind::InvalidValue,
                at,
                format!("{what}: http needs exactly one of `url` or `service`"),
            );
            return None;
        }
        if let Some(s) = &h.service {
            self.service_ref(what, s, raw);
        }
        Some(CheckKind::Http {
            url: match &h.url {
                Some(u) => Some(self.plain(u, vars)?),
                None => None,
            },
            service: h.service.as_ref().map(|s| s.value.clone()),
            path: match &h.path {
                Some(p) => Some(self.plain(p, vars)?),
                None => None,
            },
            status: h.status.as_ref().map_or(200, |s| s.value),
            body_contains: match &h.body_contains {
                Some(b) => Some(self.plain(b, vars)?),
                None => None,
            },
            body_regex: match &h.body_regex {
                Some(b) => Some(self.plain(b, vars)?),
                None => None,
            },
        })
    }

    pub(super) fn check_kind(
        &mut self,
        what: &str,
        c: &RawCheck,
        vars: &Vars,
        raw: &RawStack,
        at: Loc,
    ) -> Option<CheckKind> {
        if let Some(h) = &c.http {
            return self.http_check(what, h, vars, raw, at);
        }
        if let Some(t) = &c.tcp {
            return Some(CheckKind::Tcp {
                target: self.plain(t, vars)?,
            });
        }
        if let Some(s) = &c.sql {
            let (Some(data), Some(query)) = (&s.data, &s.query) else {
                self.error(
                    DiagKind::Missing,
                    at,
                    format!("{what}: sql needs `data` and `query`"),
                );
                return None;
            };
            self.data_ref(what, data, raw);
            return Some(CheckKind::Sql {
                data: data.value.clone(),
                query: self.plain(query, vars)?,
                expect: match &s.expect {
                    Some(e) => Some(self.plain(e, vars)?),
                    None => None,
                },
            });
        }
        if let Some(e) = &c.exec {
            let (Some(service), Some(command)) = (&e.service, &e.command) else {
                self.error(
                    DiagKind::Missing,
                    at,
                    format!("{what}: exec needs `service` and `command`"),
                );
                return None;
            };
            self.service_ref(what, service, raw);
            return Some(CheckKind::Exec {
                service: service.value.clone(),
                command: self.command(command, vars)?,
                output_contains: match &e.output_contains {
                    Some(o) => Some(self.plain(o, vars)?),
                    None => None,
                },
            });
        }
        if let Some(cmd) = &c.command {
            let command = self.command(cmd, vars)?;
            self.host_program_exists(&command, cmd.at);
            return Some(CheckKind::Command(command));
        }
        if let Some(l) = &c.logs {
            let Some(service) = &l.service else {
                self.error(
                    DiagKind::Missing,
                    at,
                    format!("{what}: logs needs `service`"),
                );
                return None;
            };
            self.service_ref(what, service, raw);
            return Some(CheckKind::Logs {
                service: service.value.clone(),
                absent: match &l.absent {
                    Some(a) => Some(self.plain(a, vars)?),
                    None => None,
                },
                present: match &l.present {
                    Some(p) => Some(self.plain(p, vars)?),
                    None => None,
                },
            });
        }
        let s = c.container_health.as_ref()?;
        self.service_ref(what, s, raw);
        Some(CheckKind::ContainerHealth {
            service: s.value.clone(),
        })
    }

    pub(super) fn step(
        &mut self,
        phase: &str,
        i: usize,
        s: &RawStep,
        vars: &Vars,
        raw: &RawStack,
    ) -> Option<CustomStep> {
        let index = i.to_string();
        let at = step_loc(s).unwrap_or_else(|| self.key_at(&["steps", phase, &index]));
        let what = format!("step {} of `{phase}`", i + 1);
        let count = [
            s.manual.is_some(),
            s.approval.is_some(),
            s.run.is_some(),
            s.exec.is_some(),
            s.sql.is_some(),
            s.http.is_some(),
            s.check.is_some(),
            s.wait.is_some(),
        ]
        .iter()
        .filter(|k| **k)
        .count();
        if count != 1 {
            self.error(
                DiagKind::InvalidValue,
                at,
                format!("{what} needs exactly one of manual, approval, run, exec, sql, http, check, wait"),
            );
            return None;
        }
        let (action, default_safe) = if let Some(t) = &s.manual {
            (
                StepAction::Manual {
                    text: self.plain(t, vars)?,
                },
                true,
            )
        } else if let Some(t) = &s.approval {
            (
                StepAction::Approval {
                    text: self.plain(t, vars)?,
                },
                true,
            )
        } else if let Some(r) = &s.run {
            let shell = s.shell.as_ref().is_some_and(|b| b.value);
            if matches!(r.value, StringOrList::One(_)) && !shell {
                self.error(
                    DiagKind::InvalidValue,
                    r.at,
                    format!("{what}: `run` is a string, which only a shell can split"),
                )
                .hint = Some("write it as a list [prog, arg, ...], or add `shell: true`".into());
                return None;
            }
            let command = self.command(r, vars)?;
            self.host_program_exists(&command, r.at);
            (StepAction::Run { command }, false)
        } else if let Some(e) = &s.exec {
            let (Some(service), Some(command)) = (&e.service, &e.command) else {
                self.error(
                    DiagKind::Missing,
                    at,
                    format!("{what}: exec needs `service` and `command`"),
                );
                return None;
            };
            self.service_ref(&what, service, raw);
            (
                StepAction::Exec {
                    service: service.value.clone(),
                    command: self.command(command, vars)?,
                },
                false,
            )
        } else if let Some(q) = &s.sql {
            let (Some(data), Some(query)) = (&q.data, &q.query) else {
                self.error(
                    DiagKind::Missing,
                    at,
                    format!("{what}: sql needs `data` and `query`"),
                );
                return None;
            };
            self.data_ref(&what, data, raw);
            (
                StepAction::Sql {
                    data: data.value.clone(),
                    query: self.plain(query, vars)?,
                },
                false,
            )
        } else if let Some(h) = &s.http {
            (
                StepAction::Http {
                    check: self.http_check(&what, h, vars, raw, at)?,
                },
                false,
            )
        } else {
            let (t, wait) = match (&s.check, &s.wait) {
                (Some(t), _) => (t, false),
                (None, Some(t)) => (t, true),
                (None, None) => return None,
            };
            if !raw.checks.contains_key(&t.value) {
                let names: Vec<&str> = raw.checks.keys().map(String::as_str).collect();
                self.error(
                    DiagKind::DanglingReference,
                    t.at,
                    format!("{what} names check `{}`, which is not defined", t.value),
                )
                .hint = Some(if names.is_empty() {
                    "define it under `checks:`".into()
                } else {
                    format!("checks: {}", names.join(", "))
                });
            }
            let check = t.value.clone();
            (
                if wait {
                    StepAction::Wait { check }
                } else {
                    StepAction::Check { check }
                },
                true,
            )
        };
        let name = match &s.name {
            Some(n) => self.plain(n, vars)?,
            None => action.to_string(),
        };
        Some(CustomStep {
            name,
            action,
            timeout: s
                .timeout
                .as_ref()
                .map(|t| self.duration(Some(t), vars, Duration::ZERO)),
            rerun_safe: s.rerun_safe.as_ref().map_or(default_safe, |b| b.value),
            when: match &s.when {
                None => When::Always,
                Some(w) => match self.plain(w, vars).as_deref() {
                    Some("always") => When::Always,
                    Some("upgrade") => When::Upgrade,
                    Some("first-deploy") => When::FirstDeploy,
                    Some(other) => {
                        self.error(
                            DiagKind::InvalidValue,
                            w.at,
                            format!("{what}: unknown `when: {other}`"),
                        )
                        .hint = Some("one of: always, upgrade, first-deploy".into());
                        When::Always
                    }
                    None => When::Always,
                },
            },
        })
    }
}

pub(super) fn check_loc(c: &RawCheck) -> Option<Loc> {
    c.tcp
        .as_ref()
        .or(c.container_health.as_ref())
        .or(c.timeout.as_ref())
        .map(|t| t.at)
        .or(c.command.as_ref().map(|t| t.at))
}

pub(super) fn step_loc(s: &RawStep) -> Option<Loc> {
    s.name
        .as_ref()
        .or(s.manual.as_ref())
        .or(s.approval.as_ref())
        .or(s.check.as_ref())
        .or(s.wait.as_ref())
        .map(|t| t.at)
        .or(s.run.as_ref().map(|r| r.at))
}
