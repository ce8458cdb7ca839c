//! Notification rendering: minijinja templates to a subject and a plain-text
//! body. The built-in templates (the `templates/` folder, compiled in) can be
//! overridden file by file from a configured folder.
//!
//! A rendered subject is flattened to one line with control characters
//! removed, so nothing a user wrote can add a header.

use minijinja::Environment;
use serde::Serialize;
use std::path::Path;

/// Every template: (name, built-in text).
const BUILTIN: &[(&str, &str)] = &[
    (
        "agent_replied.subject",
        include_str!("../../templates/agent_replied.subject"),
    ),
    (
        "agent_replied.txt",
        include_str!("../../templates/agent_replied.txt"),
    ),
    (
        "customer_replied.subject",
        include_str!("../../templates/customer_replied.subject"),
    ),
    (
        "customer_replied.txt",
        include_str!("../../templates/customer_replied.txt"),
    ),
];

/// A rendered notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// One line, safe for a header.
    pub subject: String,
    /// Plain-text body.
    pub text: String,
}

/// The compiled templates.
#[derive(Debug)]
pub struct Renderer {
    env: Environment<'static>,
}

impl Renderer {
    /// Compiles the built-in templates, each replaced by the file of the same
    /// name in `override_dir` when there is one. Fails naming the template
    /// with a syntax error.
    pub fn load(override_dir: Option<&Path>) -> anyhow::Result<Self> {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        for (name, builtin) in BUILTIN {
            let text = match override_dir
                .map(|dir| dir.join(name))
                .filter(|p| p.is_file())
            {
                Some(path) => std::fs::read_to_string(&path)
                    .map_err(|e| anyhow::anyhow!("reading template {}: {e}", path.display()))?,
                None => (*builtin).to_owned(),
            };
            env.add_template_owned(*name, text)
                .map_err(|e| anyhow::anyhow!("template {name}: {e:#}"))?;
        }
        Ok(Self { env })
    }

    /// Renders notification `kind` (e.g. `agent_replied`) with `context`.
    pub fn render(&self, kind: &str, context: &impl Serialize) -> anyhow::Result<Rendered> {
        let subject = self
            .env
            .get_template(&format!("{kind}.subject"))?
            .render(context)
            .map_err(|e| anyhow::anyhow!("rendering {kind}.subject: {e:#}"))?;
        let text = self
            .env
            .get_template(&format!("{kind}.txt"))?
            .render(context)
            .map_err(|e| anyhow::anyhow!("rendering {kind}.txt: {e:#}"))?;
        Ok(Rendered {
            subject: header_safe(&subject),
            text,
        })
    }
}

/// One line, no control characters, at most 200 characters.
pub fn header_safe(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    flat.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::header_safe;

    #[test]
    fn subjects_cannot_carry_headers() {
        assert_eq!(
            header_safe("Help\r\nBcc: victim@example.com"),
            "Help Bcc: victim@example.com"
        );
        assert_eq!(header_safe("  a\tb\n"), "a b");
    }
}
