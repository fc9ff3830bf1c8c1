//! Header templates: `Bearer {{secrets.GITHUB_TOKEN}}` filled from a server's secrets.

use std::collections::BTreeMap;

use crate::model::Secret;

/// A parsed template: literal text and secret references, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Secret(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unclosed `{{{{` at byte {0}")]
    Unclosed(usize),
    #[error("unknown placeholder `{{{{{0}}}}}`: only `{{{{secrets.NAME}}}}` is supported")]
    UnknownPlaceholder(String),
    #[error("secret name {0:?} must match [A-Za-z0-9_]+")]
    BadSecretName(String),
}

/// A template referenced a secret the server does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("secret {name:?} is not set")]
pub struct MissingSecret {
    pub name: String,
}

impl HeaderTemplate {
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut offset = 0;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or(TemplateError::Unclosed(offset + open))?;
            let inner = after[..close].trim();
            let name = inner
                .strip_prefix("secrets.")
                .ok_or_else(|| TemplateError::UnknownPlaceholder(inner.to_string()))?;
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(TemplateError::BadSecretName(name.to_string()));
            }
            parts.push(Part::Secret(name.to_string()));
            let consumed = open + 2 + close + 2;
            offset += consumed;
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        Ok(HeaderTemplate { parts })
    }

    /// Names of the secrets this template uses.
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Secret(name) => Some(name.as_str()),
            Part::Literal(_) => None,
        })
    }

    pub fn render(&self, secrets: &BTreeMap<String, Secret>) -> Result<String, MissingSecret> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Secret(name) => out.push_str(
                    secrets
                        .get(name)
                        .ok_or_else(|| MissingSecret { name: name.clone() })?
                        .expose(),
                ),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(pairs: &[(&str, &str)]) -> BTreeMap<String, Secret> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Secret::new(*v)))
            .collect()
    }

    #[test]
    fn renders_secret_references() {
        let t = HeaderTemplate::parse("Bearer {{secrets.GITHUB_TOKEN}}").unwrap();
        assert_eq!(t.secret_names().collect::<Vec<_>>(), ["GITHUB_TOKEN"]);
        let s = secrets(&[("GITHUB_TOKEN", "ghp_x")]);
        assert_eq!(t.render(&s).unwrap(), "Bearer ghp_x");
        let both = HeaderTemplate::parse("{{ secrets.A }}:{{secrets.B}}!").unwrap();
        assert_eq!(
            both.render(&secrets(&[("A", "1"), ("B", "2")])).unwrap(),
            "1:2!"
        );
        assert_eq!(
            HeaderTemplate::parse("plain").unwrap().render(&s).unwrap(),
            "plain"
        );
    }

    #[test]
    fn reports_bad_templates_and_missing_secrets() {
        assert_eq!(
            HeaderTemplate::parse("x {{secrets.A").unwrap_err(),
            TemplateError::Unclosed(2)
        );
        assert!(matches!(
            HeaderTemplate::parse("{{env.HOME}}").unwrap_err(),
            TemplateError::UnknownPlaceholder(_)
        ));
        assert!(matches!(
            HeaderTemplate::parse("{{secrets.a-b}}").unwrap_err(),
            TemplateError::BadSecretName(_)
        ));
        let t = HeaderTemplate::parse("{{secrets.NOPE}}").unwrap();
        assert_eq!(
            t.render(&BTreeMap::new()).unwrap_err().to_string(),
            "secret \"NOPE\" is not set"
        );
    }
}
