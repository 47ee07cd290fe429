//! Datadog monitor message templates: `{{#is_alert}}…{{/is_alert}}`, `{{^is_alert}}…`,
//! `{{value}}`, `{{host.name}}`, `{{#is_match "host.name" "web"}}`.
//!
//! Why a hand-written renderer and not a Mustache crate: Datadog's dialect is not Mustache
//! (quoted arguments to `is_match`, `{{host.name}}` reading a group tag, unknown variables
//! rendering empty rather than failing) and a message must always render: a typo in a
//! template must never stop a page from going out. So unknown sections are false, unknown
//! variables are empty, and an unclosed section runs to the end of the text.

use std::collections::BTreeMap;

/// What a message is rendered for.
#[derive(Clone, Debug, Default)]
pub struct TemplateCtx {
    /// Section flags that are true: `is_alert`, `is_recovery`, …
    pub flags: Vec<String>,
    /// Plain variables: `value`, `threshold`, `warn_threshold`, `last_triggered_at`, …
    pub vars: BTreeMap<String, String>,
    /// Group tags (`host` → `web-1`), read by `{{host.name}}` / `{{host}}` and `is_match`.
    pub tags: BTreeMap<String, String>,
}

impl TemplateCtx {
    fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }

    fn lookup(&self, name: &str) -> Option<&str> {
        if let Some(v) = self.vars.get(name) {
            return Some(v);
        }
        let tag = name.strip_suffix(".name").unwrap_or(name);
        self.tags.get(tag).map(String::as_str)
    }

    /// `is_match "tag" "a" "b"`: the tag's value contains one of the strings (or equals one,
    /// for `is_exact_match`).
    fn matches(&self, args: &[String], exact: bool) -> bool {
        let Some((var, wants)) = args.split_first() else {
            return false;
        };
        let Some(value) = self.lookup(var) else {
            return false;
        };
        wants.iter().any(|w| {
            if exact {
                value == w
            } else {
                value.contains(w.as_str())
            }
        })
    }

    fn section(&self, tag: &str) -> bool {
        let (name, args) = split_args(tag);
        match name {
            "is_match" => self.matches(&args, false),
            "is_exact_match" => self.matches(&args, true),
            "is_priority" => args
                .first()
                .is_some_and(|p| self.vars.get("priority").is_some_and(|v| v == p)),
            _ => self.flag(name),
        }
    }
}

/// `is_match "host.name" "web"` → (`is_match`, [`host.name`, `web`]).
fn split_args(tag: &str) -> (&str, Vec<String>) {
    let tag = tag.trim();
    let (name, rest) = tag.split_once(char::is_whitespace).unwrap_or((tag, ""));
    let mut args = Vec::new();
    let mut chars = rest.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' || c == '\'' {
            chars.next();
            let mut s = String::new();
            for d in chars.by_ref() {
                if d == c {
                    break;
                }
                s.push(d);
            }
            args.push(s);
        } else {
            let mut s = String::new();
            while let Some(&d) = chars.peek() {
                if d.is_whitespace() {
                    break;
                }
                s.push(d);
                chars.next();
            }
            args.push(s);
        }
    }
    (name, args)
}

enum Node {
    Text(String),
    Var(String),
    Section {
        tag: String,
        inverted: bool,
        body: Vec<Node>,
    },
}

/// Parses until `{{/close}}` (or the end); returns the nodes and the rest of the input.
fn parse<'a>(mut s: &'a str, close: Option<&str>) -> (Vec<Node>, &'a str) {
    let mut out = Vec::new();
    while let Some(open) = s.find("{{") {
        if open > 0 {
            out.push(Node::Text(s[..open].to_owned()));
        }
        let after = &s[open + 2..];
        let Some(end) = after.find("}}") else {
            out.push(Node::Text(s[open..].to_owned()));
            return (out, "");
        };
        let tag = after[..end].trim();
        s = &after[end + 2..];
        if let Some(name) = tag.strip_prefix('/') {
            let name = name.trim();
            if close.is_some_and(|c| c == name) {
                return (out, s);
            }
            // A stray closing tag renders as nothing.
            continue;
        }
        if let Some(t) = tag.strip_prefix('#').or_else(|| tag.strip_prefix('^')) {
            let inverted = tag.starts_with('^');
            let t = t.trim().to_owned();
            let (name, _) = split_args(&t);
            let (body, rest) = parse(s, Some(name));
            s = rest;
            out.push(Node::Section {
                tag: t,
                inverted,
                body,
            });
            continue;
        }
        out.push(Node::Var(tag.to_owned()));
    }
    if !s.is_empty() {
        out.push(Node::Text(s.to_owned()));
    }
    (out, "")
}

fn emit(nodes: &[Node], ctx: &TemplateCtx, out: &mut String) {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Var(v) => {
                if let Some(x) = ctx.lookup(v) {
                    out.push_str(x);
                }
            }
            Node::Section {
                tag,
                inverted,
                body,
            } => {
                if ctx.section(tag) != *inverted {
                    emit(body, ctx, out);
                }
            }
        }
    }
}

/// Renders `template` for `ctx`. Never fails.
pub fn render(template: &str, ctx: &TemplateCtx) -> String {
    let (nodes, _) = parse(template, None);
    let mut out = String::with_capacity(template.len());
    emit(&nodes, ctx, &mut out);
    out
}

/// Checks a template's sections are balanced; the error names the first problem. Monitors
/// are refused with this at create time (rendering itself never fails).
pub fn validate(template: &str) -> Result<(), String> {
    let mut stack: Vec<String> = Vec::new();
    let mut s = template;
    while let Some(open) = s.find("{{") {
        let after = &s[open + 2..];
        let Some(end) = after.find("}}") else {
            return Err("unclosed '{{' in message".into());
        };
        let tag = after[..end].trim();
        s = &after[end + 2..];
        if let Some(name) = tag.strip_prefix('/') {
            match stack.pop() {
                Some(open) if open == name.trim() => {}
                Some(open) => {
                    return Err(format!(
                        "'{{{{/{}}}}}' closes '{{{{#{open}}}}}' in message",
                        name.trim()
                    ));
                }
                None => return Err(format!("'{{{{/{}}}}}' without an opening tag", name.trim())),
            }
        } else if let Some(t) = tag.strip_prefix('#').or_else(|| tag.strip_prefix('^')) {
            let (name, _) = split_args(t);
            stack.push(name.to_owned());
        }
    }
    match stack.pop() {
        Some(open) => Err(format!("'{{{{#{open}}}}}' is never closed in message")),
        None => Ok(()),
    }
}

/// Formats a metric value the way messages show it: at most 4 decimals, no trailing zeros.
pub fn format_value(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let r = (v * 10_000.0).round() / 10_000.0;
    let r = if r == 0.0 { 0.0 } else { r };
    format!("{r}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(flags: &[&str]) -> TemplateCtx {
        let mut c = TemplateCtx {
            flags: flags.iter().map(|s| s.to_string()).collect(),
            ..TemplateCtx::default()
        };
        c.vars.insert("value".into(), "95.5".into());
        c.vars.insert("threshold".into(), "90".into());
        c.tags.insert("host".into(), "web-1".into());
        c
    }

    const MSG: &str = "{{#is_alert}}CPU is {{value}}% on {{host.name}} @pagerduty-Infra @slack-ops{{/is_alert}}\n{{#is_recovery}}Recovered @slack-ops{{/is_recovery}} @webhook-selfhosted";

    #[test]
    fn captured_message_alert_and_recovery() {
        assert_eq!(
            render(MSG, &ctx(&["is_alert"])),
            "CPU is 95.5% on web-1 @pagerduty-Infra @slack-ops\n @webhook-selfhosted"
        );
        assert_eq!(
            render(MSG, &ctx(&["is_recovery"])),
            "\nRecovered @slack-ops @webhook-selfhosted"
        );
    }

    #[test]
    fn inverted_nested_and_match() {
        let t = "{{^is_alert}}not alert{{/is_alert}}{{#is_warning}}W {{#is_match \"host.name\" \"web\" \"db\"}}web{{/is_match}}{{/is_warning}} > {{ threshold }} {{unknown}}.";
        assert_eq!(render(t, &ctx(&["is_warning"])), "not alertW web > 90 .");
        assert_eq!(render(t, &ctx(&["is_alert"])), " > 90 .");
        let t2 = "{{#is_exact_match \"host.name\" \"web\"}}x{{/is_exact_match}}";
        assert_eq!(render(t2, &ctx(&[])), "");
    }

    #[test]
    fn broken_templates_still_render_and_validate_names_the_problem() {
        assert_eq!(render("a {{#is_alert}}b", &ctx(&["is_alert"])), "a b");
        assert_eq!(render("a {{value", &ctx(&[])), "a {{value");
        assert!(validate(MSG).is_ok());
        assert!(
            validate("{{#is_alert}}x")
                .unwrap_err()
                .contains("never closed")
        );
        assert!(
            validate("{{#is_alert}}x{{/is_warning}}")
                .unwrap_err()
                .contains("closes")
        );
    }

    #[test]
    fn values() {
        assert_eq!(format_value(95.0), "95");
        assert_eq!(format_value(0.1 + 0.2), "0.3");
        assert_eq!(format_value(-3.25), "-3.25");
    }
}
