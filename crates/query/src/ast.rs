//! The parsed form of a query. Public because monitors, the store and the server consume it:
//! the store evaluates [`Filter`] against its index, monitors wrap an [`Expr`] in a threshold.

/// Byte range `[start, end)` of a node in the query text, used to point errors at it.
pub type Span = (usize, usize);

/// Space aggregation: how series in one group are combined at each timestamp.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SpaceAgg {
    Avg,
    Sum,
    Min,
    Max,
    /// Number of series reporting (or of values, for distributions).
    Count,
    /// Quantile `0 < q < 1` of a distribution (`p50:` .. `p99:`), from merged sketches.
    Percentile(f64),
}

impl SpaceAgg {
    /// The name as written in a query (`avg`, `p95`).
    pub fn name(&self) -> String {
        match self {
            SpaceAgg::Avg => "avg".into(),
            SpaceAgg::Sum => "sum".into(),
            SpaceAgg::Min => "min".into(),
            SpaceAgg::Max => "max".into(),
            SpaceAgg::Count => "count".into(),
            SpaceAgg::Percentile(q) => format!("p{}", (q * 100.0).round() as i64),
        }
    }
}

/// Time aggregation inside one rollup interval (`.rollup(<method>)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeAgg {
    Avg,
    Sum,
    Min,
    Max,
    Count,
}

impl TimeAgg {
    pub fn name(&self) -> &'static str {
        match self {
            TimeAgg::Avg => "avg",
            TimeAgg::Sum => "sum",
            TimeAgg::Min => "min",
            TimeAgg::Max => "max",
            TimeAgg::Count => "count",
        }
    }
}

/// `.rollup(method[, seconds])`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rollup {
    pub method: TimeAgg,
    pub seconds: Option<i64>,
}

/// `.as_count()` / `.as_rate()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TypeModifier {
    AsCount,
    AsRate,
}

/// `.fill(method[, limit_seconds])`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fill {
    pub method: FillMethod,
    /// Longest gap (seconds) that is filled; `None` = the default of 300 s.
    pub limit: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FillMethod {
    Null,
    Zero,
    Last,
    Linear,
}

/// One `agg:metric{filter} by {tags}.modifiers()` query.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricQuery {
    pub space_agg: SpaceAgg,
    pub metric: String,
    pub filter: Filter,
    /// The filter text as written between the braces, trimmed (`*` for all).
    pub filter_text: String,
    /// `by {a,b}` tag keys, in the order written.
    pub group_by: Vec<String>,
    pub rollup: Option<Rollup>,
    pub modifier: Option<TypeModifier>,
    pub fill: Option<Fill>,
}

/// Ranking method of `top()` (and of v2 formula limits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RankMethod {
    Mean,
    Max,
    Min,
    Last,
    Area,
    L2Norm,
    Norm,
}

/// A function applied to a series expression. Arguments other than the series are literals.
#[derive(Clone, Debug, PartialEq)]
pub enum Function {
    Abs,
    Log2,
    Log10,
    Cumsum,
    Integral,
    PerSecond,
    PerMinute,
    PerHour,
    Dt,
    Diff,
    MonotonicDiff,
    Derivative,
    /// Shift by this many seconds (negative = the past): `timeshift`, `hour_before`, ...
    Timeshift(i64),
    Top {
        n: usize,
        method: RankMethod,
        descending: bool,
    },
    ClampMin(f64),
    ClampMax(f64),
    CutoffMin(f64),
    CutoffMax(f64),
    DefaultZero,
    CountNonzero,
    CountNotNull,
    ExcludeNull,
    /// Exponentially weighted moving average over this many points (`ewma_3` .. `ewma_20`).
    Ewma(usize),
    /// Rolling median over this many points (`median_3` .. `median_9`).
    Median(usize),
    /// `moving_rollup(q, seconds, 'avg|sum|min|max|count')`.
    MovingRollup {
        seconds: i64,
        method: TimeAgg,
    },
}

/// Binary arithmetic operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinOp {
    pub fn symbol(&self) -> char {
        match self {
            BinOp::Add => '+',
            BinOp::Sub => '-',
            BinOp::Mul => '*',
            BinOp::Div => '/',
        }
    }
}

/// An expression node with the byte range it was parsed from.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    Query(Box<MetricQuery>),
    Number(f64),
    /// A reference to a named query (v2 formulas: `a / b * 100`).
    Ref(String),
    Neg(Box<Expr>),
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    Call {
        /// The name as written (for display).
        name: String,
        function: Function,
        arg: Box<Expr>,
    },
}

impl Expr {
    /// Every metric query in the expression, left to right.
    pub fn queries(&self) -> Vec<&MetricQuery> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect<'a>(&'a self, out: &mut Vec<&'a MetricQuery>) {
        match &self.kind {
            ExprKind::Query(q) => out.push(q),
            ExprKind::Number(_) | ExprKind::Ref(_) => {}
            ExprKind::Neg(e) | ExprKind::Call { arg: e, .. } => e.collect(out),
            ExprKind::Binary { lhs, rhs, .. } => {
                lhs.collect(out);
                rhs.collect(out);
            }
        }
    }
}

/// A tag filter (`{...}`), evaluated against a series' tags plus `host:<host>`.
///
/// Matching rules: `k:v` matches the tag `k:v` exactly; a bare `k` matches a bare tag `k` or any
/// `k:<value>`; a term containing `*` is a glob (`*` = any run of characters) over the value
/// when the term has a `:` (key matched as a glob too), over the whole tag otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    /// `{*}`: every series.
    All,
    /// `key:value`.
    Eq {
        key: String,
        value: String,
    },
    /// Bare `key`: the key is present (with any value, or as a bare tag).
    Has(String),
    /// `key:pattern` with `*` in the key or the value.
    Glob {
        key: String,
        value: String,
    },
    /// A pattern with `*` and no `:`, matched against the whole tag.
    TagGlob(String),
    Not(Box<Filter>),
    And(Vec<Filter>),
    Or(Vec<Filter>),
}

impl Filter {
    /// Whether a series with these tags (include `host:<host>`) passes the filter.
    pub fn matches(&self, tags: &[String]) -> bool {
        match self {
            Filter::All => true,
            Filter::Eq { key, value } => tags.iter().any(|t| {
                t.len() == key.len() + 1 + value.len()
                    && t.starts_with(key.as_str())
                    && t.as_bytes()[key.len()] == b':'
                    && t.ends_with(value.as_str())
            }),
            Filter::Has(key) => tags.iter().any(|t| {
                t == key
                    || (t.starts_with(key.as_str()) && t.as_bytes().get(key.len()) == Some(&b':'))
            }),
            Filter::Glob { key, value } => tags.iter().any(|t| match t.split_once(':') {
                Some((k, v)) => glob(key, k) && glob(value, v),
                None => false,
            }),
            Filter::TagGlob(p) => tags.iter().any(|t| glob(p, t)),
            Filter::Not(f) => !f.matches(tags),
            Filter::And(fs) => fs.iter().all(|f| f.matches(tags)),
            Filter::Or(fs) => fs.iter().any(|f| f.matches(tags)),
        }
    }

    /// Builds the filter for one term (`k:v`, `k:web-*`, `*east*`, bare `k`, `*`).
    pub fn term(s: &str) -> Filter {
        if s == "*" {
            return Filter::All;
        }
        match s.split_once(':') {
            Some((k, v)) if s.contains('*') => Filter::Glob {
                key: k.to_string(),
                value: v.to_string(),
            },
            Some((k, v)) => Filter::Eq {
                key: k.to_string(),
                value: v.to_string(),
            },
            None if s.contains('*') => Filter::TagGlob(s.to_string()),
            None => Filter::Has(s.to_string()),
        }
    }

    /// The `key:value` tags the filter requires outright (top-level equality terms), used to
    /// build the `scope` of a result series.
    pub fn required_tags(&self) -> Vec<String> {
        match self {
            Filter::Eq { key, value } => vec![format!("{key}:{value}")],
            Filter::And(fs) => fs.iter().flat_map(|f| f.required_tags()).collect(),
            _ => Vec::new(),
        }
    }
}

/// `*`-only glob (no other metacharacters); linear time, backtracking to the last star.
pub fn glob(pattern: &str, s: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), s.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some(sp) = star {
            pi = sp + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}
