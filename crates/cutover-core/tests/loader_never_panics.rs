//! No input makes the stack-file loader panic.
//!
//! 1. Arbitrary bytes (lossy UTF-8) go into `load_str`: Ok or Err, never a panic.
//! 2. "Almost valid" stack files, built from the real key set plus typos, values of the wrong
//!    type, `${VAR}` references, dangling and cyclic `depends_on`, garbage and duplicate ports:
//!    never a panic; an Err places every diagnostic on a line (unless it comes from the command
//!    line) and renders to something. An Ok stack is planned, rendered and round-tripped
//!    through JSON (what the store keeps) as well.
//! 3. Hand-picked nasty inputs return, without panicking, in reasonable time.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use cutover_core::plan::{self, Observed, Resolved, render};
use cutover_core::spec::source::SourceId;
use cutover_core::spec::{Diagnostics, LoadOptions, Loaded, Stack, load_str};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::Config;

fn load(text: &str, opts: &LoadOptions) -> Result<Loaded, Diagnostics> {
    load_str(Path::new("cutover.yaml"), text, opts)
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        // Keep a failing case in the test output, not in a file beside this one.
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Property 1: arbitrary bytes.

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..2048)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = load(&text, &LoadOptions::default());
    }

    /// Bytes drawn from YAML's structural characters reach much deeper into the parser than
    /// uniformly random ones.
    #[test]
    fn yaml_punctuation_soup_never_panics(
        text in vec(
            prop::sample::select(vec![
                "\n", " ", "  ", "\t", "-", "- ", ":", ": ", "?", "? ", "[", "]", "{", "}", ",",
                "&a", "*a", "!", "!!str", "|", ">", "'", "\"", "#", "%YAML 1.2", "---", "...",
                "\\", "${", "}", "$", "services", "image", "x", "1", "\u{feff}", "\r\n", "\u{0}",
            ]),
            0..400,
        ).prop_map(|parts| parts.concat())
    ) {
        let _ = load(&text, &LoadOptions::default());
    }
}

// ---------------------------------------------------------------------------------------------
// Property 2: almost valid stack files.

/// A YAML node, rendered in block or flow style.
#[derive(Clone, Debug)]
enum Y {
    /// A string scalar: written plain when that is safe, double-quoted otherwise.
    Str(String),
    /// Written as is: numbers, booleans, null, aliases, garbage.
    Raw(String),
    Seq(Vec<Y>, bool),
    Map(Vec<(String, Y)>, bool),
}

fn st(s: &str) -> Y {
    Y::Str(s.to_string())
}

fn plain_ok(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | '$' | '{' | '}')
        })
        && !s.starts_with(['-', '{', '}', '$'])
        && !matches!(
            s,
            "null" | "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n"
        )
        && s.parse::<f64>().is_err()
}

fn scalar(s: &str, flow: bool) -> String {
    let flow_safe = !s.contains(['{', '}', ',', '[', ']']);
    if plain_ok(s) && (!flow || flow_safe) {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
    }
}

fn key(k: &str) -> String {
    let plain = !k.is_empty()
        && k.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '<'))
        && !k.starts_with('-');
    if plain {
        k.to_string()
    } else {
        serde_json::to_string(k).unwrap_or_else(|_| "\"\"".to_string())
    }
}

impl Y {
    fn inline(&self, flow: bool) -> Option<String> {
        match self {
            Y::Str(s) => Some(scalar(s, flow)),
            Y::Raw(r) => Some(r.clone()),
            Y::Seq(items, f) if *f || flow || items.is_empty() => {
                let parts: Vec<String> = items.iter().filter_map(|i| i.inline(true)).collect();
                Some(format!("[{}]", parts.join(", ")))
            }
            Y::Map(entries, f) if *f || flow || entries.is_empty() => {
                let parts: Vec<String> = entries
                    .iter()
                    .filter_map(|(k, v)| Some(format!("{}: {}", key(k), v.inline(true)?)))
                    .collect();
                Some(format!("{{{}}}", parts.join(", ")))
            }
            Y::Seq(..) | Y::Map(..) => None,
        }
    }

    fn block(&self, indent: usize, out: &mut String) {
        let pad = " ".repeat(indent);
        match self {
            Y::Map(entries, false) if !entries.is_empty() => {
                for (k, v) in entries {
                    match v.inline(false) {
                        Some(s) => {
                            let _ = writeln!(out, "{pad}{}: {s}", key(k));
                        }
                        None => {
                            let _ = writeln!(out, "{pad}{}:", key(k));
                            v.block(indent + 2, out);
                        }
                    }
                }
            }
            Y::Seq(items, false) if !items.is_empty() => {
                for item in items {
                    match item.inline(false) {
                        Some(s) => {
                            let _ = writeln!(out, "{pad}- {s}");
                        }
                        None => {
                            // `- ` then the nested block, its first line on the dash's line.
                            let mut inner = String::new();
                            item.block(indent + 2, &mut inner);
                            let _ = write!(out, "{pad}- {}", &inner[indent + 2..]);
                        }
                    }
                }
            }
            other => {
                let _ = writeln!(out, "{pad}{}", other.inline(false).unwrap_or_default());
            }
        }
    }

    fn document(&self) -> String {
        let mut out = String::new();
        self.block(0, &mut out);
        out
    }
}

/// Service names: valid ones, and every way of being invalid.
const SERVICE_NAMES: &[&str] = &[
    "web",
    "db",
    "api",
    "worker",
    "ui",
    "cache",
    "api-2",
    "job_1",
    "Web",
    "-x",
    "a b",
    "",
    "ümlaut",
    "x.y",
    "0",
    "web ",
    "a_very_long_service_name_that_goes_on_and_on_past_sixty_three_chars",
];
const VAR_NAMES: &[&str] = &[
    "VERSION",
    "TAG",
    "HOST",
    "UNDEFINED",
    "DB_PASSWORD",
    "EMPTY",
    "tag",
];
const DURATIONS: &[&str] = &[
    "30s",
    "2m",
    "1h30m",
    "0s",
    "",
    "forever",
    "-1s",
    "10",
    "99999999999999999h",
    "1.5s",
    "${TAG}",
];
const PORTS: &[&str] = &[
    "8080:80",
    "80",
    "8080:80",
    "127.0.0.1:8443:443",
    "5353:53/udp",
    "0",
    "70000:80",
    "http:80",
    "a:b:c:d",
    "80/sctp",
    "[::1]:8081:81",
    "1.2.3:80:80",
    "",
    ":",
    "80:",
    "9000/udp",
    "${PORT}",
];
const VOLUMES: &[&str] = &[
    "data:/var/lib/x",
    "./conf:/etc/x:ro",
    "/abs:/y:rw",
    "/x",
    "data:relative",
    "a:/b:rx",
    "",
    ":/x",
    "a:/b:ro:extra",
    "~/home:/h",
];
const TYPO_KEYS: &[&str] = &[
    "imgae",
    "depends-on",
    "dependsOn",
    "Ports",
    "envv",
    "strategyy",
    "helth",
    "stop_grace_period",
    "x-extra",
    "",
    "portt",
    "servces",
    "chekcs",
    "<<",
];

fn pick(pool: &'static [&'static str]) -> impl Strategy<Value = String> + Clone {
    prop::sample::select(pool).prop_map(str::to_string)
}

/// A `${...}` reference, well-formed or not.
fn var_ref() -> impl Strategy<Value = String> {
    let name = pick(VAR_NAMES);
    prop_oneof![
        name.clone().prop_map(|n| format!("${{{n}}}")),
        name.clone().prop_map(|n| format!("${{{n}:-default}}")),
        name.clone().prop_map(|n| format!("${{{n}-d}}")),
        name.clone().prop_map(|n| format!("${{{n}:?is required}}")),
        name.prop_map(|n| format!("${n}")),
        Just("${".to_string()),
        Just("${}".to_string()),
        Just("${1x}".to_string()),
        Just("$$".to_string()),
        Just("${A:-${B}}".to_string()),
        Just("${ÿ}".to_string()),
    ]
}

/// A string value, with and without references.
fn text() -> impl Strategy<Value = String> {
    vec(
        prop_oneof![
            4 => pick(&["nginx", "1.25", "registry.example.org/app", ":", "/", "-", " ", "x"]),
            2 => var_ref(),
            1 => "\\PC{0,8}",
        ],
        0..4,
    )
    .prop_map(|parts| parts.concat())
}

fn text_y() -> BoxedStrategy<Y> {
    text().prop_map(Y::Str).boxed()
}

fn raw_scalar() -> impl Strategy<Value = Y> {
    pick(&[
        "1",
        "-1",
        "0",
        "65535",
        "65536",
        "99999999999999999999",
        "1.5",
        "true",
        "false",
        "null",
        "~",
        "yes",
        "0x1F",
        ".inf",
        "*nothing",
        "!!binary aGk=",
        "!custom x",
        "''",
        "\"\"",
        "&anchor value",
        "[",
        "{",
        "\"unterminated",
        "|",
        ">-",
    ])
    .prop_map(Y::Raw)
}

/// A value of some type: the wrong one, most of the time it is used.
fn wrong() -> BoxedStrategy<Y> {
    let leaf = prop_oneof![raw_scalar(), text_y()];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            (vec(inner.clone(), 0..3), any::<bool>()).prop_map(|(v, f)| Y::Seq(v, f)),
            (vec((pick(TYPO_KEYS), inner), 0..3), any::<bool>()).prop_map(|(v, f)| Y::Map(v, f)),
        ]
    })
    .boxed()
}

/// Mostly `right`, sometimes a value of the wrong type.
fn or_wrong(right: impl Strategy<Value = Y> + 'static) -> BoxedStrategy<Y> {
    prop_oneof![8 => right, 1 => wrong()].boxed()
}

fn seq_of(
    item: impl Strategy<Value = Y> + 'static,
    len: std::ops::Range<usize>,
) -> BoxedStrategy<Y> {
    (vec(item, len), any::<bool>())
        .prop_map(|(v, f)| Y::Seq(v, f))
        .boxed()
}

fn strs(pool: &'static [&'static str]) -> BoxedStrategy<Y> {
    pick(pool).prop_map(Y::Str).boxed()
}

/// A mapping with each field present with probability `p`, plus the odd typo'd key.
fn fields(spec: Vec<(&'static str, BoxedStrategy<Y>)>, p: f64) -> BoxedStrategy<Y> {
    let present: Vec<BoxedStrategy<Option<(String, Y)>>> = spec
        .into_iter()
        .map(|(k, s)| {
            prop::option::weighted(p, s)
                .prop_map(move |v| v.map(|v| (k.to_string(), v)))
                .boxed()
        })
        .collect();
    let typos = vec((pick(TYPO_KEYS), wrong()), 0..2);
    (
        present,
        prop::option::weighted(0.15, typos),
        prop::bool::weighted(0.15),
    )
        .prop_map(|(present, typos, flow)| {
            let mut entries: Vec<(String, Y)> = present.into_iter().flatten().collect();
            entries.extend(typos.into_iter().flatten());
            Y::Map(entries, flow)
        })
        .boxed()
}

/// A named collection: `NAME: item` for names drawn from `names` (duplicates included).
fn named(
    names: impl Strategy<Value = String> + 'static,
    item: BoxedStrategy<Y>,
    len: std::ops::Range<usize>,
) -> BoxedStrategy<Y> {
    vec((names, item), len)
        .prop_map(|v| Y::Map(v, false))
        .boxed()
}

fn duration() -> BoxedStrategy<Y> {
    or_wrong(strs(DURATIONS))
}

fn command() -> BoxedStrategy<Y> {
    or_wrong(prop_oneof![
        text_y(),
        seq_of(text_y(), 0..4),
        Just(Y::Seq(vec![st("gsh"), st("-check")], true)),
    ])
}

fn health() -> BoxedStrategy<Y> {
    fields(
        vec![
            (
                "http",
                or_wrong(strs(&["/health", "status", "", "/${TAG}"])),
            ),
            (
                "expect_status",
                or_wrong(pick(&["200", "204", "0", "70000", "ok"]).prop_map(Y::Raw)),
            ),
            ("body_contains", text_y()),
            (
                "tcp",
                or_wrong(pick(&["5432", "0", "-1", "80"]).prop_map(Y::Raw)),
            ),
            ("command", command()),
            ("interval", duration()),
            ("timeout", duration()),
            ("start_period", duration()),
            ("deadline", duration()),
        ],
        0.35,
    )
}

fn service() -> BoxedStrategy<Y> {
    let svc = fields(
        vec![
            (
                "image",
                or_wrong(prop_oneof![
                    4 => pick(&["nginx:1.25", "registry.example.org/app:${TAG}", "app:${VERSION:-1}", "", "a b", "x:${UNDEFINED}"]).prop_map(Y::Str),
                    1 => text_y(),
                ]),
            ),
            ("command", command()),
            (
                "env",
                or_wrong(named(
                    pick(&["A", "B", "LOG_LEVEL", "DB_PASS", "PORT", "", "lower", "A"]),
                    prop_oneof![
                        3 => text_y(),
                        1 => Just(st("${DB_PASSWORD}")),
                        1 => raw_scalar(),
                    ]
                    .boxed(),
                    0..12,
                )),
            ),
            ("ports", or_wrong(seq_of(strs(PORTS), 0..3))),
            (
                "port",
                or_wrong(
                    pick(&["80", "8080", "0", "65535", "65536", "-1", "http", "${PORT}"])
                        .prop_map(Y::Raw),
                ),
            ),
            ("volumes", or_wrong(seq_of(strs(VOLUMES), 0..3))),
            ("depends_on", or_wrong(seq_of(strs(SERVICE_NAMES), 0..3))),
            (
                "strategy",
                or_wrong(strs(&[
                    "recreate",
                    "blue-green",
                    "bluegreen",
                    "blue_green",
                    "manual",
                    "canary",
                    "",
                    "${STRAT}",
                ])),
            ),
            ("health", or_wrong(health())),
            ("stop_grace", duration()),
            (
                "restart",
                or_wrong(strs(&[
                    "no",
                    "always",
                    "unless-stopped",
                    "on-failure",
                    "on-failure:3",
                    "sometimes",
                ])),
            ),
        ],
        0.45,
    );
    prop_oneof![
        12 => svc,
        1 => Just(Y::Raw("*base".to_string())),
        1 => Just(Y::Map(vec![("<<".into(), Y::Raw("*base".into())), ("port".into(), Y::Raw("80".into()))], false)),
        1 => wrong(),
    ]
    .boxed()
}

fn http_check() -> BoxedStrategy<Y> {
    fields(
        vec![
            ("url", strs(&["http://localhost/", "${HOST}/x", ""])),
            ("service", strs(SERVICE_NAMES)),
            ("path", strs(&["/", "/status", "x"])),
            (
                "status",
                or_wrong(pick(&["200", "70000", "x"]).prop_map(Y::Raw)),
            ),
            ("body_contains", text_y()),
            ("body_regex", strs(&["^ok$", "(", ""])),
        ],
        0.5,
    )
}

fn exec() -> BoxedStrategy<Y> {
    fields(
        vec![
            ("service", strs(SERVICE_NAMES)),
            ("command", command()),
            ("output_contains", text_y()),
        ],
        0.6,
    )
}

fn sql() -> BoxedStrategy<Y> {
    fields(
        vec![
            ("data", strs(&["main_db", "files", "nope"])),
            ("query", strs(&["select 1", "", "${TAG}"])),
            ("expect", text_y()),
        ],
        0.6,
    )
}

fn check() -> BoxedStrategy<Y> {
    fields(
        vec![
            ("http", or_wrong(http_check())),
            ("tcp", or_wrong(strs(&["db:5432", "localhost:80", "nope"]))),
            ("sql", or_wrong(sql())),
            ("exec", or_wrong(exec())),
            ("command", command()),
            (
                "logs",
                or_wrong(fields(
                    vec![
                        ("service", strs(SERVICE_NAMES)),
                        ("absent", text_y()),
                        ("present", text_y()),
                    ],
                    0.6,
                )),
            ),
            ("container_health", strs(SERVICE_NAMES)),
            ("timeout", duration()),
            ("interval", duration()),
            (
                "retries",
                or_wrong(pick(&["3", "0", "-1", "4294967296"]).prop_map(Y::Raw)),
            ),
        ],
        0.2,
    )
}

fn step() -> BoxedStrategy<Y> {
    fields(
        vec![
            ("name", text_y()),
            ("manual", text_y()),
            ("approval", text_y()),
            ("run", command()),
            ("shell", or_wrong(pick(&["true", "false"]).prop_map(Y::Raw))),
            ("exec", or_wrong(exec())),
            ("sql", or_wrong(sql())),
            ("http", or_wrong(http_check())),
            ("check", strs(&["smoke", "nope", ""])),
            ("wait", strs(&["smoke", "nope"])),
            ("timeout", duration()),
            (
                "rerun_safe",
                or_wrong(pick(&["true", "false"]).prop_map(Y::Raw)),
            ),
        ],
        0.2,
    )
}

fn data() -> BoxedStrategy<Y> {
    fields(
        vec![
            (
                "postgres",
                or_wrong(fields(
                    vec![
                        ("url", strs(&["${DB_PASSWORD}", "postgres://x", ""])),
                        ("database", strs(&["app", "", "${TAG}"])),
                        ("tables", or_wrong(seq_of(strs(&["users", "groups"]), 0..3))),
                    ],
                    0.7,
                )),
            ),
            (
                "sqlite",
                or_wrong(fields(
                    vec![("path", strs(&["./app.db", "/nonexistent/x.db", ""]))],
                    0.8,
                )),
            ),
            (
                "volume",
                or_wrong(fields(
                    vec![
                        ("name", strs(&["scans", ""])),
                        ("path", strs(&["./files", "/srv/x"])),
                    ],
                    0.6,
                )),
            ),
            ("writers", or_wrong(seq_of(strs(SERVICE_NAMES), 0..3))),
            (
                "schema_version",
                or_wrong(fields(
                    vec![
                        ("query", strs(&["select v from t", ""])),
                        ("expect", text_y()),
                    ],
                    0.6,
                )),
            ),
        ],
        0.4,
    )
}

fn traffic() -> BoxedStrategy<Y> {
    fields(
        vec![
            (
                "listen",
                or_wrong(strs(&[
                    "0.0.0.0:8080",
                    "127.0.0.1:80",
                    "localhost:80",
                    ":80",
                    "nope",
                    "[::]:443",
                ])),
            ),
            (
                "routes",
                or_wrong(seq_of(
                    fields(
                        vec![
                            ("host", strs(&["example.org", "", "${HOST}"])),
                            ("path", strs(&["/", "/api", "x"])),
                            ("service", strs(SERVICE_NAMES)),
                        ],
                        0.6,
                    ),
                    0..4,
                )),
            ),
            ("max_hold", duration()),
            (
                "maintenance_page",
                strs(&["./maint.html", "/nonexistent/m.html"]),
            ),
        ],
        0.6,
    )
}

fn secret() -> BoxedStrategy<Y> {
    or_wrong(fields(
        vec![
            ("env", strs(&["SECRET_ENV", "VERSION", ""])),
            ("file", strs(&["/nonexistent/secret", "./nope.txt", "/"])),
        ],
        0.6,
    ))
}

fn vars() -> BoxedStrategy<Y> {
    or_wrong(named(pick(VAR_NAMES), text_y(), 0..5))
}

fn environment() -> BoxedStrategy<Y> {
    fields(
        vec![
            ("vars", vars()),
            (
                "env_files",
                or_wrong(seq_of(strs(&["/nonexistent/.env", "nope.env"]), 0..2)),
            ),
            ("secrets", or_wrong(named(pick(VAR_NAMES), secret(), 0..2))),
            (
                "protected",
                or_wrong(pick(&["true", "false"]).prop_map(Y::Raw)),
            ),
            (
                "services",
                or_wrong(named(pick(SERVICE_NAMES), service(), 0..3)),
            ),
            ("traffic", or_wrong(traffic())),
        ],
        0.4,
    )
}

const PHASES: &[&str] = &[
    "plan",
    "preflight",
    "quiesce",
    "upgrade",
    "verify",
    "release",
    "revert",
    "upgrad",
];

fn stack_doc() -> BoxedStrategy<Y> {
    let top = fields(
        vec![
            (
                "name",
                or_wrong(strs(&["shop", "Shop", "", "a b", "${TAG}", "x-1"])),
            ),
            (
                "protected",
                or_wrong(pick(&["true", "false", "yes", "1"]).prop_map(Y::Raw)),
            ),
            ("vars", vars()),
            (
                "env_files",
                or_wrong(seq_of(strs(&["/nonexistent/.env", "nope.env"]), 0..2)),
            ),
            ("secrets", or_wrong(named(pick(VAR_NAMES), secret(), 0..3))),
            (
                "include_compose",
                or_wrong(strs(&["/nonexistent/compose.yml", "/dev/null", "/"])),
            ),
            (
                "services",
                or_wrong(named(pick(SERVICE_NAMES), service(), 0..8)),
            ),
            (
                "data",
                or_wrong(named(
                    pick(&["main_db", "files", "Bad Name", ""]),
                    data(),
                    0..3,
                )),
            ),
            (
                "checks",
                or_wrong(named(pick(&["smoke", "version", "x"]), check(), 0..3)),
            ),
            (
                "steps",
                or_wrong(named(pick(PHASES), or_wrong(seq_of(step(), 0..3)), 0..4)),
            ),
            ("traffic", or_wrong(traffic())),
            (
                "environments",
                or_wrong(named(pick(&["prod", "staging"]), environment(), 0..2)),
            ),
        ],
        0.6,
    );
    // Sometimes an anchor for `*base` and `<<: *base` to refer to.
    (top, prop::bool::weighted(0.2))
        .prop_map(|(top, anchor)| match top {
            Y::Map(mut entries, false) if anchor => {
                entries.insert(
                    0,
                    (
                        "x-base".into(),
                        Y::Raw("&base {image: \"nginx:1\", port: 80}".into()),
                    ),
                );
                Y::Map(entries, false)
            }
            other => other,
        })
        .boxed()
}

fn load_options() -> impl Strategy<Value = LoadOptions> {
    let sets = vec(
        pick(&[
            "web.image=nginx:2",
            "nope.image=x",
            "web.env.K=v",
            "db.env.NEW=${TAG}",
            "vars.TAG=2",
            "garbage",
            "web.port=80",
            "a.b.c.d=1",
            "=",
            ".=",
            "web.strategy=blue-green",
        ]),
        0..3,
    );
    let env = prop::option::weighted(0.3, pick(&["prod", "staging", "nope"]));
    let process = vec(
        (pick(VAR_NAMES), pick(&["1.2.3", "", "${TAG}", "s3cr3t"])),
        0..3,
    );
    (env, sets, process).prop_map(|(environment, sets, process)| LoadOptions {
        environment,
        sets,
        process_env: process.into_iter().collect(),
    })
}

/// What must hold for any loader result; the stack of an Ok is exercised further.
fn check_result(result: Result<Loaded, Diagnostics>) -> Result<(), TestCaseError> {
    match result {
        Err(diags) => {
            prop_assert!(!diags.items.is_empty(), "an Err without diagnostics");
            for d in &diags.items {
                if d.at.source != SourceId::COMMAND_LINE {
                    prop_assert!(
                        d.at.line >= 1,
                        "diagnostic without a line: {:?} {:?}: {}",
                        d.kind,
                        d.at,
                        d.message
                    );
                }
            }
            prop_assert!(!diags.to_string().is_empty(), "empty rendering");
            let _ = diags.to_json();
        }
        Ok(loaded) => exercise(&loaded.stack)?,
    }
    Ok(())
}

/// Plans a valid stack as a first deploy and as an upgrade from itself, renders both, and
/// round-trips it through the JSON the store keeps.
fn exercise(stack: &Stack) -> Result<(), TestCaseError> {
    let first = plan::plan(stack, &Observed::default(), &Resolved::default());
    let _ = render::text(&first, false);
    let _ = render::markdown(&first);
    let json = serde_json::to_string(stack).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let back: Stack = serde_json::from_str(&json)
        .map_err(|e| TestCaseError::fail(format!("spec JSON does not read back: {e}\n{json}")))?;
    let again = serde_json::to_string(&back).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&json, &again, "spec JSON does not round-trip");
    let observed = Observed {
        release: Some(1),
        stack: Some(back),
        image_ids: Default::default(),
    };
    let same = plan::plan(stack, &observed, &Resolved::default());
    let _ = render::text(&same, true);
    let _ = render::markdown(&same);
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn almost_valid_stack_files_never_panic(
        doc in stack_doc().prop_map(|y| y.document()),
        opts in load_options(),
    ) {
        check_result(load(&doc, &opts))?;
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Hand-picked nasty inputs.

/// Loads `text` on a thread with a 2 MiB stack (as small as a test thread's), failing on a
/// panic, a stack overflow is an abort of the whole run either way.
fn survives(name: &str, text: String, limit: Duration) {
    let started = Instant::now();
    let outcome = std::thread::Builder::new()
        .name(name.to_string())
        .stack_size(2 << 20)
        .spawn(move || {
            let result = load(&text, &LoadOptions::default());
            result.map(|_| ()).map_err(|d| d.items.len())
        })
        .expect("spawn")
        .join();
    let took = started.elapsed();
    assert!(outcome.is_ok(), "{name}: the loader panicked");
    assert!(took < limit, "{name}: took {took:?} (limit {limit:?})");
}

#[test]
fn nasty_inputs_return_in_reasonable_time() {
    let limit = Duration::from_secs(5);
    let cases: Vec<(&str, String)> = vec![
        ("empty", String::new()),
        ("document start", "---".into()),
        ("document end", "...".into()),
        ("two documents", "name: a\n---\nname: b\n".into()),
        ("unclosed flow sequence", "services: [".into()),
        ("unclosed flow mapping", "services: {web: {image: x".into()),
        ("lone colon", ":".into()),
        ("null document", "~".into()),
        ("scalar document", "hello".into()),
        ("sequence document", "- a\n- b\n".into()),
        (
            "nested flow lists",
            format!("services: {}{}", "[".repeat(500), "]".repeat(500)),
        ),
        (
            "nested block lists",
            (0..500)
                .map(|i| format!("{}- \n", " ".repeat(i * 2)))
                .collect(),
        ),
        (
            "nested maps",
            (0..500)
                .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
                .collect(),
        ),
        ("1 MB scalar", format!("name: {}\n", "a".repeat(1 << 20))),
        (
            "1 MB quoted key",
            format!("\"{}\": 1\n", "k".repeat(1 << 20)),
        ),
        ("tabs", "services:\n\tweb:\n\t\timage: x\n".into()),
        (
            "tab after colon",
            "name:\tshop\nservices:\n  web:\n    image:\tnginx\n".into(),
        ),
        (
            "BOM",
            "\u{feff}name: shop\nservices:\n  web:\n    image: nginx\n".into(),
        ),
        ("BOM only", "\u{feff}".into()),
        ("alias without anchor", "services: *nothing\n".into()),
        ("alias as key", "*a : 1\n".into()),
        ("anchor on alias", "a: &x 1\nb: &y *x\n".into()),
        (
            "merge of a scalar",
            "services:\n  web:\n    <<: 1\n    image: x\n".into(),
        ),
        (
            "self-referential merge",
            "services: &s\n  web:\n    <<: *s\n".into(),
        ),
        ("alias bomb", alias_bomb(9, 9)),
        (
            "alias bomb in services",
            format!("{}services:\n  web: *l8\n", alias_bomb(9, 9)),
        ),
        ("NUL bytes", "name: a\u{0}b\nservices: {}\n".into()),
        ("lone surrogate escape", "name: \"\\ud800\"\n".into()),
        (
            "CR line ends",
            "name: shop\rservices:\r  web:\r    image: x\r".into(),
        ),
        ("directive only", "%YAML 1.2\n".into()),
        ("bad directive", "%YAML 9.9\n---\nname: a\n".into()),
        (
            "duplicate keys",
            "name: a\nname: b\nservices: {}\nservices: {}\n".into(),
        ),
        ("complex key", "? [a, b]\n: 1\n".into()),
        (
            "huge line/column",
            format!("{}name: [\n", "\n".repeat(100_000)),
        ),
        (
            "deep unknown keys",
            format!("services:\n  web:\n    image: x\n{}", unknown_nest(100)),
        ),
        (
            "many unknown keys",
            (0..5000).map(|i| format!("unknown{i}: {i}\n")).collect(),
        ),
        ("many services", many_services(2000)),
        (
            "huge interpolation",
            format!(
                "services:\n  web:\n    image: \"{}\"\n",
                "${A:-x}".repeat(50_000)
            ),
        ),
        (
            "unterminated interpolation",
            format!(
                "services:\n  web:\n    image: \"{}\"\n",
                "${".repeat(50_000)
            ),
        ),
        ("long dependency chain", dep_chain(2000)),
        ("dependency cycle of 500", dep_cycle(500)),
        (
            "non-ASCII everywhere",
            "名前: 値\nservices:\n  ウェブ:\n    image: 画像\n    ports: [\"８０:８０\"]\n".into(),
        ),
        (
            "u16 overflow port",
            "services:\n  web:\n    image: x\n    port: 99999999999999999999999\n".into(),
        ),
        (
            "float port",
            "services:\n  web:\n    image: x\n    port: 8.0e1\n".into(),
        ),
    ];
    for (name, text) in cases {
        survives(name, text, limit);
    }
}

/// A billion-laughs document of modest size: `depth` levels each repeating the previous
/// alias `width` times (width^depth leaves when fully expanded).
fn alias_bomb(depth: usize, width: usize) -> String {
    let mut out = String::from("l0: &l0 [\"lol\"]\n");
    for i in 1..depth {
        let refs = vec![format!("*l{}", i - 1); width].join(", ");
        let _ = writeln!(out, "l{i}: &l{i} [{refs}]");
    }
    out
}

fn unknown_nest(depth: usize) -> String {
    let mut out = String::new();
    for i in 0..depth {
        let _ = writeln!(out, "{}u{i}:", " ".repeat(4 + i));
    }
    out
}

fn many_services(n: usize) -> String {
    let mut out = String::from("services:\n");
    for i in 0..n {
        let _ = writeln!(
            out,
            "  s{i}:\n    image: app:{i}\n    ports: [\"{}:80\"]",
            1 + (i % 100)
        );
    }
    out
}

fn dep_chain(n: usize) -> String {
    let mut out = String::from("services:\n");
    for i in 0..n {
        let _ = writeln!(out, "  s{i}:\n    image: app");
        if i > 0 {
            let _ = writeln!(out, "    depends_on: [s{}]", i - 1);
        }
    }
    out
}

fn dep_cycle(n: usize) -> String {
    let mut out = String::from("services:\n");
    for i in 0..n {
        let _ = writeln!(
            out,
            "  s{i}:\n    image: app\n    depends_on: [s{}]",
            (i + 1) % n
        );
    }
    out
}

#[test]
#[ignore]
fn survey_tmp() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    use std::collections::BTreeMap;
    let mut runner = TestRunner::default();
    let strat = (stack_doc().prop_map(|y| y.document()), load_options());
    let mut tally: BTreeMap<String, (usize, String)> = BTreeMap::new();
    let mut ok = 0;
    let mut errs = 0;
    for _ in 0..20000 {
        let (doc, opts) = strat.new_tree(&mut runner).expect("tree").current();
        match load(&doc, &opts) {
            Ok(l) => {
                ok += 1;
                if let Err(e) = exercise(&l.stack) {
                    println!("EXERCISE FAIL {e}\n{doc}");
                }
            }
            Err(d) => {
                errs += 1;
                for it in &d.items {
                    if it.at.source != SourceId::COMMAND_LINE && it.at.line == 0 {
                        let m: String = it
                            .message
                            .chars()
                            .map(|c| if c.is_ascii_digit() { '#' } else { c })
                            .collect();
                        let m = m
                            .split('`')
                            .enumerate()
                            .map(|(i, p)| if i % 2 == 1 { "`X`" } else { p })
                            .collect::<String>();
                        let m = format!("{:?}: {m}", it.kind);
                        let e = tally.entry(m).or_insert((0, doc.clone()));
                        e.0 += 1;
                        if doc.len() < e.1.len() {
                            e.1 = doc.clone();
                        }
                    }
                }
            }
        }
    }
    println!("ok {ok} err {errs}");
    for (m, (n, doc)) in tally {
        println!("=== {n} {m}\n{doc}");
    }
}
