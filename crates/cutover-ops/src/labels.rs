//! The config-key check: a new version may declare, in image labels, which environment
//! settings it accepts and which it deprecates. Keys the stack sets that the new version no
//! longer accepts are reported in preflight and refuse the upgrade unless acknowledged
//! (`--ack-settings`) — the values-file diff operators did by hand between chart versions.
//!
//! `io.cutover.settings.accepted`: keys separated by commas or spaces; `PREFIX_*` accepts a
//! family. `io.cutover.settings.deprecated`: keys still accepted but going away.

use std::collections::BTreeMap;

pub const ACCEPTED: &str = "io.cutover.settings.accepted";
pub const DEPRECATED: &str = "io.cutover.settings.deprecated";

fn keys(label: &str) -> Vec<&str> {
    label
        .split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .collect()
}

fn matches(pattern: &str, key: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => key.starts_with(prefix),
        None => pattern == key,
    }
}

/// What the image's labels say about the keys `set`: (not accepted, deprecated).
pub fn review<'a>(
    labels: &BTreeMap<String, String>,
    set: impl Iterator<Item = &'a String>,
) -> (Vec<String>, Vec<String>) {
    let accepted = labels.get(ACCEPTED).map(|l| keys(l));
    let deprecated = labels.get(DEPRECATED).map(|l| keys(l)).unwrap_or_default();
    let mut removed = Vec::new();
    let mut going = Vec::new();
    for key in set {
        if let Some(acc) = &accepted
            && !acc.iter().any(|p| matches(p, key))
        {
            removed.push(key.clone());
        } else if deprecated.iter().any(|p| matches(p, key)) {
            going.push(key.clone());
        }
    }
    (removed, going)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_outside_the_accepted_list_are_removed_and_listed_ones_deprecated() {
        let labels = BTreeMap::from([
            (ACCEPTED.to_string(), "DB_URL, CACHE_*  MODE".to_string()),
            (DEPRECATED.to_string(), "MODE".to_string()),
        ]);
        let set: Vec<String> = ["DB_URL", "CACHE_SIZE", "MODE", "OLD_FLAG"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (removed, deprecated) = review(&labels, set.iter());
        assert_eq!(removed, ["OLD_FLAG"]);
        assert_eq!(deprecated, ["MODE"]);
        // An image that declares nothing accepts everything.
        let (removed, deprecated) = review(&BTreeMap::new(), set.iter());
        assert!(removed.is_empty() && deprecated.is_empty());
    }
}
