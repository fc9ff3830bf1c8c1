//! Templates: `Bearer {{secrets.GITHUB_TOKEN}}` filled from a server's secrets, and in
//! skill requests also `{{args.NAME}}` filled from a tool call's arguments.

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
    Arg(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unclosed `{{{{` at byte {0}")]
    Unclosed(usize),
    #[error("unknown placeholder `{{{{{0}}}}}`: only `{{{{secrets.NAME}}}}` is supported here")]
    UnknownPlaceholder(String),
    #[error(
        "unknown placeholder `{{{{{0}}}}}`: use `{{{{args.NAME}}}}` or `{{{{secrets.NAME}}}}`"
    )]
    UnknownSkillPlaceholder(String),
    #[error("placeholder name {0:?} must match [A-Za-z0-9_]+")]
    BadSecretName(String),
}

/// A template referenced a secret the server does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("secret {name:?} is not set")]
pub struct MissingSecret {
    pub name: String,
}

impl HeaderTemplate {
    /// A template that may reference secrets only (server headers).
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        Self::parse_with(text, false)
    }

    /// A skill request template: secrets and `{{args.NAME}}`.
    pub fn parse_skill(text: &str) -> Result<Self, TemplateError> {
        Self::parse_with(text, true)
    }

    fn parse_with(text: &str, allow_args: bool) -> Result<Self, TemplateError> {
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
            let (name, part): (&str, fn(String) -> Part) =
                match (inner.strip_prefix("secrets."), inner.strip_prefix("args.")) {
                    (Some(name), _) => (name, Part::Secret),
                    (None, Some(name)) if allow_args => (name, Part::Arg),
                    _ if allow_args => {
                        return Err(TemplateError::UnknownSkillPlaceholder(inner.to_string()))
                    }
                    _ => return Err(TemplateError::UnknownPlaceholder(inner.to_string())),
                };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(TemplateError::BadSecretName(name.to_string()));
            }
            parts.push(part(name.to_string()));
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
            _ => None,
        })
    }

    /// Names of the arguments this template uses.
    pub fn arg_names(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Arg(name) => Some(name.as_str()),
            _ => None,
        })
    }

    /// The argument name when the whole template is one `{{args.NAME}}`.
    pub fn sole_arg(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [Part::Arg(name)] => Some(name),
            _ => None,
        }
    }

    /// Fills secrets only (a template without argument references).
    pub fn render(&self, secrets: &BTreeMap<String, Secret>) -> Result<String, MissingSecret> {
        self.render_with(secrets, |_| String::new())
    }

    /// Fills secrets, and arguments through `arg` (which may encode them).
    pub fn render_with(
        &self,
        secrets: &BTreeMap<String, Secret>,
        arg: impl Fn(&str) -> String,
    ) -> Result<String, MissingSecret> {
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
                Part::Arg(name) => out.push_str(&arg(name)),
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
    fn skill_templates_take_arguments() {
        let t = HeaderTemplate::parse_skill("https://crm/{{args.id}}?k={{secrets.K}}").unwrap();
        assert_eq!(t.arg_names().collect::<Vec<_>>(), ["id"]);
        let s = secrets(&[("K", "s3")]);
        let out = t.render_with(&s, |name| format!("<{name}>")).unwrap();
        assert_eq!(out, "https://crm/<id>?k=s3");
        assert_eq!(
            HeaderTemplate::parse_skill("{{ args.q }}")
                .unwrap()
                .sole_arg(),
            Some("q")
        );
        assert_eq!(
            HeaderTemplate::parse_skill("x{{args.q}}")
                .unwrap()
                .sole_arg(),
            None
        );
        assert!(matches!(
            HeaderTemplate::parse_skill("{{env.HOME}}").unwrap_err(),
            TemplateError::UnknownSkillPlaceholder(_)
        ));
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
            HeaderTemplate::parse("{{args.id}}").unwrap_err(),
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
