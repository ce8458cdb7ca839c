use std::fmt;

/// A syntactically plausible email address, stored in lower case.
///
/// Mail systems treat the domain case-insensitively and, in practice, the local
/// part too; we compare addresses lower-cased so that `Anna@Example.com` is the
/// same person as `anna@example.com`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Parses `local@domain`, refusing empty parts, whitespace, control
    /// characters and anything that could break a header line.
    pub fn parse(input: &str) -> Option<Self> {
        let input = input.trim();
        if input.len() > 254 {
            return None;
        }
        let (local, domain) = input.rsplit_once('@')?;
        let bad = |c: char| c.is_whitespace() || c.is_control() || "<>()[]\\,;:\"".contains(c);
        if local.is_empty() || local.len() > 64 || domain.is_empty() || !domain.contains('.') && domain != "localhost" {
            return None;
        }
        if local.chars().any(bad) || domain.chars().any(bad) || domain.contains('@') {
            return None;
        }
        if domain.starts_with('.') || domain.ends_with('.') || domain.contains("..") {
            return None;
        }
        Some(Self(input.to_lowercase()))
    }

    /// The whole address, lower case.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the last `@`.
    pub fn local_part(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(local, _)| local)
    }

    /// The part after the last `@`.
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, domain)| domain)
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::EmailAddress;

    #[test]
    fn parses_and_lowercases() {
        let addr = EmailAddress::parse(" Anna@Example.COM ").unwrap();
        assert_eq!(addr.as_str(), "anna@example.com");
        assert_eq!(addr.local_part(), "anna");
        assert_eq!(addr.domain(), "example.com");
    }

    #[test]
    fn refuses_header_breaking_input() {
        for bad in [
            "",
            "anna",
            "@example.com",
            "anna@",
            "an na@example.com",
            "anna@exa\r\nmple.com",
            "a<b@example.com",
            "anna@example..com",
        ] {
            assert!(EmailAddress::parse(bad).is_none(), "{bad:?} should be refused");
        }
    }
}
