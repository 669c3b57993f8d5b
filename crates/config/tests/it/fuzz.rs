//! Structured fuzzing of configs: the spec's example with keys dropped, values of the wrong
//! type or absurd size, references left dangling and tables duplicated. Loading never panics,
//! and every refusal names the file, the line and the key.

use super::fixtures;
use proptest::prelude::*;
use spendguard_config::{parse, ConfigError};
use std::path::Path;

/// Values of every TOML type and some absurd ones, for any key.
const VALUES: &[&str] = &[
    "\"x\"",
    "\"\"",
    "\"nope\"",
    "\"agent:nobody\"",
    "\"-1\"",
    "\"99999999999999999999999999999999999999\"",
    "\"0.0000000000000000000000000000001\"",
    "12",
    "-1",
    "0",
    "9223372036854775807",
    "1.5",
    "true",
    "[]",
    "[\"x\"]",
    "[1, 2]",
    "{}",
    "{ window = \"24h\" }",
    "\"🙂\"",
    "\"24h\"",
    "\"0x0000000000000000000000000000000000000000\"",
];

/// One change to the example's lines.
#[derive(Debug, Clone)]
enum Mutation {
    /// Drop the `n`th `key = value` line.
    Drop(usize),
    /// Give the `n`th `key = value` line another value.
    Retype(usize, &'static str),
    /// Copy the `n`th `[[table]]` block after itself (duplicate ids).
    Duplicate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Drop),
        (any::<usize>(), prop::sample::select(VALUES)).prop_map(|(n, v)| Mutation::Retype(n, v)),
        any::<usize>().prop_map(Mutation::Duplicate),
    ]
}

fn apply(lines: &mut Vec<String>, m: &Mutation) {
    let assignments: Vec<usize> = (0..lines.len()).filter(|&i| key_of(&lines[i]).is_some()).collect();
    let tables: Vec<usize> = (0..lines.len()).filter(|&i| lines[i].trim_start().starts_with("[[")).collect();
    match *m {
        Mutation::Drop(n) if !assignments.is_empty() => {
            lines.remove(assignments[n % assignments.len()]);
        }
        Mutation::Retype(n, value) if !assignments.is_empty() => {
            let i = assignments[n % assignments.len()];
            let key = key_of(&lines[i]).unwrap_or_default().to_string();
            lines[i] = format!("{key} = {value}");
        }
        Mutation::Duplicate(n) if !tables.is_empty() => {
            let start = tables[n % tables.len()];
            let end = (start + 1..lines.len()).find(|&i| lines[i].trim_start().starts_with('[')).unwrap_or(lines.len());
            let block: Vec<String> = lines[start..end].to_vec();
            lines.splice(end..end, block);
        }
        _ => {}
    }
}

/// The key of a one-line `key = value` assignment (not a comment, not inside an array).
fn key_of(line: &str) -> Option<&str> {
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    let plain = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    (plain && !line.trim_start().starts_with('#')).then_some(key)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_mangled_config_is_refused_naming_file_line_and_key(mutations in prop::collection::vec(mutation(), 1..4)) {
        let text = std::fs::read_to_string(fixtures().join("example.toml")).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        for m in &mutations {
            apply(&mut lines, m);
        }
        let mangled = lines.join("\n");
        match parse(&mangled, Path::new("mangled.toml")) {
            Ok(_) => {}
            Err(ConfigError::Invalid { path, issues }) => {
                prop_assert_eq!(path, Path::new("mangled.toml"));
                prop_assert!(!issues.is_empty());
                for issue in issues {
                    // Text that is not TOML has a line but no key; a missing table has a key
                    // (named in the message) but no line of its own.
                    let syntax = issue.message.starts_with("not valid TOML: ") && issue.line.is_some();
                    let missing_table = issue.key.is_empty() && issue.message.starts_with("missing field `");
                    let located = issue.line.is_some() && !issue.key.is_empty();
                    prop_assert!(syntax || missing_table || located, "{:?}\nafter {:?}", issue, mutations);
                }
            }
            Err(e) => prop_assert!(false, "not an Invalid error: {e}"),
        }
    }
}
