//! Label matchers with Prometheus semantics.
//!
//! - Regexes are fully anchored (`^(?s:…)$`): `job=~"api"` does not match `"api-1"`, and `.`
//!   matches a newline, as in Prometheus 3.x.
//! - A missing label has the value `""`: `{foo=""}` matches series without `foo`, `{foo!="x"}`
//!   matches series without `foo`, `{foo=~".*"}` matches every series.

use std::fmt;

use regex::Regex;

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~`
    RegexMatch,
    /// `!~`
    RegexNoMatch,
}

impl MatchOp {
    pub fn as_str(&self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::RegexMatch => "=~",
            MatchOp::RegexNoMatch => "!~",
        }
    }
}

/// One matcher: a label name, an operator and a value (a regex for `=~`/`!~`).
#[derive(Clone, Debug)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    regex: Option<Regex>,
}

/// Longest regex source accepted, so a query cannot make the shard compile a huge automaton.
pub const REGEX_BYTES_MAX: usize = 64 * 1024;

impl Matcher {
    pub fn new(op: MatchOp, name: impl Into<String>, value: impl Into<String>) -> Result<Matcher> {
        let name = name.into();
        let value = value.into();
        let regex = match op {
            MatchOp::Equal | MatchOp::NotEqual => None,
            MatchOp::RegexMatch | MatchOp::RegexNoMatch => {
                let invalid = |reason: String| Error::InvalidMatcher {
                    matcher: format!("{name}{}{value:?}", op.as_str()),
                    reason,
                };
                if value.len() > REGEX_BYTES_MAX {
                    return Err(invalid(format!(
                        "regex is {} bytes, longer than the limit of {REGEX_BYTES_MAX}",
                        value.len()
                    )));
                }
                Some(
                    regex::RegexBuilder::new(&format!("^(?s:{value})$"))
                        .size_limit(8 << 20)
                        .build()
                        .map_err(|e| invalid(e.to_string()))?,
                )
            }
        };
        Ok(Matcher {
            name,
            op,
            value,
            regex,
        })
    }

    /// Shorthand for an equality matcher, which cannot fail.
    pub fn equal(name: impl Into<String>, value: impl Into<String>) -> Matcher {
        Matcher {
            name: name.into(),
            op: MatchOp::Equal,
            value: value.into(),
            regex: None,
        }
    }

    /// Whether a label value (`""` when the label is missing) satisfies the matcher.
    pub fn matches(&self, value: &str) -> bool {
        match (self.op, &self.regex) {
            (MatchOp::Equal, _) => value == self.value,
            (MatchOp::NotEqual, _) => value != self.value,
            (MatchOp::RegexMatch, Some(re)) => re.is_match(value),
            (MatchOp::RegexNoMatch, Some(re)) => !re.is_match(value),
            (MatchOp::RegexMatch | MatchOp::RegexNoMatch, None) => {
                unreachable!("regex matchers are always built with their regex")
            }
        }
    }

    /// Whether the matcher also selects series that lack the label.
    pub fn matches_empty(&self) -> bool {
        self.matches("")
    }
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op.as_str(), self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(op: MatchOp, v: &str) -> Matcher {
        Matcher::new(op, "l", v).unwrap()
    }

    #[test]
    fn regexes_are_anchored_and_dot_matches_newline() {
        assert!(m(MatchOp::RegexMatch, "api").matches("api"));
        assert!(!m(MatchOp::RegexMatch, "api").matches("api-1"));
        assert!(!m(MatchOp::RegexMatch, "api").matches("my-api"));
        assert!(m(MatchOp::RegexMatch, "a.c").matches("a\nc"));
        assert!(m(MatchOp::RegexMatch, "a|b").matches("b"));
        assert!(!m(MatchOp::RegexMatch, "a|b").matches("ab"));
        assert!(m(MatchOp::RegexNoMatch, "a|b").matches("ab"));
    }

    #[test]
    fn empty_value_semantics() {
        assert!(m(MatchOp::Equal, "").matches_empty());
        assert!(m(MatchOp::NotEqual, "x").matches_empty());
        assert!(!m(MatchOp::NotEqual, "").matches_empty());
        assert!(m(MatchOp::RegexMatch, ".*").matches_empty());
        assert!(!m(MatchOp::RegexMatch, ".+").matches_empty());
        assert!(m(MatchOp::RegexNoMatch, ".+").matches_empty());
    }

    #[test]
    fn bad_regex_names_the_matcher() {
        let err = Matcher::new(MatchOp::RegexMatch, "job", "(").unwrap_err();
        assert!(err.to_string().contains(r#"job=~"(""#), "{err}");
    }
}
