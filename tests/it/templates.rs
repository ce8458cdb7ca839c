//! Snapshots of every notification rendered with the sample data (subject,
//! text and HTML), and the checks that guard the templates.

use mailgate::notify::render::{KINDS, Renderer, sample_context, sample_context_in};

#[test]
fn every_notification_renders_as_its_snapshot() {
    let renderer = Renderer::load(None).expect("built-in templates compile");
    for kind in KINDS {
        let rendered = renderer.render(kind, &sample_context(kind)).expect("renders");
        let shown = format!("Subject: {}\n\n{}\n----- HTML -----\n{}", rendered.subject, rendered.text, rendered.html);
        insta::assert_snapshot!(*kind, shown);
    }
}

/// The shipped translations, each notification in each, so that a change
/// to one is read by a person before it ships.
#[test]
fn every_translation_renders_as_its_snapshot() {
    let renderer = Renderer::load(None).expect("built-in templates compile");
    assert!(renderer.gaps().is_empty(), "{:?}", renderer.gaps());
    for locale in ["de", "fr", "es", "ja"] {
        for kind in KINDS {
            let rendered =
                renderer.render_in(kind, &sample_context_in(kind, locale), &[locale.to_owned()]).expect("renders");
            assert_eq!(rendered.language, locale);
            let shown =
                format!("Subject: {}\n\n{}\n----- HTML -----\n{}", rendered.subject, rendered.text, rendered.html);
            insta::assert_snapshot!(format!("{locale}__{kind}"), shown);
        }
    }
}

#[test]
fn a_broken_template_is_named_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("agent_replied.txt"), "Hello {{ recipient.name }}\n{% if %}\n").unwrap();
    let error = Renderer::load(Some(dir.path())).unwrap_err();
    let file = dir.path().join("agent_replied.txt").display().to_string();
    assert!(format!("{error:#}").contains(&format!("{file}:2")), "the override file is named: {error:#}");

    std::fs::write(dir.path().join("agent_replied.txt"), "Hello {{ recipient.nmae }}\n").unwrap();
    let renderer = Renderer::load(Some(dir.path())).unwrap();
    let problems = renderer.check();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains(&format!("{file}:1")), "{problems:?}");
    assert!(problems[0].contains("`recipient.nmae` is undefined"), "the variable is named: {problems:?}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailgate"))
        .args(["templates", "check", "--templates-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("agent_replied.txt:1"));

    // The server refuses to start with it, and says which.
    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailgate"))
        .args(["serve", "--smtp-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--templates-dir"])
        .arg(dir.path())
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("agent_replied.txt"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 22: a folder that is not there, or a file that overrides nothing,
/// is never "all good" in silence.
#[test]
fn a_missing_folder_fails_and_a_misnamed_override_is_warned_about() {
    let check = |dir: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mailgate"))
            .args(["templates", "check", "--templates-dir"])
            .arg(dir)
            .output()
            .unwrap()
    };
    let missing = std::path::Path::new("/nonexistent/mailgate-templates");
    let out = check(missing);
    assert!(!out.status.success(), "a missing folder is an error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/mailgate-templates"));
    assert!(Renderer::load(Some(missing)).is_err());

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("agent_reply.txt"), "Hello\n").unwrap();
    let out = check(dir.path());
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("agent_reply.txt overrides no template") && stderr.contains("agent_replied"), "{stderr}");
    assert!(stdout.contains("no file in"), "it says nothing was overridden: {stdout}");

    std::fs::write(dir.path().join("agent_replied.subject"), "{{ thread.label_tag }} {{ thread.subject }}\n").unwrap();
    let out = check(dir.path());
    assert!(String::from_utf8_lossy(&out.stdout).contains("agent_replied.subject"), "names what it overrides");
}

#[test]
fn names_cannot_inject_headers_into_a_subject() {
    let renderer = Renderer::load(None).unwrap();
    let mut context = sample_context("agent_replied");
    if let Some(thread) = context.thread.as_mut() {
        thread.subject = "Help\r\nBcc: victim@example.com".to_owned();
    }
    let rendered = renderer.render("agent_replied", &context).unwrap();
    assert!(!rendered.subject.contains('\n') && !rendered.subject.contains('\r'), "{:?}", rendered.subject);
}

/// Issue 20: without a Dashboard, no notification carries an empty link.
#[test]
fn without_a_dashboard_no_notification_carries_an_empty_link() {
    let renderer = Renderer::load(None).unwrap();
    for kind in KINDS {
        let mut context = sample_context(kind);
        context.dashboard_url = String::new();
        if let Some(thread) = context.thread.as_mut() {
            thread.url = String::new();
        }
        let rendered = renderer.render(kind, &context).expect("renders");
        assert!(!rendered.html.contains("href=\"\""), "{kind}: {}", rendered.html);
        assert!(
            !rendered.text.contains(": \n") && !rendered.text.trim_end().ends_with(':'),
            "{kind}: {}",
            rendered.text
        );
    }
}
