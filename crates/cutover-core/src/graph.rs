//! Dependency order of services.

use indexmap::IndexMap;

/// Services in waves: every service comes after all of its dependencies; services of one wave
/// do not depend on each other and may be upgraded in parallel. Within a wave, file order.
///
/// `Err` holds one dependency cycle, as the path `a → b → … → a`.
pub fn waves(deps: &IndexMap<String, Vec<String>>) -> Result<Vec<Vec<String>>, Vec<String>> {
    // Kahn's algorithm, one wave at a time: O(services + edges). Unknown names are ignored
    // (validation reports them).
    let index = |n: &str| deps.get_index_of(n);
    let mut waiting_on: Vec<usize> = vec![0; deps.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); deps.len()];
    for (i, (_, ds)) in deps.iter().enumerate() {
        for d in ds {
            if let Some(j) = index(d) {
                waiting_on[i] += 1;
                dependents[j].push(i);
            }
        }
    }
    let mut wave: Vec<usize> = (0..deps.len()).filter(|i| waiting_on[*i] == 0).collect();
    let mut placed = 0;
    let mut waves = Vec::new();
    while !wave.is_empty() {
        placed += wave.len();
        let mut next = Vec::new();
        for &i in &wave {
            for &k in &dependents[i] {
                waiting_on[k] -= 1;
                if waiting_on[k] == 0 {
                    next.push(k);
                }
            }
        }
        next.sort_unstable();
        waves.push(
            wave.iter()
                .filter_map(|&i| deps.get_index(i).map(|(n, _)| n.clone()))
                .collect(),
        );
        wave = next;
    }
    if placed < deps.len() {
        let done: Vec<&str> = waiting_on
            .iter()
            .enumerate()
            .filter(|(_, w)| **w == 0)
            .filter_map(|(i, _)| deps.get_index(i).map(|(n, _)| n.as_str()))
            .collect();
        return Err(find_cycle(deps, &done));
    }
    Ok(waves)
}

/// Services in one order that respects dependencies.
pub fn order(deps: &IndexMap<String, Vec<String>>) -> Result<Vec<String>, Vec<String>> {
    waves(deps).map(|w| w.into_iter().flatten().collect())
}

/// A cycle among the services not yet ordered: walk dependencies until a name repeats.
fn find_cycle(deps: &IndexMap<String, Vec<String>>, done: &[&str]) -> Vec<String> {
    let pending = |n: &str| deps.contains_key(n) && !done.contains(&n);
    let Some(start) = deps.keys().find(|k| pending(k)) else {
        return Vec::new();
    };
    let mut path = vec![start.clone()];
    loop {
        let last = path.last().map(String::as_str).unwrap_or_default();
        let next = deps
            .get(last)
            .and_then(|ds| ds.iter().find(|d| pending(d)))
            .cloned();
        let Some(next) = next else { return path };
        if let Some(i) = path.iter().position(|p| *p == next) {
            let mut cycle = path.split_off(i);
            cycle.push(next);
            return cycle;
        }
        path.push(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deps(edges: &[(&str, &[&str])]) -> IndexMap<String, Vec<String>> {
        edges
            .iter()
            .map(|(n, ds)| (n.to_string(), ds.iter().map(|d| d.to_string()).collect()))
            .collect()
    }

    #[test]
    fn dependencies_come_first_and_independent_services_share_a_wave() {
        let g = deps(&[
            ("ui", &["daemon"]),
            ("daemon", &["db"]),
            ("db", &[]),
            ("worker", &["db"]),
        ]);
        let w = waves(&g).expect("no cycle");
        assert_eq!(
            w,
            vec![
                vec!["db".to_string()],
                vec!["daemon".into(), "worker".into()],
                vec!["ui".into()]
            ]
        );
        assert_eq!(
            order(&g).expect("no cycle"),
            vec!["db", "daemon", "worker", "ui"]
        );
    }

    #[test]
    fn a_cycle_is_reported_as_a_closed_path() {
        let g = deps(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"]), ("d", &[])]);
        assert_eq!(waves(&g).expect_err("cycle"), vec!["a", "b", "c", "a"]);
        let g = deps(&[("x", &["y"]), ("y", &["y"])]);
        assert_eq!(waves(&g).expect_err("cycle"), vec!["y", "y"]);
    }
}
