//! Path patterns (`find`, `restore --include/--exclude`), matched against
//! the normalized paths a backup records under the blob root: `*` and `?`
//! never cross a `/`, `**` as a whole component crosses any number, and
//! `[...]` is a character class. A pattern holding a `/` is matched against
//! the whole path (a leading `/` anchors it at the root, as it always is); one
//! without is matched against the file's name in any directory, as `find
//! -name` does.

use glob::{MatchOptions, Pattern};

const OPTIONS: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// A parsed path pattern.
#[derive(Debug, Clone)]
pub struct PathPattern {
    pattern: Pattern,
    whole_path: bool,
}

impl PathPattern {
    /// Parses `text`; `Err` names what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let whole_path = text.contains('/');
        let anchored = text.trim_start_matches('/');
        if anchored.is_empty() {
            return Err(format!("pattern {text:?} matches nothing"));
        }
        let pattern = Pattern::new(anchored).map_err(|e| format!("pattern {text:?}: {e}"))?;
        Ok(Self {
            pattern,
            whole_path,
        })
    }

    /// Whether `path` (normalized, relative) matches.
    pub fn matches(&self, path: &str) -> bool {
        let subject = match self.whole_path {
            true => path,
            false => path.rsplit('/').next().unwrap_or(path),
        };
        self.pattern.matches_with(subject, OPTIONS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, path: &str) -> bool {
        PathPattern::parse(pattern).unwrap().matches(path)
    }

    #[test]
    fn names_anywhere_paths_from_the_root() {
        assert!(matches("*.jpg", "a.jpg"));
        assert!(matches("*.jpg", "users/7/a.jpg"));
        assert!(!matches("*.jpg", "users/7/a.png"));
        assert!(matches("users/*/a.jpg", "users/7/a.jpg"));
        assert!(matches("/users/*/a.jpg", "users/7/a.jpg"));
        assert!(!matches("users/*.jpg", "users/7/a.jpg"), "* stops at /");
        assert!(matches("users/**/*.jpg", "users/7/2026/a.jpg"));
        assert!(matches("users/**", "users/7/a.jpg"));
        assert!(!matches("users/**", "other/users/a.jpg"));
        assert!(matches("a?[0-9].txt", "x/ab7.txt"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(PathPattern::parse("[").is_err());
        assert!(PathPattern::parse("/").is_err());
        assert!(PathPattern::parse("a/***").is_err());
    }
}
