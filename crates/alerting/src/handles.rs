//! `@pagerduty-Infra`, `@slack-ops`, `@webhook-selfhosted`, `@oncall-primary`: the handles in
//! a rendered message pick the channels and the escalation policy, as in Datadog.

/// The kind of a handle (its prefix).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HandleKind {
    PagerDuty,
    Slack,
    Webhook,
    /// An escalation policy (`@oncall-<policy>`).
    Oncall,
}

impl HandleKind {
    pub fn prefix(self) -> &'static str {
        match self {
            HandleKind::PagerDuty => "pagerduty",
            HandleKind::Slack => "slack",
            HandleKind::Webhook => "webhook",
            HandleKind::Oncall => "oncall",
        }
    }
}

/// One `@<kind>-<name>` handle.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Handle {
    pub kind: HandleKind,
    pub name: String,
}

impl Handle {
    /// Parses one handle, with or without the `@` (`slack-ops`, `@pagerduty-Infra`).
    pub fn parse(s: &str) -> Option<Handle> {
        let s = s.trim();
        let s = s.strip_prefix('@').unwrap_or(s);
        let (prefix, name) = s.split_once('-')?;
        let kind = match prefix.to_ascii_lowercase().as_str() {
            "pagerduty" => HandleKind::PagerDuty,
            "slack" => HandleKind::Slack,
            "webhook" => HandleKind::Webhook,
            "oncall" => HandleKind::Oncall,
            _ => return None,
        };
        if name.is_empty() || !name.chars().all(name_char) {
            return None;
        }
        Some(Handle {
            kind,
            name: name.to_owned(),
        })
    }
}

impl std::fmt::Display for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "@{}-{}", self.kind.prefix(), self.name)
    }
}

fn name_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')
}

/// Every known handle in `text`, in order of first appearance, without duplicates. A handle
/// starts at an `@` at the start of the text or after a non-word character and runs to the
/// first character that cannot be in a name; trailing `.` and `-` are punctuation.
pub fn parse_handles(text: &str) -> Vec<Handle> {
    let mut out: Vec<Handle> = Vec::new();
    let mut prev: Option<char> = None;
    for (i, c) in text.char_indices() {
        let at_start = prev.is_none_or(|p| !(p.is_alphanumeric() || p == '_'));
        prev = Some(c);
        if c != '@' || !at_start {
            continue;
        }
        let rest = &text[i + 1..];
        let end = rest
            .char_indices()
            .find(|&(_, c)| !name_char(c))
            .map_or(rest.len(), |(j, _)| j);
        let word = rest[..end].trim_end_matches(['.', '-']);
        if let Some(h) = Handle::parse(word) {
            if !out.contains(&h) {
                out.push(h);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_handles() {
        let hs = parse_handles(
            "CPU high @pagerduty-Infra @slack-ops, see @webhook-self_hosted. \
             mail@slack-no @oncall-primary @email-x @slack-ops",
        );
        let s: Vec<String> = hs.iter().map(|h| h.to_string()).collect();
        assert_eq!(
            s,
            [
                "@pagerduty-Infra",
                "@slack-ops",
                "@webhook-self_hosted",
                "@oncall-primary"
            ]
        );
    }

    #[test]
    fn account_channel_form() {
        let h = Handle::parse("@slack-acme-alerts").unwrap();
        assert_eq!(h.kind, HandleKind::Slack);
        assert_eq!(h.name, "acme-alerts");
        assert!(Handle::parse("@slack-").is_none());
        assert!(Handle::parse("@foo-bar").is_none());
    }
}
