//! Which keyspaces and tables a backup covers: `--include`/`--exclude` globs matched
//! against `keyspace` and `keyspace.table`.
//!
//! Everything is included by default except `system_traces` (query traces: large, and
//! worthless after a restore). Naming it in `--include` brings it back.

/// Keyspaces left out unless an `--include` names them.
pub const DEFAULT_EXCLUDES: &[&str] = &["system_traces"];

/// Cassandra's own keyspaces (restore leaves them out unless asked).
pub const SYSTEM_KEYSPACES: &[&str] = &[
    "system",
    "system_schema",
    "system_auth",
    "system_distributed",
    "system_traces",
    "system_views",
    "system_virtual_schema",
    "system_cluster_metadata",
];

/// True for Cassandra's own keyspaces.
pub fn is_system_keyspace(keyspace: &str) -> bool {
    SYSTEM_KEYSPACES.contains(&keyspace)
}

/// Include and exclude globs (`*` any run of characters, `?` one character).
#[derive(Debug, Clone, Default)]
pub struct TableFilter {
    include: Vec<String>,
    exclude: Vec<String>,
}

/// A glob that can never match anything a user means.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "filter {0:?} is empty or contains '/': use keyspace or keyspace.table globs, e.g. 'app_*' or 'app.users'"
)]
pub struct BadGlob(pub String);

impl TableFilter {
    pub fn new(include: Vec<String>, exclude: Vec<String>) -> Result<TableFilter, BadGlob> {
        for g in include.iter().chain(&exclude) {
            if g.is_empty() || g.contains('/') {
                return Err(BadGlob(g.clone()));
            }
        }
        Ok(TableFilter { include, exclude })
    }

    fn any_matches(globs: &[impl AsRef<str>], keyspace: &str, table: Option<&str>) -> bool {
        globs.iter().any(|g| {
            let g = g.as_ref();
            glob_match(g, keyspace)
                || table.is_some_and(|t| glob_match(g, &format!("{keyspace}.{t}")))
        })
    }

    /// Whether a table (or, with `table` = None, a whole keyspace) is backed up.
    pub fn includes(&self, keyspace: &str, table: Option<&str>) -> bool {
        let included = self.include.is_empty() || Self::any_matches(&self.include, keyspace, table);
        // A keyspace-level question cannot be answered "no" by table-level includes.
        let included = included
            || (table.is_none()
                && self.include.iter().any(|g| {
                    g.split_once('.')
                        .is_some_and(|(k, _)| glob_match(k, keyspace))
                }));
        if !included || Self::any_matches(&self.exclude, keyspace, table) {
            return false;
        }
        let default_excluded = Self::any_matches(DEFAULT_EXCLUDES, keyspace, table);
        !default_excluded || Self::any_matches(&self.include, keyspace, table)
    }
}

/// Shell-style wildcard match of a whole string.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matcher with backtracking to the last `*`.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(include: &[&str], exclude: &[&str]) -> TableFilter {
        TableFilter::new(
            include.iter().map(|s| s.to_string()).collect(),
            exclude.iter().map(|s| s.to_string()).collect(),
        )
        .unwrap()
    }

    #[test]
    fn globs() {
        assert!(glob_match("app_*", "app_users"));
        assert!(glob_match("a?p.*", "app.users"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("app", "app_users"));
        assert!(glob_match("*_idx*", "t.val_idx_2"));
    }

    #[test]
    fn defaults_leave_out_system_traces_only() {
        let all = f(&[], &[]);
        assert!(all.includes("app", Some("users")));
        assert!(all.includes("system", Some("local")));
        assert!(!all.includes("system_traces", Some("sessions")));
        assert!(!all.includes("system_traces", None));
        let traces = f(&["system_traces"], &[]);
        assert!(traces.includes("system_traces", Some("sessions")));
    }

    #[test]
    fn include_and_exclude_on_keyspace_and_table() {
        let only_users = f(&["app.users"], &[]);
        assert!(only_users.includes("app", Some("users")));
        assert!(!only_users.includes("app", Some("events")));
        assert!(
            only_users.includes("app", None),
            "the keyspace must be walked"
        );
        assert!(!only_users.includes("other", None));
        let no_events = f(&[], &["app.events"]);
        assert!(no_events.includes("app", Some("users")));
        assert!(!no_events.includes("app", Some("events")));
        assert!(TableFilter::new(vec!["".into()], vec![]).is_err());
        assert!(TableFilter::new(vec![], vec!["a/b".into()]).is_err());
    }
}
