//! Test-only helpers shared by the unit tests of the tables.

use proptest::prelude::*;

/// One topic level from a small alphabet, so that random filters and topics often match; `$x`
/// exercises the rule that leading wildcards skip `$` topics.
fn level() -> impl Strategy<Value = String> {
    prop_oneof![Just("a"), Just("b"), Just(""), Just("$x")].prop_map(String::from)
}

/// A topic name of one to three levels.
pub fn topic_strategy() -> impl Strategy<Value = String> {
    proptest::collection::vec(level(), 1..4).prop_map(|v| v.join("/"))
}

/// A valid topic filter: levels or `+`, optionally ending in `#`.
pub fn filter_strategy() -> impl Strategy<Value = String> {
    let lvl = prop_oneof![level(), Just("+".to_string())];
    (proptest::collection::vec(lvl, 1..4), any::<bool>()).prop_map(|(mut v, hash)| {
        if hash {
            v.push("#".into());
        }
        v.join("/")
    })
}
