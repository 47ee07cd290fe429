//! `warden waf build-rules`: compiles Warden's default ruleset from its YAML sources
//! (`rules/src/*.yaml`) into the one JSON file the engine embeds (`rules/warden-default.json`).
//!
//! Why a build step: rules are easier to review in YAML (regexes need no JSON escaping), and a
//! few things are better generated than typed: the lists of inputs most rules share (input
//! groups), and the base64 forms of keywords at the three byte alignments. The output is
//! plain Datadog-format JSON that any engine reads; `--check` fails when the committed JSON is
//! stale, and a test runs it.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use serde_json::{Map, Value, json};

/// Reads every `*.yaml` file of `src` (sorted by name) and returns the ruleset document.
pub(crate) fn build(src: &Path) -> anyhow::Result<Value> {
    let mut files: Vec<_> = std::fs::read_dir(src)
        .with_context(|| format!("cannot read {}", src.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no *.yaml files in {}", src.display());
    }
    let mut top = Map::new();
    let mut groups: Map<String, Value> = Map::new();
    let mut rules: Vec<(String, Value)> = Vec::new();
    for f in &files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        let doc: Value = serde_yaml::from_str(&text)
            .with_context(|| format!("{}: not valid YAML", f.display()))?;
        let Value::Object(mut doc) = doc else {
            bail!("{}: expected a map at the top level", f.display());
        };
        let file_tags = match doc.remove("default_tags") {
            Some(Value::Object(t)) => t,
            None => Map::new(),
            Some(_) => bail!("{}: default_tags must be a map", f.display()),
        };
        for (k, v) in doc {
            match k.as_str() {
                "input_groups" => {
                    let Value::Object(g) = v else {
                        bail!("{}: input_groups must be a map", f.display());
                    };
                    groups.extend(g);
                }
                "rules" => {
                    let Value::Array(rs) = v else {
                        bail!("{}: rules must be a list", f.display());
                    };
                    let name = f.display().to_string();
                    for r in rs {
                        rules.push((name.clone(), apply_defaults(r, &file_tags)?));
                    }
                }
                _ => match (top.get_mut(&k), v) {
                    (Some(Value::Array(a)), Value::Array(b)) => a.extend(b),
                    (Some(_), _) => bail!("{}: top-level key '{k}' defined twice", f.display()),
                    (None, v) => {
                        top.insert(k, v);
                    }
                },
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    let mut out_rules = Vec::with_capacity(rules.len());
    for (file, mut rule) in rules {
        let id = rule
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if id.is_empty() || !seen.insert(id.clone()) {
            bail!("{file}: rule id '{id}' missing or duplicated");
        }
        expand_rule(&mut rule, &groups).with_context(|| format!("{file}: rule {id}"))?;
        out_rules.push(rule);
    }
    top.insert("rules".into(), Value::Array(out_rules));
    Ok(Value::Object(top))
}

/// Fills what every Warden rule has: `category`/`module` tags, the file's `default_tags`,
/// `on_match: [block]` for `confidence: high` (monitor otherwise) unless the rule says, and
/// `enabled: false` for `profile: paranoid` rules (the paranoid overlay enables them).
fn apply_defaults(mut rule: Value, file_tags: &Map<String, Value>) -> anyhow::Result<Value> {
    let Some(r) = rule.as_object_mut() else {
        bail!("a rule must be a map");
    };
    let tags = r.entry("tags").or_insert_with(|| json!({}));
    let Some(tags) = tags.as_object_mut() else {
        bail!("tags must be a map");
    };
    for (k, v) in file_tags {
        tags.entry(k.clone()).or_insert_with(|| v.clone());
    }
    tags.entry("category")
        .or_insert_with(|| json!("attack_attempt"));
    tags.entry("module").or_insert_with(|| json!("waf"));
    tags.entry("profile").or_insert_with(|| json!("default"));
    let confidence = tags.get("confidence").and_then(Value::as_str).unwrap_or("");
    if !matches!(confidence, "high" | "medium" | "low") {
        bail!("tags.confidence must be high, medium or low");
    }
    let high = confidence == "high";
    let paranoid = tags.get("profile").and_then(Value::as_str) == Some("paranoid");
    if !r.contains_key("on_match") {
        r.insert(
            "on_match".into(),
            if high { json!(["block"]) } else { json!([]) },
        );
    }
    if paranoid && !r.contains_key("enabled") {
        r.insert("enabled".into(), json!(false));
    }
    Ok(rule)
}

/// Expands input-group names and `warden_base64_of` keyword lists in one rule.
fn expand_rule(rule: &mut Value, groups: &Map<String, Value>) -> anyhow::Result<()> {
    let rule_transformers = rule.get("transformers").cloned();
    let Some(conds) = rule.get_mut("conditions").and_then(Value::as_array_mut) else {
        bail!("no conditions");
    };
    for c in conds {
        let Some(params) = c.get_mut("parameters").and_then(Value::as_object_mut) else {
            bail!("condition without parameters");
        };
        // Scalar operators take `inputs`; RASP detectors take named argument lists.
        for (name, inputs) in params.iter_mut() {
            if !matches!(name.as_str(), "inputs" | "resource" | "params" | "db_type") {
                continue;
            }
            let Value::Array(inputs) = inputs else {
                continue;
            };
            let mut expanded = Vec::new();
            for i in inputs.drain(..) {
                match i {
                    Value::String(g) => match groups.get(&g) {
                        Some(Value::Array(items)) => {
                            for item in items {
                                expanded.push(with_rule_transformers(
                                    item.clone(),
                                    rule_transformers.as_ref(),
                                ));
                            }
                        }
                        _ => bail!("unknown input group '{g}'"),
                    },
                    other => expanded.push(other),
                }
            }
            *inputs = expanded;
        }
        if let Some(words) = params.remove("warden_base64_of") {
            let Value::Array(words) = words else {
                bail!("warden_base64_of must be a list");
            };
            let list = params.entry("list").or_insert_with(|| json!([]));
            let Value::Array(list) = list else {
                bail!("list must be a list");
            };
            for w in words {
                let Some(w) = w.as_str() else {
                    bail!("warden_base64_of items must be strings");
                };
                for s in base64_alignments(w.as_bytes()) {
                    list.push(Value::String(s));
                }
            }
        }
    }
    Ok(())
}

/// An input-group item's own transformers (`keys_only`, a decoder for raw addresses) come
/// first and the rule's follow, because input-level transformers replace the rule's in the
/// format.
fn with_rule_transformers(mut item: Value, rule: Option<&Value>) -> Value {
    if let (Some(Value::Array(own)), Some(Value::Array(rule))) =
        (item.get_mut("transformers"), rule)
    {
        own.extend(rule.iter().cloned());
    }
    item
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// The base64 characters that encode only bytes of `word`, whichever of the three byte offsets
/// (mod 3) the word starts at inside a longer encoded blob.
pub(crate) fn base64_alignments(word: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for offset in 0..3usize {
        let mut bytes = vec![0u8; offset];
        bytes.extend_from_slice(word);
        let bits = bytes.len() * 8;
        let (word_start, word_end) = (offset * 8, bits);
        let mut s = String::new();
        let mut i = 0;
        while 6 * i + 6 <= bits {
            if 6 * i >= word_start && 6 * i + 6 <= word_end {
                let mut v = 0u8;
                for b in 0..6 {
                    let bit = 6 * i + b;
                    let set = (bytes[bit / 8] >> (7 - bit % 8)) & 1;
                    v = (v << 1) | set;
                }
                s.push(char::from(B64[usize::from(v)]));
            }
            i += 1;
        }
        if s.len() >= 4 && !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// `warden waf build-rules`: writes `out`, or with `check` compares it and fails when stale.
pub(crate) fn build_rules(src: &Path, out: &Path, check: bool) -> anyhow::Result<ExitCode> {
    let doc = build(src)?;
    // Every rule must load on this engine before the file is written.
    let mut text = serde_json::to_string_pretty(&doc)?;
    text.push('\n');
    let (_rs, diags) = warden_waf::Ruleset::from_json(&text).context("built ruleset")?;
    let mut problems = Vec::new();
    for (section, d) in &diags.sections {
        for (msg, ids) in &d.errors {
            problems.push(format!("{section}: {msg}: {}", ids.join(", ")));
        }
        if !d.skipped.is_empty() {
            problems.push(format!("{section}: skipped {}", d.skipped.join(", ")));
        }
    }
    if !problems.is_empty() {
        bail!(
            "the built ruleset does not load cleanly:\n{}",
            problems.join("\n")
        );
    }
    let n = doc["rules"].as_array().map_or(0, Vec::len);
    if check {
        let current = std::fs::read_to_string(out).unwrap_or_default();
        if current != text {
            eprintln!(
                "{} is stale: run `warden waf build-rules` after editing {}",
                out.display(),
                src.display()
            );
            return Ok(ExitCode::FAILURE);
        }
        eprintln!("{} is up to date ({n} rules)", out.display());
    } else {
        std::fs::write(out, &text).with_context(|| format!("cannot write {}", out.display()))?;
        eprintln!("wrote {} ({n} rules)", out.display());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_alignments_find_the_word_at_every_offset() {
        // "runtime" at offsets 0, 1, 2 inside longer blobs.
        let a = base64_alignments(b"runtime");
        assert_eq!(a[0], "cnVudGltZ");
        for prefix in ["", "x", "xy", "xyz"] {
            let blob = format!("{prefix}runtime and more");
            let enc = encode(blob.as_bytes());
            assert!(
                a.iter().any(|s| enc.contains(s.as_str())),
                "{prefix}: {enc}"
            );
        }
    }

    fn encode(b: &[u8]) -> String {
        let mut s = String::new();
        for chunk in b.chunks(3) {
            let mut n = [0u8; 3];
            n[..chunk.len()].copy_from_slice(chunk);
            let v = (u32::from(n[0]) << 16) | (u32::from(n[1]) << 8) | u32::from(n[2]);
            for k in 0..=chunk.len() {
                s.push(char::from(B64[((v >> (18 - 6 * k)) & 63) as usize]));
            }
        }
        s
    }
}
