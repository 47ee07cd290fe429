//! Literal prefilter shared by the regexes that inspect the same transformed value.
//!
//! Why: most of the Datadog ruleset is `match_regex`, and many rules look at the same values
//! (~60 on every query/body value, ~58 on the user-agent). Each regex already has its own
//! literal prefilter inside the `regex` crate, but that still costs one search call (and one
//! scan) per regex per value. Here every regex whose matches must begin (or end) with one of a
//! finite set of literals contributes those literals to one Aho-Corasick automaton per
//! transformer chain; one overlapping scan of a value gives the set of regexes that *can*
//! match it, and the others are skipped without running them (nor the transformers, when the
//! result is cached).
//!
//! Soundness: the literals come from `regex_syntax`'s extractor on the same HIR the regex is
//! compiled from (same `re2_compat` rewrite, same flags and Unicode fallback). Its contract is
//! that every match starts (prefix) or ends (suffix) with one of the literals of a finite
//! sequence, so a value containing none of them cannot match: skipping is exactly "the regex
//! returns no match". The same holds for the prefixes of any one part of a concatenation (every
//! match contains a match of each part) and for the union over an alternation's branches, which
//! is how regexes that start and end with classes (`\w+select\s+...`) still get a set. Regexes without such a set (infinite sequence, or a literal shorter than
//! 3 bytes) get no prefilter and always run. `phrase_match` conditions join the same groups
//! with their phrases as the literals (a phrase can only be found where it occurs).
//!
//! The per-request cache is keyed by the address and length of the *original* string in the
//! context's store (values are immutable while they are stored) and is cleared whenever the
//! store changes, so a key can never name two different strings.

use std::collections::HashMap;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use regex_syntax::hir::literal::{ExtractKind, Extractor};
use regex_syntax::hir::{Hir, HirKind};
use rustc_hash::FxHashMap;

use crate::config::{Condition, MatcherRef};
use crate::matcher::{Matcher, re2_compat};
use crate::ruleset::Rule;
use crate::transform::Transformer;

/// At most this many literals per regex (beyond that the prefilter would rarely say no).
const MAX_LITERALS: usize = 250;

/// Regexes with a shorter required literal are left to their own prefilter: such literals
/// occur in most values and only make the shared scan report more matches.
const MIN_LITERAL_LEN: usize = 3;

/// ...unless they contain a byte that is rare in ordinary text (shell and template
/// metacharacters): `;`, `|` or `` ` `` alone already rule out most values.
const RARE_BYTES: &[u8] = b";|&`$<>{}\\^~[]";

/// One automaton over the literals of every prefiltered regex of one transformer chain.
#[derive(Debug)]
pub(crate) struct Group {
    id: u32,
    ac: AhoCorasick,
    /// For each pattern of `ac`, the regexes (bit indexes) that require it.
    pat_bits: Vec<Vec<u32>>,
    /// Number of 64-bit words of a result set.
    words: usize,
    /// Where this group's result set sits inside a [`Combined`] result set, in words.
    word_off: usize,
    /// All groups' literals in one automaton (when there are several groups).
    combined: Option<Arc<Combined>>,
}

/// Every group's literals in one automaton. A value that a group's transformer chain leaves
/// unchanged (the common case on benign traffic: nothing to decode) is then scanned once for
/// all such groups instead of once per group; a group's result set is its slice of the
/// combined one. Same matching (standard semantics, ASCII case-insensitive, every overlapping
/// occurrence), so each slice is exactly what the group's own automaton gives on those bytes.
#[derive(Debug)]
struct Combined {
    ac: AhoCorasick,
    /// For each pattern, the bits it sets in a combined result set (group offset + bit).
    pat_bits: Vec<Vec<u32>>,
    words: usize,
}

/// A target whose regex is prefiltered: its group and its bit in the group's result set.
#[derive(Debug, Clone)]
pub(crate) struct TargetPrefilter {
    group: Arc<Group>,
    bit: u32,
}

/// Per-request results: (group id, string address, string length) -> offset in `bits`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cache {
    index: FxHashMap<(u32, usize, usize), u32>,
    /// Union over every string below a container value: (group id, value address, source).
    roots: FxHashMap<(u32, usize, u8), u32>,
    /// Combined result sets of untransformed strings: (string address, length) -> offset.
    ident: FxHashMap<(usize, usize), u32>,
    bits: Vec<u64>,
}

impl Cache {
    /// Room for a typical request on first use (a context is per request: without this the
    /// maps rehash several times while they fill). Keeps its capacity across `clear`.
    fn reserve(&mut self) {
        if self.index.capacity() == 0 {
            self.index.reserve(256);
            self.roots.reserve(64);
            self.ident.reserve(64);
            self.bits.reserve(1024);
        }
    }

    /// Forget everything (the store changed, so string addresses may be reused).
    pub(crate) fn clear(&mut self) {
        if !self.bits.is_empty() {
            self.index.clear();
            self.roots.clear();
            self.ident.clear();
            self.bits.clear();
        }
    }

    /// Whether `pf`'s regex can match any string below the container at `root` (iterated as
    /// `source`), if that union was already computed.
    pub(crate) fn root_lookup(
        &self,
        pf: &TargetPrefilter,
        root: usize,
        source: u8,
    ) -> Option<bool> {
        let off = *self.roots.get(&(pf.group.id, root, source))? as usize;
        Some(self.bit(pf, off))
    }

    /// Start a union for `pf`'s group; returns its offset for [`Cache::root_add`].
    pub(crate) fn root_begin(&mut self, pf: &TargetPrefilter) -> usize {
        self.reserve();
        let off = self.bits.len();
        self.bits.resize(off + pf.group.words, 0);
        off
    }

    /// Add one string (`value` gives its transformed bytes, computed on a cache miss only).
    pub(crate) fn root_add<'s>(
        &mut self,
        pf: &TargetPrefilter,
        off: usize,
        orig: &str,
        value: impl FnOnce() -> std::borrow::Cow<'s, [u8]>,
    ) {
        let g = &*pf.group;
        let leaf = match self.index.get(&(g.id, orig.as_ptr() as usize, orig.len())) {
            Some(&o) => o as usize,
            None => {
                let v = value();
                self.scan_off(pf, orig, &v)
            }
        };
        for w in 0..g.words {
            let x = self.bits[leaf + w];
            self.bits[off + w] |= x;
        }
    }

    /// Remember the union started at `off` and tell whether `pf`'s regex can match.
    pub(crate) fn root_finish(
        &mut self,
        pf: &TargetPrefilter,
        off: usize,
        root: usize,
        source: u8,
    ) -> bool {
        self.roots.insert((pf.group.id, root, source), off as u32);
        self.bit(pf, off)
    }

    fn bit(&self, pf: &TargetPrefilter, off: usize) -> bool {
        self.bits[off + (pf.bit / 64) as usize] & (1u64 << (pf.bit % 64)) != 0
    }

    /// Look up or compute the result set of `pf`'s group for `orig`, scanning `value` (the
    /// transformed `orig`) on a miss. Returns whether `pf`'s regex can match.
    #[cfg(test)]
    pub(crate) fn check(&mut self, pf: &TargetPrefilter, orig: &str, value: &[u8]) -> bool {
        match self.lookup(pf, orig) {
            Some(ok) => ok,
            None => self.scan(pf, orig, value),
        }
    }

    /// Whether `pf`'s regex can match `orig`, if `orig` was already scanned for its group.
    pub(crate) fn lookup(&self, pf: &TargetPrefilter, orig: &str) -> Option<bool> {
        let g = &*pf.group;
        let off = *self
            .index
            .get(&(g.id, orig.as_ptr() as usize, orig.len()))? as usize;
        Some(self.bits[off + (pf.bit / 64) as usize] & (1u64 << (pf.bit % 64)) != 0)
    }

    /// Scan `value` (the transformed `orig`, not looked up yet) for `pf`'s group, remember
    /// the result set, and return whether `pf`'s regex can match.
    pub(crate) fn scan(&mut self, pf: &TargetPrefilter, orig: &str, value: &[u8]) -> bool {
        let off = self.scan_off(pf, orig, value);
        self.bit(pf, off)
    }

    /// [`Cache::scan`], returning the offset of the group's result set.
    fn scan_off(&mut self, pf: &TargetPrefilter, orig: &str, value: &[u8]) -> usize {
        self.reserve();
        let g = &*pf.group;
        let key = (orig.as_ptr() as usize, orig.len());
        let unchanged = value.as_ptr() == orig.as_ptr() && value.len() == orig.len();
        let off = match &g.combined {
            Some(c) if unchanged => {
                let base = match self.ident.get(&key) {
                    Some(&o) => o as usize,
                    None => {
                        let o = self.bits.len();
                        self.bits.resize(o + c.words, 0);
                        for m in c.ac.find_overlapping_iter(value) {
                            for &b in &c.pat_bits[m.pattern().as_usize()] {
                                self.bits[o + (b / 64) as usize] |= 1u64 << (b % 64);
                            }
                        }
                        self.ident.insert(key, o as u32);
                        o
                    }
                };
                base + g.word_off
            }
            _ => {
                let off = self.bits.len();
                self.bits.resize(off + g.words, 0);
                for m in g.ac.find_overlapping_iter(value) {
                    for &b in &g.pat_bits[m.pattern().as_usize()] {
                        self.bits[off + (b / 64) as usize] |= 1u64 << (b % 64);
                    }
                }
                off
            }
        };
        self.index.insert((g.id, key.0, key.1), off as u32);
        off
    }
}

/// Literals one of which every match of the regex must contain (as its prefix or suffix), or
/// `None` when there is no useful finite set. Parses exactly as `compile_regex` compiles.
fn required_literals(src: &str, case_sensitive: bool, unicode: bool) -> Option<Vec<Vec<u8>>> {
    let pattern = re2_compat(src);
    // A case-insensitive ASCII pattern is read case-sensitively: every case-insensitive match
    // equals, up to ASCII case, a match of the pattern as written, so it contains one of its
    // literals up to case, and the shared automaton matches ASCII case-insensitively. Reading
    // it case-insensitively would turn each letter into a two-letter class and blow the
    // extractor's limits on keyword lists. (Unicode patterns keep their case folding.)
    let hir = regex_syntax::ParserBuilder::new()
        .case_insensitive(!case_sensitive && unicode)
        .unicode(unicode)
        .utf8(false)
        .build()
        .parse(&pattern)
        .ok()?;
    required(&hir, 0)
}

/// Literals one of which occurs in every match of `hir` (see the module docs), the most
/// selective of: the prefixes of the whole expression, its suffixes, and, through the
/// structure, the required literals of any one part of a concatenation (every match contains
/// a match of each part), the union over the branches of an alternation (a match comes from
/// one branch), or those of a group or a repetition of at least one.
fn required(hir: &Hir, depth: usize) -> Option<Vec<Vec<u8>>> {
    let mut best: Option<Vec<Vec<u8>>> = None;
    let mut consider = |c: Option<Vec<Vec<u8>>>| {
        if let Some(c) = c {
            if best.as_ref().is_none_or(|b| better(&c, b)) {
                best = Some(c);
            }
        }
    };
    for kind in [ExtractKind::Prefix, ExtractKind::Suffix] {
        let mut ex = Extractor::new();
        ex.kind(kind);
        let seq = ex.extract(hir);
        let Some(lits) = seq.literals() else { continue };
        consider(usable(lits.iter().map(|l| l.as_bytes())));
    }
    if depth < 8 {
        match hir.kind() {
            HirKind::Concat(parts) => {
                for p in parts {
                    consider(required(p, depth + 1));
                }
            }
            HirKind::Alternation(branches) => {
                let mut all = Vec::new();
                for br in branches {
                    match required(br, depth + 1) {
                        Some(l) => all.extend(l),
                        None => {
                            all.clear();
                            break;
                        }
                    }
                }
                if !all.is_empty() {
                    consider(usable(all.iter().map(Vec::as_slice)));
                }
            }
            HirKind::Capture(c) => consider(required(&c.sub, depth + 1)),
            HirKind::Repetition(r) if r.min >= 1 => consider(required(&r.sub, depth + 1)),
            _ => {}
        }
    }
    best
}

/// A literal set the automaton can use: non-empty, not too large, every literal long enough.
/// Literals are folded to ASCII lower case (the automaton matches ASCII case-insensitively,
/// so case variants, which case-insensitive regexes expand into, collapse into one pattern;
/// that accepts a superset of the values the exact literals would, which keeps it sound).
fn usable<'a>(lits: impl Iterator<Item = &'a [u8]>) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for l in lits {
        if l.len() < MIN_LITERAL_LEN && !l.iter().any(|b| RARE_BYTES.contains(b)) {
            return None;
        }
        out.push(l.to_ascii_lowercase());
    }
    out.sort_unstable();
    out.dedup();
    (!out.is_empty() && out.len() <= MAX_LITERALS).then_some(out)
}

/// Whether literal set `a` is more selective than `b`: longer shortest literal, then fewer.
fn better(a: &[Vec<u8>], b: &[Vec<u8>]) -> bool {
    let min = |x: &[Vec<u8>]| x.iter().map(Vec::len).min().unwrap_or(0);
    (min(a), std::cmp::Reverse(a.len())) > (min(b), std::cmp::Reverse(b.len()))
}

/// The phrases of a `phrase_match` as prefilter literals (same rules as for regexes).
fn phrase_literals(words: &[Vec<u8>]) -> Option<Vec<Vec<u8>>> {
    if words.is_empty() || words.iter().any(|w| w.len() < MIN_LITERAL_LEN) {
        return None;
    }
    let mut out: Vec<Vec<u8>> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
    out.sort_unstable();
    out.dedup();
    Some(out)
}

/// Attach prefilters to the targets of the rules' regex conditions.
pub(crate) fn attach(rules: &mut [Rule]) {
    // Literals per distinct regex matcher (by identity).
    let mut lits_of: HashMap<*const Matcher, Option<Vec<Vec<u8>>>> = HashMap::new();
    // Per transformer chain: regex bit per matcher, literal -> bits.
    struct Building {
        bit_of: HashMap<*const Matcher, u32>,
        pats: Vec<Vec<u8>>,
        pat_index: HashMap<Vec<u8>, usize>,
        pat_bits: Vec<Vec<u32>>,
    }
    let mut chains: Vec<(Vec<Transformer>, Building)> = Vec::new();
    let mut wanted: Vec<(usize, usize, usize, usize, u32)> = Vec::new(); // rule, cond, target, chain, bit
    for (ri, r) in rules.iter().enumerate() {
        for (ci, c) in r.conditions.iter().enumerate() {
            let Condition::Scalar {
                matcher: MatcherRef::Static(m),
                targets,
                ..
            } = c
            else {
                continue;
            };
            let key = Arc::as_ptr(m);
            let lits = lits_of.entry(key).or_insert_with(|| match &**m {
                Matcher::Regex {
                    src,
                    case_sensitive,
                    unicode,
                    ..
                } => required_literals(src, *case_sensitive, *unicode),
                // A phrase can only be found where it occurs (with or without word boundaries).
                Matcher::Phrase { words, .. } => phrase_literals(words),
                _ => None,
            });
            let Some(lits) = lits else { continue };
            for (ti, t) in targets.iter().enumerate() {
                let chain = match chains.iter().position(|(c, _)| *c == t.transformers) {
                    Some(i) => i,
                    None => {
                        chains.push((
                            t.transformers.clone(),
                            Building {
                                bit_of: HashMap::new(),
                                pats: Vec::new(),
                                pat_index: HashMap::new(),
                                pat_bits: Vec::new(),
                            },
                        ));
                        chains.len() - 1
                    }
                };
                let b = &mut chains[chain].1;
                let next = b.bit_of.len() as u32;
                let bit = *b.bit_of.entry(key).or_insert(next);
                if bit == next {
                    for l in lits.iter() {
                        let pi = *b.pat_index.entry(l.clone()).or_insert_with(|| {
                            b.pats.push(l.clone());
                            b.pat_bits.push(Vec::new());
                            b.pats.len() - 1
                        });
                        b.pat_bits[pi].push(bit);
                    }
                }
                wanted.push((ri, ci, ti, chain, bit));
            }
        }
    }
    let automaton = |pats: &[Vec<u8>]| {
        AhoCorasickBuilder::new()
            .match_kind(MatchKind::Standard)
            .ascii_case_insensitive(true)
            .kind(Some(AhoCorasickKind::DFA))
            .build(pats)
            .ok()
    };
    // The combined automaton: every group's patterns, each setting its bits at the group's
    // offset.
    let mut word_offs = Vec::with_capacity(chains.len());
    let mut combined = None;
    if chains.len() > 1 {
        let mut pats: Vec<Vec<u8>> = Vec::new();
        let mut index: HashMap<&[u8], usize> = HashMap::new();
        let mut pat_bits: Vec<Vec<u32>> = Vec::new();
        let mut words = 0usize;
        for (_, b) in &chains {
            word_offs.push(words);
            for (pat, bits) in b.pats.iter().zip(&b.pat_bits) {
                let pi = *index.entry(pat.as_slice()).or_insert_with(|| {
                    pats.push(pat.clone());
                    pat_bits.push(Vec::new());
                    pats.len() - 1
                });
                pat_bits[pi].extend(bits.iter().map(|x| (words * 64) as u32 + x));
            }
            words += b.bit_of.len().div_ceil(64);
        }
        combined = automaton(&pats).map(|ac| {
            Arc::new(Combined {
                ac,
                pat_bits,
                words,
            })
        });
    }
    let mut groups: Vec<Option<Arc<Group>>> = Vec::with_capacity(chains.len());
    for (id, (_, b)) in chains.into_iter().enumerate() {
        groups.push(automaton(&b.pats).map(|ac| {
            Arc::new(Group {
                id: id as u32,
                ac,
                pat_bits: b.pat_bits,
                words: b.bit_of.len().div_ceil(64),
                word_off: word_offs.get(id).copied().unwrap_or(0),
                combined: combined.clone(),
            })
        }));
    }
    for (ri, ci, ti, chain, bit) in wanted {
        let Some(group) = &groups[chain] else {
            continue;
        };
        if let Condition::Scalar { targets, .. } = &mut rules[ri].conditions[ci] {
            targets[ti].prefilter = Some(TargetPrefilter {
                group: Arc::clone(group),
                bit,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ruleset::Ruleset;
    use serde_json::Value;

    #[test]
    fn literals_are_required_substrings() {
        let l = required_literals("(?i)^Nessus(/|([ :]+SOAP))", true, false).expect("prefix");
        assert_eq!(l, [&b"nessus "[..], b"nessus/", b"nessus:"]);
        // Leading class repetition: no prefix; the suffix set is used instead.
        let l = required_literals(r"[a-z]+=(?:x|y)javascript", false, false).expect("suffix");
        assert!(
            !l.is_empty() && l.iter().all(|x| x.ends_with(b"javascript")),
            "{l:?}"
        );
        // A case-insensitive keyword list is read as written (each letter is not a class),
        // so it stays within the extractor's limits; the automaton ignores ASCII case.
        let words = "(?:information_schema|xp_cmdshell|sp_executesql|sysobjects|pg_sleep|\
                     benchmark|waitfor|load_file|into_outfile|group_concat|extractvalue)";
        let l = required_literals(&format!(r"\b{words}\s*\("), false, false).expect("list");
        assert!(
            l.iter().any(|x| x.starts_with(b"information_schema")),
            "{l:?}"
        );
        // Neither prefix nor suffix is finite, but a middle part is required.
        let l = required_literals(r"\w+(?:union|select)\s+[^x]*", false, false).expect("inner");
        assert_eq!(l, [&b"select"[..], b"union"]);
        // Too short or unbounded: no prefilter.
        assert_eq!(required_literals("a|bc", true, false), None);
        assert_eq!(required_literals(r"\d+", true, false), None);
    }

    fn strings<'v>(v: &'v Value, out: &mut Vec<&'v str>) {
        match v {
            Value::String(s) => out.push(s),
            Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
            Value::Object(m) => m.iter().for_each(|(k, x)| {
                out.push(k);
                strings(x, out)
            }),
            _ => {}
        }
    }

    /// The prefilter never rejects a value its regex matches: every prefiltered (regex,
    /// transformer chain) of the Datadog ruleset against every string of the first CRS
    /// requests, each value checked in a fresh cache and in a shared one.
    #[test]
    fn never_rejects_a_match_on_the_crs_corpus() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/waf/");
        let rules = std::fs::read_to_string(format!("{dir}datadog-rules-1.18.2.json"))
            .expect("shared ruleset");
        let corpus =
            std::fs::read_to_string(format!("{dir}crs-regression.jsonl")).expect("shared corpus");
        let (rs, _) = Ruleset::from_json(&rules).expect("loads");
        let mut targets = Vec::new();
        for r in &rs.rules {
            for c in &r.conditions {
                if let Condition::Scalar {
                    matcher: MatcherRef::Static(m),
                    targets: ts,
                    ..
                } = c
                {
                    for t in ts.iter().filter(|t| t.prefilter.is_some()) {
                        targets.push((m, t));
                    }
                }
            }
        }
        assert!(
            targets.len() > 100,
            "prefiltered targets: {}",
            targets.len()
        );
        let (mut matched, mut rejected) = (0, 0);
        for line in corpus.lines().take(800) {
            let v: Value = serde_json::from_str(line).expect("jsonl");
            let mut ss = Vec::new();
            strings(&v["addresses"], &mut ss);
            let mut shared = Cache::default();
            // The union over the whole request equals the OR of its strings' results.
            let root = &v["addresses"];
            for (_, t) in &targets {
                let pf = t.prefilter.as_ref().expect("filtered");
                let mut union = Cache::default();
                let off = union.root_begin(pf);
                let mut any = false;
                for s in &ss {
                    let tv = crate::transform::apply_chain(&t.transformers, s.as_bytes());
                    any |= Cache::default().check(pf, s, &tv);
                    union.root_add(pf, off, s, || tv);
                }
                let addr = root as *const Value as usize;
                assert_eq!(union.root_finish(pf, off, addr, 0), any);
                assert_eq!(union.root_lookup(pf, addr, 0), Some(any));
            }
            for s in ss {
                for (m, t) in &targets {
                    let pf = t.prefilter.as_ref().expect("filtered");
                    let tv = crate::transform::apply_chain(&t.transformers, s.as_bytes());
                    let may = Cache::default().check(pf, s, &tv);
                    assert_eq!(shared.check(pf, s, &tv), may);
                    if m.match_bytes(&tv).is_some() {
                        matched += 1;
                        assert!(may, "prefilter rejected a match of {m:?} on {s:?}");
                    } else if !may {
                        rejected += 1;
                    }
                }
            }
        }
        assert!(
            matched > 0 && rejected > 0,
            "{matched} matched, {rejected} rejected"
        );
    }
}
