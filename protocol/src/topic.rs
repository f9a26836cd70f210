//! Topic names, topic filters, shared-subscription syntax and matching (3.1.1 §4.7, 5.0 §4.7-4.8).
//!
//! These are pure functions on `&str`: the route table in `beamq-actors` builds its trie on top of
//! the same level rules, and the tests here are the reference the trie is checked against.

/// Why a topic name or filter is not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Zero-length topic or filter [MQTT-4.7.3-1].
    #[error("empty topic")]
    Empty,
    /// A wildcard in a topic name [MQTT-4.7.3-1 ... MQTT-3.3.2-2].
    #[error("wildcard in topic name")]
    WildcardInName,
    /// `#` not alone in the last level, or `+` not alone in its level [MQTT-4.7.1-2, MQTT-4.7.1-3].
    #[error("misplaced wildcard in topic filter")]
    MisplacedWildcard,
    /// More levels than the configured maximum.
    #[error("too many topic levels")]
    TooManyLevels,
    /// `$share/` without a group, with a wildcard in the group, or without a filter
    /// [MQTT-4.8.2-1, MQTT-4.8.2-2].
    #[error("invalid shared subscription")]
    InvalidShare,
}

/// Checks a PUBLISH topic name: non-empty, no wildcards, at most `max_levels` levels
/// (0 = unlimited). UTF-8 rules were already enforced by the codec.
pub fn validate_name(topic: &str, max_levels: usize) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(TopicError::WildcardInName);
    }
    check_levels(topic, max_levels)
}

/// Checks a subscription topic filter (without any `$share/` prefix).
pub fn validate_filter(filter: &str, max_levels: usize) -> Result<(), TopicError> {
    if filter.is_empty() {
        return Err(TopicError::Empty);
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let is_last = levels.peek().is_none();
        match level {
            "#" if !is_last => return Err(TopicError::MisplacedWildcard),
            "#" | "+" => {}
            _ if level.bytes().any(|b| b == b'+' || b == b'#') => {
                return Err(TopicError::MisplacedWildcard);
            }
            _ => {}
        }
    }
    check_levels(filter, max_levels)
}

fn check_levels(s: &str, max_levels: usize) -> Result<(), TopicError> {
    if max_levels > 0 && level_count(s) > max_levels {
        return Err(TopicError::TooManyLevels);
    }
    Ok(())
}

/// Number of levels: one more than the number of separators.
pub fn level_count(s: &str) -> usize {
    s.bytes().filter(|b| *b == b'/').count() + 1
}

/// True when the filter contains `+` or `#`.
pub fn has_wildcards(filter: &str) -> bool {
    filter.bytes().any(|b| b == b'+' || b == b'#')
}

/// A subscription filter split into its shared-subscription group (if any) and the real filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitFilter<'a> {
    /// `Some(group)` for `$share/{group}/{filter}`; `Some("$queue")` for `$queue/{filter}`.
    pub group: Option<&'a str>,
    /// The filter that topics are matched against.
    pub filter: &'a str,
}

/// The group name used for `$queue/{filter}` subscriptions (EMQX's shorthand for one
/// broker-wide share group per filter).
pub const QUEUE_GROUP: &str = "$queue";

/// Splits off `$share/{group}/` or `$queue/`. A `$share` prefix that is not followed by a valid
/// group and a non-empty filter is an error, not a plain filter [MQTT-4.8.2-1, MQTT-4.8.2-2].
pub fn split_shared(filter: &str) -> Result<SplitFilter<'_>, TopicError> {
    if let Some(rest) = filter.strip_prefix("$share/") {
        let (group, inner) = rest.split_once('/').ok_or(TopicError::InvalidShare)?;
        if group.is_empty() || has_wildcards(group) || inner.is_empty() {
            return Err(TopicError::InvalidShare);
        }
        return Ok(SplitFilter {
            group: Some(group),
            filter: inner,
        });
    }
    if filter == "$share" {
        return Err(TopicError::InvalidShare);
    }
    if let Some(inner) = filter.strip_prefix("$queue/") {
        if inner.is_empty() {
            return Err(TopicError::InvalidShare);
        }
        return Ok(SplitFilter {
            group: Some(QUEUE_GROUP),
            filter: inner,
        });
    }
    Ok(SplitFilter {
        group: None,
        filter,
    })
}

/// Does `filter` match `topic`? Both must already be valid. Topics starting with `$` are not
/// matched by a filter starting with a wildcard [MQTT-4.7.2-1].
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            // "#" matches the parent level too: "sport/#" matches "sport" [MQTT-4.7.1-2].
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("a/b", 0).is_ok());
        assert!(validate_name("/", 0).is_ok());
        assert_eq!(validate_name("", 0), Err(TopicError::Empty));
        assert_eq!(validate_name("a/+", 0), Err(TopicError::WildcardInName));
        assert_eq!(validate_name("a#", 0), Err(TopicError::WildcardInName));
        assert_eq!(validate_name("a/b/c", 2), Err(TopicError::TooManyLevels));
        assert!(validate_name("a/b", 2).is_ok());
    }

    #[test]
    fn filters_follow_the_wildcard_placement_rules() {
        // [MQTT-4.7.1-2] '#' alone and last; [MQTT-4.7.1-3] '+' alone in its level.
        for ok in [
            "#", "+", "a/#", "+/+", "/+", "a/+/b", "+/#", "/", "//", "$SYS/#",
        ] {
            assert!(validate_filter(ok, 0).is_ok(), "{ok}");
        }
        for bad in ["a#", "a/#/b", "a+", "a/b+/c", "#/a", "##", "++", ""] {
            assert!(validate_filter(bad, 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn matching_examples_from_the_spec() {
        // §4.7.1.2 and §4.7.1.3 examples.
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking"
        ));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon"
        ));
        assert!(matches("sport/#", "sport"));
        assert!(matches("#", "a/b/c"));
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
    }

    #[test]
    fn dollar_topics_are_not_matched_by_leading_wildcards() {
        // [MQTT-4.7.2-1]
        assert!(!matches("#", "$SYS/broker/uptime"));
        assert!(!matches("+/broker/uptime", "$SYS/broker/uptime"));
        assert!(matches("$SYS/#", "$SYS/broker/uptime"));
        assert!(matches("$SYS/+/uptime", "$SYS/broker/uptime"));
    }

    #[test]
    fn shared_subscription_syntax() {
        assert_eq!(
            split_shared("$share/g1/a/+"),
            Ok(SplitFilter {
                group: Some("g1"),
                filter: "a/+"
            })
        );
        assert_eq!(
            split_shared("$queue/a/b"),
            Ok(SplitFilter {
                group: Some(QUEUE_GROUP),
                filter: "a/b"
            })
        );
        assert_eq!(
            split_shared("a/b"),
            Ok(SplitFilter {
                group: None,
                filter: "a/b"
            })
        );
        // [MQTT-4.8.2-1] a ShareName must be at least one character and contain no wildcards.
        for bad in [
            "$share/",
            "$share//a",
            "$share/g",
            "$share/g/",
            "$share/+/a",
            "$share",
        ] {
            assert!(split_shared(bad).is_err(), "{bad}");
        }
    }
}
