//! `${VAR}` interpolation that knows which values carry secrets.
//!
//! Syntax (a subset of Compose's): `${NAME}`, `${NAME:-default}` (unset or empty),
//! `${NAME-default}` (unset), `${NAME:?message}` (unset or empty is an error), and `$$` for a
//! literal `$`. A bare `$NAME` stays as written.
//!
//! We interpolate after parsing, leaf by leaf, rather than in the text before it: a value stays
//! where it was written (so an undefined variable is reported at its own line), and a value
//! that took a secret in is marked as such, so it is masked in every plan, log and journal.

use std::collections::HashMap;

use secrecy::{ExposeSecret, SecretString};

use super::model::{SecretValue, Value};

/// Where a variable's value came from; shown when a variable is undefined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VarOrigin {
    Process,
    EnvFile(String),
    StackVars,
    Environment(String),
}

/// The variables a stack is interpolated with.
#[derive(Default)]
pub struct Vars {
    plain: HashMap<String, String>,
    secrets: HashMap<String, Option<SecretString>>,
}

impl Vars {
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.plain.insert(name.into(), value.into());
    }

    /// A redactor for every secret whose value is available.
    pub fn redactor(&self) -> super::Redactor {
        super::Redactor::new(
            self.secrets
                .iter()
                .filter_map(|(k, v)| Some((k.as_str(), v.as_ref()?.expose_secret()))),
        )
    }

    /// A secret; `None` when it is declared but its value is not available here (a plan can
    /// still be made; an apply refuses).
    pub fn set_secret(&mut self, name: impl Into<String>, value: Option<SecretString>) {
        self.secrets.insert(name.into(), value);
    }

    pub fn is_defined(&self, name: &str) -> bool {
        self.secrets.contains_key(name) || self.plain.contains_key(name)
    }

    pub fn plain(&self, name: &str) -> Option<&str> {
        self.plain.get(name).map(String::as_str)
    }
}

/// Why a string could not be interpolated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InterpError {
    Undefined(String),
    Required { name: String, message: String },
    Unterminated,
    BadName(String),
}

/// Expands every `${...}` in `input`. Returns every undefined variable, not just the first.
pub fn interpolate(input: &str, vars: &Vars) -> Result<Value, Vec<InterpError>> {
    let mut exposed = String::with_capacity(input.len());
    let mut shown = String::with_capacity(input.len());
    let mut secret = false;
    let mut missing_secret = false;
    let mut errors = Vec::new();
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        exposed.push_str(&rest[..i]);
        shown.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            exposed.push('$');
            shown.push_str("$$");
            rest = tail;
            continue;
        }
        let Some(body_and_tail) = after.strip_prefix('{') else {
            exposed.push('$');
            shown.push('$');
            rest = after;
            continue;
        };
        let Some(end) = body_and_tail.find('}') else {
            errors.push(InterpError::Unterminated);
            rest = "";
            break;
        };
        let body = &body_and_tail[..end];
        rest = &body_and_tail[end + 1..];
        let (name, op, arg) = split_body(body);
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            errors.push(InterpError::BadName(body.to_string()));
            continue;
        }
        if let Some(s) = vars.secrets.get(name) {
            let Some(s) = s else {
                // Declared, value unknown here: the reference stands in for it.
                missing_secret = true;
                shown.push_str("${");
                shown.push_str(name);
                shown.push('}');
                secret = true;
                continue;
            };
            let v = s.expose_secret();
            if op == Some(":-") && v.is_empty() {
                exposed.push_str(arg);
                shown.push_str(arg);
            } else if op == Some(":?") && v.is_empty() {
                errors.push(InterpError::Required {
                    name: name.into(),
                    message: arg.into(),
                });
            } else {
                exposed.push_str(v);
                shown.push_str("${");
                shown.push_str(name);
                shown.push('}');
                secret = true;
            }
            continue;
        }
        let value = vars.plain.get(name).map(String::as_str);
        let resolved = match (op, value) {
            (Some(":-"), None) | (Some(":-"), Some("")) | (Some("-"), None) => Some(arg),
            (Some(":?"), None) | (Some(":?"), Some("")) | (Some("?"), None) => {
                errors.push(InterpError::Required {
                    name: name.into(),
                    message: arg.into(),
                });
                None
            }
            (_, Some(v)) => Some(v),
            (_, None) => {
                errors.push(InterpError::Undefined(name.into()));
                None
            }
        };
        if let Some(v) = resolved {
            exposed.push_str(v);
            shown.push_str(v);
        }
    }
    exposed.push_str(rest);
    shown.push_str(rest);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(if secret {
        let value = (!missing_secret).then(|| SecretString::from(exposed));
        Value::Secret(SecretValue::new(shown, value))
    } else {
        Value::Plain(exposed)
    })
}

/// `NAME`, `NAME:-x`, `NAME-x`, `NAME:?x`, `NAME?x` → (name, operator, argument). The first
/// operator wins: `${A:-x-y}` is `A` with default `x-y`.
fn split_body(body: &str) -> (&str, Option<&'static str>, &str) {
    let bytes = body.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        let op = match (b, bytes.get(i + 1)) {
            (b':', Some(b'-')) => ":-",
            (b':', Some(b'?')) => ":?",
            (b'-', _) => "-",
            (b'?', _) => "?",
            _ => continue,
        };
        return (&body[..i], Some(op), &body[i + op.len()..]);
    }
    (body, None, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        let mut v = Vars::default();
        v.set("HOST", "db");
        v.set("EMPTY", "");
        v.set_secret("PW", Some(SecretString::from("hunter2")));
        v.set_secret("GONE", None);
        v
    }

    fn plain(s: &str) -> String {
        match interpolate(s, &vars()) {
            Ok(Value::Plain(p)) => p,
            other => panic!("expected a plain value for {s:?}, got {other:?}"),
        }
    }

    #[test]
    fn expands_defaults_and_escapes() {
        assert_eq!(plain("x-${HOST}-y"), "x-db-y");
        assert_eq!(plain("${NOPE:-fallback}"), "fallback");
        assert_eq!(plain("${EMPTY:-fallback}"), "fallback");
        assert_eq!(plain("${EMPTY-fallback}"), "");
        assert_eq!(plain("${NOPE-a-b}"), "a-b");
        assert_eq!(plain("cost: $$5 and $HOME"), "cost: $5 and $HOME");
    }

    #[test]
    fn reports_every_undefined_variable() {
        let err = interpolate("${A}/${HOST}/${B}", &vars()).expect_err("must fail");
        assert_eq!(
            err,
            vec![
                InterpError::Undefined("A".into()),
                InterpError::Undefined("B".into())
            ]
        );
        let err = interpolate("${NOPE:?set it in .env}", &vars()).expect_err("must fail");
        assert_eq!(
            err,
            vec![InterpError::Required {
                name: "NOPE".into(),
                message: "set it in .env".into()
            }]
        );
        assert_eq!(
            interpolate("${HOST", &vars()).expect_err("must fail"),
            vec![InterpError::Unterminated]
        );
    }

    #[test]
    fn secrets_are_exposed_only_on_request_and_shown_as_references() {
        let v = interpolate("postgres://app:${PW}@${HOST}/x", &vars()).expect("interpolates");
        let Value::Secret(s) = &v else {
            panic!("a value with a secret in it must be secret: {v:?}")
        };
        assert_eq!(s.shown(), "postgres://app:${PW}@db/x");
        assert_eq!(s.expose(), Some("postgres://app:hunter2@db/x"));
        assert!(!format!("{v:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&v).expect("json").contains("hunter2"));
        let v = interpolate("${GONE}", &vars()).expect("a missing secret still plans");
        assert_eq!((v.shown(), v.expose()), ("${GONE}", None));
    }
}
