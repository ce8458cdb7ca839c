//! Issue 35, `mailgate doctor`: the DNS checks on static records
//! (`[auth] resolver = "static"` and `[auth.records]` with TXT, MX, A and
//! PTR entries), through the command, the admin API and the console.

use crate::support::*;
use std::process::Command;

/// A DKIM key made with openssl: (PEM file, its public key as DKIM publishes it).
pub fn dkim_key(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, String) {
    let pem = dir.join(format!("{name}.pem"));
    let out = Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
        .arg(&pem)
        .output()
        .expect("openssl is installed (scripts/test installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let public =
        Command::new("openssl").args(["pkey", "-pubout", "-outform", "DER", "-in"]).arg(&pem).output().unwrap();
    assert!(public.status.success());
    (pem, data_encoding::BASE64.encode(&public.stdout))
}

/// The records of a domain set up as the guide says, with `p` as its DKIM key.
fn healthy_records(p: &str) -> String {
    format!(
        r#"[auth.records]
"support.example.com" = {{ txt = ["v=spf1 ip4:198.51.100.7 -all", "google-site-verification=abc"], mx = ["10 mx.support.example.com"] }}
"mx.support.example.com" = {{ a = ["198.51.100.25"] }}
"relay.example.net" = {{ a = ["198.51.100.7"] }}
"mg._domainkey.support.example.com" = "v=DKIM1; k=rsa; p={p}"
"_dmarc.support.example.com" = "v=DMARC1; p=reject; rua=mailto:dmarc@support.example.com"
"_mta-sts.support.example.com" = {{ txt = ["v=STSv1; id=2026120701"] }}
"_smtp._tls.support.example.com" = {{ txt = ["v=TLSRPTv1; rua=mailto:tls@support.example.com"] }}
"198.51.100.7" = {{ ptr = ["relay.example.net"] }}
"#
    )
}

fn config_with(dir: &std::path::Path, key: &std::path::Path, records: &str) -> std::path::PathBuf {
    let config = format!(
        r#"domain = "support.example.com"
hostname = "mx.support.example.com"

[delivery]
relay_url = "smtp://relay.example.net:25"

[dkim]
selector = "mg"
private_key = "{}"

[auth]
resolver = "static"

{records}"#,
        key.display()
    );
    let path = dir.join("mailgate.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// `mailgate doctor --json`: (exit code, the checks by name).
fn doctor(config: &std::path::Path) -> (i32, std::collections::HashMap<String, serde_json::Value>) {
    let data = config.parent().unwrap().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_mailgate"))
        .args(["doctor", "--json", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    });
    let checks = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["check"].as_str().unwrap().to_owned(), c.clone()))
        .collect();
    (out.status.code().unwrap_or(-1), checks)
}

#[test]
fn a_domain_set_up_as_the_guide_says_passes_every_check() {
    let dir = tempfile::tempdir().unwrap();
    let (key, p) = dkim_key(dir.path(), "ours");
    let config = config_with(dir.path(), &key, &healthy_records(&p));
    let (code, checks) = doctor(&config);
    for name in ["mx", "spf", "dkim", "dmarc", "dmarc-alignment", "mta-sts", "tls-rpt", "ptr"] {
        assert_eq!(checks[name]["status"], "ok", "{name}: {}", checks[name]);
    }
    assert_eq!(code, 0);
    assert!(checks["dkim"]["expected"].as_str().unwrap().contains("2048 bits"));

    // The text form: one line per check, starting with its verdict.
    let out = Command::new(env!("CARGO_BIN_EXE_mailgate")).args(["doctor", "--config"]).arg(&config).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().filter(|l| l.starts_with("ok ")).count(), 8, "{text}");
}

#[test]
fn a_dkim_record_of_another_key_fails_and_the_fix_is_the_record_of_ours() {
    let dir = tempfile::tempdir().unwrap();
    let (key, ours) = dkim_key(dir.path(), "ours");
    let (_, theirs) = dkim_key(dir.path(), "theirs");
    let config = config_with(dir.path(), &key, &healthy_records(&theirs));
    let (code, checks) = doctor(&config);
    assert_eq!(code, 1, "a fail exits 1");
    let dkim = &checks["dkim"];
    assert_eq!(dkim["status"], "fail", "{dkim}");
    assert!(dkim["found"].as_str().unwrap().contains("another key"), "{dkim}");
    let expected = format!("mg._domainkey.support.example.com. TXT \"v=DKIM1; k=rsa; p={ours}\"");
    assert_eq!(dkim["fix"], expected.as_str());

    // No record at all: the same fix.
    let records = healthy_records(&ours)
        .replace(&format!("\"mg._domainkey.support.example.com\" = \"v=DKIM1; k=rsa; p={ours}\"\n"), "");
    let (code, checks) = doctor(&config_with(dir.path(), &key, &records));
    assert_eq!((code, &checks["dkim"]["status"]), (1, &serde_json::json!("fail")));
    assert_eq!(checks["dkim"]["fix"], expected.as_str());
}

#[test]
fn an_spf_record_that_needs_eleven_lookups_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (key, p) = dkim_key(dir.path(), "ours");
    // Ten includes, the last of which includes one more: eleven lookups.
    let includes: String = (1..=10).map(|n| format!(" include:s{n}.spf.example")).collect();
    let mut records = healthy_records(&p).replace("v=spf1 ip4:198.51.100.7 -all", &format!("v=spf1{includes} -all"));
    for n in 1..=10 {
        let next = if n == 10 { " include:s11.spf.example" } else { "" };
        records.push_str(&format!("\"s{n}.spf.example\" = \"v=spf1 ip4:198.51.100.{n}{next} ~all\"\n"));
    }
    records.push_str("\"s11.spf.example\" = \"v=spf1 ip4:198.51.100.7 -all\"\n");
    let (code, checks) = doctor(&config_with(dir.path(), &key, &records));
    assert_eq!(code, 1);
    let spf = &checks["spf"];
    assert_eq!(spf["status"], "fail", "{spf}");
    assert!(spf["found"].as_str().unwrap().contains("11 DNS lookups"), "{spf}");
    assert!(spf["fix"].as_str().unwrap().contains("ip4:198.51.100.7"), "{spf}");
}

#[test]
fn spf_without_the_relay_fails_with_the_record_that_adds_it() {
    let dir = tempfile::tempdir().unwrap();
    let (key, p) = dkim_key(dir.path(), "ours");
    let records = healthy_records(&p).replace("v=spf1 ip4:198.51.100.7 -all", "v=spf1 ip4:203.0.113.0/24 -all");
    let (code, checks) = doctor(&config_with(dir.path(), &key, &records));
    assert_eq!(code, 1);
    assert_eq!(checks["spf"]["status"], "fail");
    assert!(checks["spf"]["found"].as_str().unwrap().contains("198.51.100.7: fail"), "{}", checks["spf"]);
    assert_eq!(checks["spf"]["fix"], "support.example.com. TXT \"v=spf1 ip4:203.0.113.0/24 ip4:198.51.100.7 -all\"");
}

#[test]
fn p_none_warns_missing_mta_sts_warns_and_neither_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (key, p) = dkim_key(dir.path(), "ours");
    let records = healthy_records(&p)
        .replace("p=reject", "p=none")
        .replace("\"_mta-sts.support.example.com\" = { txt = [\"v=STSv1; id=2026120701\"] }\n", "");
    let (code, checks) = doctor(&config_with(dir.path(), &key, &records));
    assert_eq!(checks["dmarc"]["status"], "warn", "{}", checks["dmarc"]);
    assert!(checks["dmarc"]["fix"].as_str().unwrap().contains("p=quarantine"));
    assert_eq!(checks["mta-sts"]["status"], "warn");
    assert_eq!(code, 0, "warnings alone exit 0");
}

#[test]
fn an_mx_elsewhere_fails_and_behind_a_mail_server_the_mx_is_not_ours_to_check() {
    let dir = tempfile::tempdir().unwrap();
    let (key, p) = dkim_key(dir.path(), "ours");
    let records = healthy_records(&p).replace("10 mx.support.example.com", "10 mail.elsewhere.example");
    let config = config_with(dir.path(), &key, &records);
    let (code, checks) = doctor(&config);
    assert_eq!(code, 1);
    assert_eq!(checks["mx"]["status"], "fail");
    assert_eq!(checks["mx"]["fix"], "support.example.com. MX 10 mx.support.example.com.");
    // With LMTP from Postfix, the MX is Postfix's.
    let text =
        std::fs::read_to_string(&config).unwrap().replace("[delivery]", "lmtp_listen = \"127.0.0.1:0\"\n\n[delivery]");
    std::fs::write(&config, text).unwrap();
    let (code, checks) = doctor(&config);
    assert_eq!((code, &checks["mx"]["status"]), (0, &serde_json::json!("skip")));
}

#[tokio::test]
async fn the_admin_api_gives_the_same_report_and_needs_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let (key, ours) = dkim_key(dir.path(), "ours");
    let (_, theirs) = dkim_key(dir.path(), "theirs");
    let app = spawn_app_with(|c| static_dns(c, &key, &theirs)).await;
    let (status, report) = app.admin_get("/doctor").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["failed"], true);
    let dkim = report["checks"].as_array().unwrap().iter().find(|c| c["check"] == "dkim").unwrap();
    assert_eq!(dkim["status"], "fail");
    assert!(dkim["fix"].as_str().unwrap().contains(&ours));
    let (status, _) = app.get("/admin/doctor").await;
    assert_eq!(status, 401, "the Dashboard's token is not the admin token");
    app.stop().await;
}

/// The test instance's configuration with static DNS for support.example.com
/// publishing `published` as its DKIM key, and `key` signing.
pub fn static_dns(config: &mut mailgate::config::Config, key: &std::path::Path, published: &str) {
    let parsed: toml::Value = toml::from_str(&healthy_records(published)).unwrap();
    let mut records = std::collections::HashMap::new();
    for (name, value) in parsed["auth"]["records"].as_table().unwrap() {
        let list = |field: &str| -> Vec<String> {
            value
                .get(field)
                .and_then(|v| v.as_array())
                .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
                .unwrap_or_default()
        };
        let set = match value.as_str() {
            Some(txt) => mailgate::config::RecordSet { txt: vec![txt.to_owned()], ..Default::default() },
            None => mailgate::config::RecordSet {
                txt: list("txt"),
                mx: list("mx")
                    .iter()
                    .map(|m| {
                        let (p, h) = m.split_once(' ').unwrap();
                        (p.parse().unwrap(), h.to_owned())
                    })
                    .collect(),
                addresses: list("a").iter().map(|a| a.parse().unwrap()).collect(),
                ptr: list("ptr"),
            },
        };
        // The sender checks (and SPF's verdict) read the SPF, DKIM and DMARC TXT values.
        if let Some(txt) =
            set.txt.iter().find(|t| t.starts_with("v=spf1") || t.starts_with("v=DKIM1") || t.starts_with("v=DMARC1"))
        {
            config.auth.records.insert(name.clone(), txt.clone());
        }
        records.insert(name.clone(), set);
    }
    config.auth.dns_records = records;
    config.domain = "support.example.com".to_owned();
    config.hostname = "mx.support.example.com".to_owned();
    config.delivery.relay_url = Some("smtp://relay.example.net:25".to_owned());
    config.delivery.dkim = Some(mailgate::config::DkimSettings {
        selector: "mg".to_owned(),
        domain: "support.example.com".to_owned(),
        private_key: key.to_owned(),
        algorithm: "rsa".to_owned(),
    });
}

#[test]
fn two_spf_records_fail_and_bare_tls_records_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let (key, p) = dkim_key(dir.path(), "ours");
    // Two SPF records at one name: receivers give permerror, whatever each says.
    let records = healthy_records(&p).replace(
        "\"v=spf1 ip4:198.51.100.7 -all\", \"google-site-verification=abc\"",
        "\"v=spf1 ip4:198.51.100.7 -all\", \"v=spf1 include:other.example -all\"",
    );
    let (code, checks) = doctor(&config_with(dir.path(), &key, &records));
    assert_eq!((code, &checks["spf"]["status"]), (1, &serde_json::json!("fail")), "{}", checks["spf"]);
    assert!(checks["spf"]["found"].as_str().unwrap().starts_with("2 SPF records"));
    // MTA-STS and TLS-RPT given as bare strings are TXT records like any other.
    let records =
        healthy_records(&p).replace("{ txt = [\"v=STSv1; id=2026120701\"] }", "\"v=STSv1; id=2026120701\"").replace(
            "{ txt = [\"v=TLSRPTv1; rua=mailto:tls@support.example.com\"] }",
            "\"v=TLSRPTv1; rua=mailto:tls@support.example.com\"",
        );
    let (code, checks) = doctor(&config_with(dir.path(), &key, &records));
    assert_eq!(
        (code, &checks["mta-sts"]["status"], &checks["tls-rpt"]["status"]),
        (0, &serde_json::json!("ok"), &serde_json::json!("ok"))
    );
}

#[test]
fn broken_records_are_named_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (key, p) = dkim_key(dir.path(), "ours");
    for (records, said) in [
        ("\"a.example\" = { mx = [\"10 \"] }", "is not PREFERENCE HOST"),
        ("\"a.example\" = { txt = \"v=spf1 -all\" }", "a table of lists"),
        ("\"a.example\" = \"v=spf1 -all\"\n\"A.example.\" = \"v=spf1 +all\"", "a second time"),
        // Quotes copied from a zone file, and a DMARC or DKIM name without
        // a record the checks read: either would pass for "no record".
        ("\"_dmarc.a.example\" = \"\\\"v=DMARC1; p=reject\\\"\"", "in quotes"),
        ("\"_dmarc.a.example\" = \"p=reject\"", "no value here is a DMARC"),
        ("\"s1._domainkey.a.example\" = \"k=rsa\"", "no value here is a DKIM"),
    ] {
        let config = config_with(dir.path(), &key, &format!("{}{records}\n", healthy_records(&p)));
        let out =
            Command::new(env!("CARGO_BIN_EXE_mailgate")).args(["doctor", "--config"]).arg(&config).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(said) && stderr.contains("a.example"), "{records}: {stderr}");
    }
}

#[test]
fn hostile_records_loops_and_garbage_get_verdicts_not_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let (key, p) = dkim_key(dir.path(), "ours");
    // An SPF record that includes itself, and one that redirects in a circle.
    let records = healthy_records(&p)
        .replace("v=spf1 ip4:198.51.100.7 -all", "v=spf1 include:support.example.com ip4:198.51.100.7 -all");
    let (code, checks) = doctor(&config_with(dir.path(), &key, &records));
    assert_eq!(code, 1);
    assert_eq!(checks["spf"]["status"], "fail", "a loop is more than 10 lookups: {}", checks["spf"]);
    // A DKIM key that does not decode is refused where it is configured, with its name.
    let records = healthy_records(&p).replace(&format!("k=rsa; p={p}"), "k=rsa; p=!!!not base64!!!");
    let config = config_with(dir.path(), &key, &records);
    let out = Command::new(env!("CARGO_BIN_EXE_mailgate")).args(["doctor", "--config"]).arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("mg._domainkey.support.example.com"), "{stderr}");
    let records = healthy_records(&p).replace("v=spf1 ip4:198.51.100.7 -all", "v=spf1 redirect=b.spf.example")
        + "\"b.spf.example\" = \"v=spf1 redirect=support.example.com\"\n";
    let (_, checks) = doctor(&config_with(dir.path(), &key, &records));
    assert_eq!(checks["spf"]["status"], "fail", "{}", checks["spf"]);
    // A 60 KB TXT value and an empty DKIM key: verdicts, no crash.
    let huge = "x".repeat(60_000);
    let records = healthy_records(&p)
        .replace("\"google-site-verification=abc\"", &format!("\"{huge}\""))
        .replace(&format!("k=rsa; p={p}"), "k=rsa; p=");
    let (code, checks) = doctor(&config_with(dir.path(), &key, &records));
    assert_eq!(
        (code, &checks["spf"]["status"], &checks["dkim"]["status"]),
        (1, &serde_json::json!("ok"), &serde_json::json!("fail"))
    );
}

/// A lookup that fails (here every answer is SERVFAIL) is reported as a
/// failed lookup, never as "no record" with a record to publish: the
/// records may be there, and the name server down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_name_server_is_reported_as_such_not_as_missing_records() {
    let server = name_server_failing_but(std::collections::HashMap::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = dkim_key(dir.path(), "ours");
    let config = config_with(dir.path(), &key, "");
    let text =
        std::fs::read_to_string(&config).unwrap().replace("resolver = \"static\"", &format!("resolver = \"{server}\""));
    std::fs::write(&config, text).unwrap();
    let (code, checks) = tokio::task::spawn_blocking(move || doctor(&config)).await.unwrap();
    assert_eq!(code, 1);
    for check in ["dkim", "dmarc", "mta-sts", "tls-rpt"] {
        let found = checks[check]["found"].as_str().unwrap_or_default();
        assert!(found.contains("the lookup failed") && found.contains("Server Failure"), "{check}: {}", checks[check]);
        assert!(checks[check]["fix"].is_null(), "{check}: {}", checks[check]);
    }
    // SPF stops earlier, at the outbound address it could not look up.
    let spf = checks["spf"]["found"].as_str().unwrap_or_default();
    assert!(spf.contains("Server Failure") && !spf.contains("no SPF record"), "{}", checks["spf"]);
}
