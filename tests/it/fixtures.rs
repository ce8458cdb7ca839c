//! Data-driven: every `fixtures/mail/<client>/<case>.eml` is read by the
//! pipeline and compared with `<case>.expected.json` (the keys it names:
//! `kind`, `reply_text`, `attachments`). Prints a score table; any mismatch fails.

use serde_json::Value;
use std::path::{Path, PathBuf};

fn cases(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("fixtures dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            found.extend(cases(&path));
        } else if path.extension().is_some_and(|e| e == "eml") {
            found.push(path);
        }
    }
    found.sort();
    found
}

#[test]
fn every_fixture_reads_as_expected() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/mail");
    let mut failures = Vec::new();
    let mut table: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    let all = cases(&root);
    for path in &all {
        let expected_path = path.with_extension("expected.json");
        let expected: Value = serde_json::from_str(
            &std::fs::read_to_string(&expected_path).unwrap_or_else(|_| {
                panic!("{} has no {}", path.display(), expected_path.display())
            }),
        )
        .expect("expected JSON");
        let raw = std::fs::read(path).unwrap();
        let analysis = mailgate::pipeline::analyze("sender@example.org", &[], &raw);
        let actual = serde_json::to_value(&analysis).unwrap();
        let suite = path
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let score = table.entry(suite).or_default();
        score.1 += 1;
        let mismatches: Vec<String> = expected
            .as_object()
            .unwrap()
            .iter()
            .filter(|(key, want)| {
                actual.get(key.as_str()) != Some(*want) && !attachments_match(key, want, &actual)
            })
            .map(|(key, want)| {
                format!(
                    "  {key}: expected {want}, got {}",
                    actual.get(key.as_str()).unwrap_or(&Value::Null)
                )
            })
            .collect();
        if mismatches.is_empty() {
            score.0 += 1;
        } else {
            failures.push(format!(
                "{}\n{}",
                path.strip_prefix(&root).unwrap().display(),
                mismatches.join("\n")
            ));
        }
    }
    let mut report = String::from("fixture suite        passed/total\n");
    for (suite, (passed, total)) in &table {
        report.push_str(&format!("{suite:<20} {passed}/{total}\n"));
    }
    let passed: usize = table.values().map(|s| s.0).sum();
    report.push_str(&format!("{:<20} {passed}/{}\n", "all", all.len()));
    eprintln!("{report}");
    assert!(all.len() >= 10, "the fixture corpus went missing");
    assert!(failures.is_empty(), "{report}\n{}", failures.join("\n"));
}

/// Attachments are compared on the fields the expectation names.
fn attachments_match(key: &str, want: &Value, actual: &Value) -> bool {
    if key != "attachments" {
        return false;
    }
    let (Some(want), Some(got)) = (want.as_array(), actual["attachments"].as_array()) else {
        return false;
    };
    want.len() == got.len()
        && want.iter().zip(got).all(|(w, g)| {
            w.as_object()
                .unwrap()
                .iter()
                .all(|(k, v)| g.get(k) == Some(v))
        })
}
