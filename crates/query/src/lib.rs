//! Warden's Datadog-compatible metrics query engine: the classic query language
//! (`avg:system.cpu.user{env:prod} by {host}.rollup(avg, 60)`, arithmetic, functions), its
//! evaluation over any [`DataSource`], and the JSON bodies of `GET /api/v1/query` and
//! `POST /api/v2/query/timeseries`.
//!
//! Why a separate, pure crate: the same engine serves the HTTP API, the CLI (`warden query`) and
//! monitors (which embed a query in `avg(last_5m):<query> > 90`), and it must be testable with
//! exact numbers without a store, sockets or a clock. So: no I/O, no async, time is injected
//! through [`EvalOptions::now`], data comes through the [`DataSource`] trait.
//!
//! Errors are [`QueryError`]s with a byte position (the server answers 400 with it; the CLI
//! draws a caret with [`QueryError::caret`]). Nothing here panics on input.

pub mod ast;
pub mod error;
pub mod eval;
pub mod monitor;
pub mod parser;
pub mod render;
pub mod response;
pub mod source;

pub use ast::{
    BinOp, Expr, ExprKind, Fill, FillMethod, Filter, Function, MetricQuery, RankMethod, Rollup,
    SpaceAgg, Span, TimeAgg, TypeModifier, glob,
};
pub use error::QueryError;
pub use eval::{
    EvalOptions, Evaluation, Grid, ResultSeries, evaluate, evaluate_on, grid_for, grid_with,
};
pub use monitor::{MonitorGroup, evaluate_monitor, parse_time};
pub use parser::{
    Comparator, MonitorQuery, parse, parse_formula, parse_list, parse_monitor, parse_prefix,
};
pub use render::{render_table, sparkline};
pub use response::{SCALAR_AGGREGATORS, run_v1, run_v1_json, run_v2, run_v2_scalar, unit_object};
pub use source::{DataSource, MemorySeries, MemorySource, RollupPoint, SeriesRef};
