//! Data-driven: every `fixtures/mail/<suite>/<case>.eml` is read by the
//! pipeline and compared with `<case>.expected.json` (the keys it names:
//! `kind`, `kind_not`, `reply_text`, `reply_text_contains`, `attachments`,
//! `attachment_count`,
//! `bounce`, `bounce_recipient_one_of`). Prints a score table; any mismatch
//! fails, except in a case whose expectation says why it is
//! `wrong_on_purpose` (listed in the table instead).

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
    let mut on_purpose = Vec::new();
    let mut table: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    let all = cases(&root);
    for path in &all {
        let expected_path = path.with_extension("expected.json");
        let expected: Value = serde_json::from_str(
            &std::fs::read_to_string(&expected_path)
                .unwrap_or_else(|_| panic!("{} has no {}", path.display(), expected_path.display())),
        )
        .expect("expected JSON");
        let raw = std::fs::read(path).unwrap();
        let analysis = mailgate::pipeline::analyze("sender@example.org", &[], &raw);
        let actual = serde_json::to_value(&analysis).unwrap();
        let suite = path.parent().unwrap().file_name().unwrap().to_string_lossy().into_owned();
        let score = table.entry(suite).or_default();
        score.1 += 1;
        let mismatches: Vec<String> = expected
            .as_object()
            .unwrap()
            .iter()
            .filter(|(key, _)| *key != "wrong_on_purpose")
            .filter_map(|(key, want)| check(key, want, &actual))
            .collect();
        let name = path.strip_prefix(&root).unwrap().display();
        match (mismatches.is_empty(), expected["wrong_on_purpose"].as_str()) {
            (true, _) => score.0 += 1,
            (false, Some(why)) => on_purpose.push(format!("  {name}: {why}")),
            (false, None) => failures.push(format!("{name}\n{}", mismatches.join("\n"))),
        }
    }
    let mut report = String::from("fixture suite        passed/total\n");
    for (suite, (passed, total)) in &table {
        report.push_str(&format!("{suite:<20} {passed}/{total}\n"));
    }
    let passed: usize = table.values().map(|s| s.0).sum();
    report.push_str(&format!("{:<20} {passed}/{}\n", "all", all.len()));
    if !on_purpose.is_empty() {
        report.push_str(&format!("read differently on purpose ({}):\n{}\n", on_purpose.len(), on_purpose.join("\n")));
    }
    eprintln!("{report}");
    assert!(all.len() >= 80, "the fixture corpus went missing");
    assert!(failures.is_empty(), "{report}\n{}", failures.join("\n"));
}

/// Compares one expected key; `None` when it holds. `reply_text_contains`
/// checks a substring; every other key is compared as a subset: objects on
/// the fields the expectation names, arrays element by element.
fn check(key: &str, want: &Value, actual: &Value) -> Option<String> {
    let recipient = actual["bounce"]["failed_recipient"].as_str().map(str::to_lowercase);
    let ok = match key {
        "reply_text_contains" => {
            let text = actual["reply_text"].as_str().unwrap_or("");
            match want {
                Value::Array(pieces) => pieces.iter().all(|p| text.contains(p.as_str().unwrap_or("\u{0}"))),
                piece => text.contains(piece.as_str().unwrap_or("\u{0}")),
            }
        }
        "kind_not" => actual["kind"] != *want,
        "attachment_count" => actual["attachments"].as_array().map(Vec::len) == want.as_u64().map(|n| n as usize),
        "bounce_recipient_one_of" => {
            actual["kind"] == "bounce"
                && recipient.is_some_and(|r| want.as_array().into_iter().flatten().any(|w| w.as_str() == Some(&r)))
        }
        _ => subset(want, actual.get(key).unwrap_or(&Value::Null)),
    };
    let got = match key {
        "reply_text_contains" => &actual["reply_text"],
        "kind_not" => &actual["kind"],
        "attachment_count" => &actual["attachments"],
        "bounce_recipient_one_of" => &actual["bounce"],
        _ => actual.get(key).unwrap_or(&Value::Null),
    };
    (!ok).then(|| format!("  {key}: expected {want}, got {got}"))
}

fn subset(want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => w.iter().all(|(k, v)| g.get(k).is_some_and(|gv| subset(v, gv))),
        (Value::Array(w), Value::Array(g)) => w.len() == g.len() && w.iter().zip(g).all(|(a, b)| subset(a, b)),
        _ => want == got,
    }
}
