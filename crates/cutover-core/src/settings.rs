//! The settings review of an operator's configuration files: which keys a file sets, and
//! which of them a new version of the image no longer knows.
//!
//! Real images ship their defaults as files — a sample config, an `.ini`, a values file, a
//! list of the keys a version reads. The review reads that file from the old and the new
//! image (the runtime adapter does, without starting them), and compares: a key the operator
//! still sets that the old version knew and the new one does not was removed or renamed —
//! the hand diff of a chart's `values.yaml` one seed runbook describes. Keys the new version
//! knows and the old did not are listed too: settings to consider.
//!
//! Keys are dotted paths (`database.args.host`, `[server] ROOT_URL` → `server.ROOT_URL`).
//! The scanners read the common line-based shapes of each format without a full parser: block
//! YAML mappings, INI and TOML `[section]`s with `key = value`, env files. In a defaults file,
//! commented-out keys (`# key: value`, `;KEY = value`) count as known: sample configs
//! document their settings that way.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// The format of a configuration file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigFormat {
    Yaml,
    Ini,
    Toml,
    Env,
}

impl ConfigFormat {
    /// The format a file name's extension says, if it says one.
    pub fn from_name(name: &str) -> Option<ConfigFormat> {
        let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase())?;
        Some(match ext.as_str() {
            "yaml" | "yml" => ConfigFormat::Yaml,
            "ini" | "cfg" | "conf" => ConfigFormat::Ini,
            "toml" => ConfigFormat::Toml,
            "env" => ConfigFormat::Env,
            _ => return None,
        })
    }

    pub fn parse(s: &str) -> Option<ConfigFormat> {
        Some(match s {
            "yaml" => ConfigFormat::Yaml,
            "ini" => ConfigFormat::Ini,
            "toml" => ConfigFormat::Toml,
            "env" => ConfigFormat::Env,
            _ => return None,
        })
    }
}

/// A key a file sets, and the line (1-based) it is set on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyAt {
    pub key: String,
    pub line: usize,
}

/// The keys of a configuration file, in order. `commented` also counts commented-out keys
/// (for a defaults file).
pub fn keys(format: ConfigFormat, text: &str, commented: bool) -> Vec<KeyAt> {
    match format {
        ConfigFormat::Yaml => yaml_keys(text, commented),
        ConfigFormat::Ini | ConfigFormat::Toml => section_keys(text, commented),
        ConfigFormat::Env => env_keys(text, commented),
    }
}

/// Block-style YAML: `key:` at an indentation nests under the last key less indented.
fn yaml_keys(text: &str, commented: bool) -> Vec<KeyAt> {
    let mut out = Vec::new();
    // (indent, key) of the enclosing mappings.
    let mut stack: Vec<(usize, String)> = Vec::new();
    // The indentation below which lines belong to a block scalar or a list item.
    let mut block_scalar: Option<usize> = None;
    for (i, raw) in text.lines().enumerate() {
        let indent = raw.len() - raw.trim_start().len();
        let mut line = raw.trim_start();
        if line.is_empty() {
            continue;
        }
        // Inside a block scalar, or a list item's own mapping: no keys of this file's.
        if let Some(base) = block_scalar {
            if indent > base {
                continue;
            }
            block_scalar = None;
        }
        let mut indent = indent;
        if let Some(rest) = line.strip_prefix('#') {
            if !commented {
                continue;
            }
            // `# key: value` documents a key at the comment's indentation (+ its spaces).
            let rest_trim = rest.trim_start();
            indent += 1 + (rest.len() - rest_trim.len());
            line = rest_trim;
        }
        if line.starts_with("- ") || line == "-" {
            block_scalar = Some(indent);
            continue;
        }
        if line.starts_with("---") {
            continue;
        }
        let Some((key, value)) = split_yaml_key(line) else {
            continue;
        };
        while stack.last().is_some_and(|(ind, _)| *ind >= indent) {
            stack.pop();
        }
        let mut path: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).collect();
        path.push(key);
        out.push(KeyAt {
            key: path.join("."),
            line: i + 1,
        });
        let value = value.split(" #").next().unwrap_or("").trim();
        if value.is_empty() {
            stack.push((indent, key.to_string()));
        } else if value.starts_with('|') || value.starts_with('>') {
            block_scalar = Some(indent);
        }
    }
    dedup(out)
}

/// `key: value` → (key, value) for a plain or quoted mapping key.
fn split_yaml_key(line: &str) -> Option<(&str, &str)> {
    let (key, value) = if let Some(rest) = line.strip_prefix('"') {
        let end = rest.find('"')?;
        let after = rest[end + 1..].strip_prefix(':')?;
        (&rest[..end], after)
    } else if let Some(rest) = line.strip_prefix('\'') {
        let end = rest.find('\'')?;
        let after = rest[end + 1..].strip_prefix(':')?;
        (&rest[..end], after)
    } else {
        let colon = line
            .find(": ")
            .or_else(|| line.strip_suffix(':').map(str::len))?;
        (&line[..colon], line.get(colon + 1..).unwrap_or(""))
    };
    let ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'));
    ok.then_some((key, value))
}

/// INI and TOML: `[section]` (TOML: `[a.b]`, `[[array]]`) prefixes `key = value` lines.
fn section_keys(text: &str, commented: bool) -> Vec<KeyAt> {
    let mut out = Vec::new();
    let mut section = String::new();
    for (i, raw) in text.lines().enumerate() {
        let mut line = raw.trim();
        if let Some(rest) = line.strip_prefix(['#', ';']) {
            if !commented {
                continue;
            }
            line = rest.trim_start_matches(['#', ';']).trim();
        }
        if let Some(h) = line.strip_prefix('[') {
            let h = h.trim_start_matches('[');
            if let Some(name) = h.split(']').next() {
                section = name.trim().trim_matches('"').to_string();
            }
            continue;
        }
        let Some((key, _)) = line.split_once(['=', ':']) else {
            continue;
        };
        let key = key.trim().trim_matches('"');
        if key.is_empty() || key.contains(char::is_whitespace) {
            continue;
        }
        out.push(KeyAt {
            key: if section.is_empty() {
                key.to_string()
            } else {
                format!("{section}.{key}")
            },
            line: i + 1,
        });
    }
    dedup(out)
}

/// `KEY=value` lines, `export KEY=value` too.
fn env_keys(text: &str, commented: bool) -> Vec<KeyAt> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let mut line = raw.trim();
        if let Some(rest) = line.strip_prefix('#') {
            if !commented {
                continue;
            }
            line = rest.trim();
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, _)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.push(KeyAt {
                key: key.to_string(),
                line: i + 1,
            });
        }
    }
    dedup(out)
}

fn dedup(keys: Vec<KeyAt>) -> Vec<KeyAt> {
    let mut seen = BTreeSet::new();
    keys.into_iter()
        .filter(|k| seen.insert(k.key.clone()))
        .collect()
}

/// What the review of one operator file found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileReview {
    pub service: String,
    /// The operator's file, as the stack file names it.
    pub file: String,
    /// Keys the operator sets that the old version knew and the new one does not: removed
    /// or renamed. An upgrade with any is refused unless acknowledged.
    pub removed: Vec<KeyAt>,
    /// Keys the new version knows that the old one did not.
    pub added: Vec<String>,
}

/// Compares the operator's keys with the defaults of the old and the new version. A key
/// the defaults list (or a parent of a key they list) is known; a key the operator sets is
/// reported only when the old version knew it, so a file's own free-form sections (a map of
/// user-chosen names) are not mistaken for settings.
pub fn review(
    service: &str,
    file: &str,
    operator: &[KeyAt],
    old: &[KeyAt],
    new: &[KeyAt],
) -> FileReview {
    let set = |keys: &[KeyAt]| -> BTreeSet<String> { keys.iter().map(|k| k.key.clone()).collect() };
    let (old, new) = (set(old), set(new));
    let known = |set: &BTreeSet<String>, key: &str| set.contains(key);
    let removed = operator
        .iter()
        .filter(|k| known(&old, &k.key) && !known(&new, &k.key))
        // A nested key under a removed parent says nothing more than the parent.
        .filter(|k| {
            !operator.iter().any(|p| {
                k.key.starts_with(&format!("{}.", p.key))
                    && known(&old, &p.key)
                    && !known(&new, &p.key)
            })
        })
        .cloned()
        .collect();
    let added = new
        .difference(&old)
        .filter(|k| {
            // Only the top of a new subtree.
            !new.iter()
                .any(|p| k.starts_with(&format!("{p}.")) && !old.contains(p))
        })
        .cloned()
        .collect();
    FileReview {
        service: service.to_string(),
        file: file.to_string(),
        removed,
        added,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(keys: &[KeyAt]) -> Vec<String> {
        keys.iter()
            .map(|k| format!("{}@{}", k.key, k.line))
            .collect()
    }

    #[test]
    fn yaml_keys_nest_by_indentation_and_skip_lists_and_block_scalars() {
        let text = "\
# settings
server_name: example.org
database:
  name: psycopg2
  args:
    host: db   # inline comment
    cp_min: 5
listeners:
  - port: 8008
    type: http
motd: |
  key: not a key
  more text
\"quoted.key\": 1
url_preview_enabled: true
";
        assert_eq!(
            names(&keys(ConfigFormat::Yaml, text, false)),
            [
                "server_name@2",
                "database@3",
                "database.name@4",
                "database.args@5",
                "database.args.host@6",
                "database.args.cp_min@7",
                "listeners@8",
                "motd@11",
                "quoted.key@14",
                "url_preview_enabled@15"
            ]
        );
    }

    #[test]
    fn commented_keys_of_a_defaults_file_count_as_known() {
        let text =
            "#url_preview_enabled: false\n# max_upload_size: 50M\nreal: 1\n# a sentence: no key\n";
        assert_eq!(
            names(&keys(ConfigFormat::Yaml, text, true)),
            ["url_preview_enabled@1", "max_upload_size@2", "real@3"]
        );
        assert_eq!(names(&keys(ConfigFormat::Yaml, text, false)), ["real@3"]);
        let ini = "[server]\n;ROOT_URL = http://x/\nHTTP_PORT = 3000\n";
        assert_eq!(
            names(&keys(ConfigFormat::Ini, ini, true)),
            ["server.ROOT_URL@2", "server.HTTP_PORT@3"]
        );
    }

    #[test]
    fn ini_toml_and_env_keys() {
        let ini = "APP_NAME = Gitea\n[database]\nDB_TYPE = postgres\nHOST=db:5432\n";
        assert_eq!(
            names(&keys(ConfigFormat::Ini, ini, false)),
            ["APP_NAME@1", "database.DB_TYPE@3", "database.HOST@4"]
        );
        let toml = "title = \"x\"\n[server.http]\nport = 80\n[[plugins]]\nname = \"a\"\n";
        assert_eq!(
            names(&keys(ConfigFormat::Toml, toml, false)),
            ["title@1", "server.http.port@3", "plugins.name@5"]
        );
        let env = "# c\nexport A=1\nB_2=x=y\nnot a line\n";
        assert_eq!(
            names(&keys(ConfigFormat::Env, env, false)),
            ["A@2", "B_2@3"]
        );
    }

    #[test]
    fn a_key_the_old_version_knew_and_the_new_one_does_not_is_removed() {
        let operator = keys(
            ConfigFormat::Yaml,
            "server_name: x\nurl_preview_ip_range_blacklist:\n  - 10.0.0.0/8\nmy_rooms:\n  lobby: 1\nexperimental_features:\n  msc1234: true\n",
            false,
        );
        let old = keys(
            ConfigFormat::Yaml,
            "server_name:\nurl_preview_ip_range_blacklist:\nexperimental_features:\n  msc1234:\n",
            true,
        );
        let new = keys(
            ConfigFormat::Yaml,
            "server_name:\nurl_preview_ip_range_blocklist:\nexperimental_features:\nnew_thing:\n",
            true,
        );
        let r = review("synapse", "conf.d/operator.yaml", &operator, &old, &new);
        assert_eq!(
            names(&r.removed),
            [
                "url_preview_ip_range_blacklist@2",
                "experimental_features.msc1234@7"
            ]
        );
        assert_eq!(r.added, ["new_thing", "url_preview_ip_range_blocklist"]);
        // Keys neither version lists (the operator's own names) are not reported.
        assert!(!r.removed.iter().any(|k| k.key.starts_with("my_rooms")));
    }

    #[test]
    fn formats_come_from_names_or_words() {
        assert_eq!(
            ConfigFormat::from_name("a/homeserver.yml"),
            Some(ConfigFormat::Yaml)
        );
        assert_eq!(ConfigFormat::from_name("app.ini"), Some(ConfigFormat::Ini));
        assert_eq!(ConfigFormat::from_name(".env"), Some(ConfigFormat::Env));
        assert_eq!(ConfigFormat::from_name("config"), None);
        assert_eq!(ConfigFormat::parse("toml"), Some(ConfigFormat::Toml));
    }
}
