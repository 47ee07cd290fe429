//! The per-group monitor state machine: OK / Warn / Alert / No Data with recovery thresholds,
//! no-data timeouts, new-group delay and re-notification.
//!
//! Why recovery thresholds are part of the state: a value hovering around the threshold must
//! not page on every evaluation. Once in Alert, a group stays there until the value crosses
//! `critical_recovery` (which is on the "safe" side of `critical`); the same holds for Warn and
//! `warning_recovery`. The state machine therefore needs the previous status, and a step is a
//! pure function of (rule, previous group state, value, now).

use serde::{Deserialize, Serialize};

/// Comparison of a monitor (`> 90`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

impl Op {
    pub fn holds(self, v: f64, t: f64) -> bool {
        match self {
            Op::Gt => v > t,
            Op::Ge => v >= t,
            Op::Lt => v < t,
            Op::Le => v <= t,
            Op::Eq => v == t,
            Op::Ne => v != t,
        }
    }
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }
    /// True for `>`/`>=`: "above is bad".
    fn above(self) -> Option<bool> {
        match self {
            Op::Gt | Op::Ge => Some(true),
            Op::Lt | Op::Le => Some(false),
            Op::Eq | Op::Ne => None,
        }
    }
}

/// A monitor's status (per group, and overall: the worst group).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Status {
    #[serde(rename = "OK")]
    Ok,
    #[serde(rename = "Warn")]
    Warn,
    #[serde(rename = "Alert")]
    Alert,
    #[default]
    #[serde(rename = "No Data")]
    NoData,
}

impl Status {
    /// The Datadog name (`MonitorOverallStates`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warn => "Warn",
            Status::Alert => "Alert",
            Status::NoData => "No Data",
        }
    }
    /// Parses `alert`, `warn`, `no data` (as in `renotify_statuses`).
    pub fn parse_lower(s: &str) -> Option<Status> {
        match s.to_ascii_lowercase().as_str() {
            "alert" => Some(Status::Alert),
            "warn" | "warning" => Some(Status::Warn),
            "no data" | "no_data" => Some(Status::NoData),
            "ok" => Some(Status::Ok),
            _ => None,
        }
    }
    fn severity(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::NoData => 1,
            Status::Warn => 2,
            Status::Alert => 3,
        }
    }
    /// The worse of two statuses (for the overall state).
    pub fn worst(self, other: Status) -> Status {
        if other.severity() > self.severity() {
            other
        } else {
            self
        }
    }
}

/// `options.thresholds` (the critical one comes from the query).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Thresholds {
    pub critical: f64,
    pub critical_recovery: Option<f64>,
    pub warning: Option<f64>,
    pub warning_recovery: Option<f64>,
}

impl Thresholds {
    /// Checks the thresholds are ordered for `op`, naming the offending pair (Datadog refuses
    /// e.g. a recovery threshold on the alerting side of the alert threshold).
    pub fn validate(&self, op: Op) -> Result<(), String> {
        let Some(above) = op.above() else {
            return Ok(());
        };
        let (bad_side, word): (&str, fn(f64, f64) -> bool) = if above {
            ("greater", |a, b| a > b)
        } else {
            ("less", |a, b| a < b)
        };
        let check = |hi_name: &str, hi: f64, lo_name: &str, lo: Option<f64>| match lo {
            Some(lo) if !word(hi, lo) => Err(format!(
                "{hi_name} threshold ({hi}) must be {bad_side} than {lo_name} threshold ({lo})"
            )),
            _ => Ok(()),
        };
        check(
            "Alert",
            self.critical,
            "alert recovery",
            self.critical_recovery,
        )?;
        check("Alert", self.critical, "warning", self.warning)?;
        if let Some(w) = self.warning {
            check("Warning", w, "warning recovery", self.warning_recovery)?;
        }
        for v in [
            Some(self.critical),
            self.critical_recovery,
            self.warning,
            self.warning_recovery,
        ]
        .into_iter()
        .flatten()
        {
            if !v.is_finite() {
                return Err(format!("threshold {v} is not a finite number"));
            }
        }
        Ok(())
    }
}

/// What the state machine needs of a monitor.
#[derive(Clone, Debug)]
pub struct MonitorRule {
    pub op: Op,
    pub thresholds: Thresholds,
    pub notify_no_data: bool,
    /// A group without data for this long goes to No Data (when `notify_no_data`).
    pub no_data_secs: i64,
    /// Re-notify this long after the last notification while still in a renotify status.
    pub renotify_secs: Option<i64>,
    pub renotify_statuses: Vec<Status>,
    /// A group seen for less than this is not alerted on.
    pub new_group_delay_secs: i64,
}

/// One group's state, persisted between evaluations.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupState {
    pub status: Status,
    /// The current status was announced (so leaving it announces a recovery).
    #[serde(default)]
    pub notified: bool,
    #[serde(default)]
    pub first_seen: i64,
    #[serde(default)]
    pub last_data_ts: Option<i64>,
    #[serde(default)]
    pub last_value: Option<f64>,
    #[serde(default)]
    pub last_triggered_ts: Option<i64>,
    #[serde(default)]
    pub last_resolved_ts: Option<i64>,
    #[serde(default)]
    pub last_nodata_ts: Option<i64>,
    #[serde(default)]
    pub last_notified_ts: Option<i64>,
}

impl GroupState {
    /// A group first seen at `now` (status No Data, not announced).
    pub fn new(now: i64) -> GroupState {
        GroupState {
            first_seen: now,
            ..GroupState::default()
        }
    }
}

/// A status change (or re-notification) to announce.
#[derive(Clone, Debug, PartialEq)]
pub struct MonitorEvent {
    pub from: Status,
    pub to: Status,
    pub renotify: bool,
    pub value: Option<f64>,
}

impl MonitorEvent {
    /// True for a move back to OK.
    pub fn is_recovery(&self) -> bool {
        self.to == Status::Ok
    }

    /// The template flags that are true for this event.
    pub fn flags(&self) -> Vec<String> {
        let mut f: Vec<&str> = Vec::new();
        match self.to {
            Status::Alert => f.push("is_alert"),
            Status::Warn => {
                f.push("is_warning");
                if self.from == Status::Alert && !self.renotify {
                    f.push("is_alert_to_warning");
                }
            }
            Status::NoData => f.push("is_no_data"),
            Status::Ok => {
                f.push("is_recovery");
                f.push(match self.from {
                    Status::Alert => "is_alert_recovery",
                    Status::Warn => "is_warning_recovery",
                    _ => "is_no_data_recovery",
                });
            }
        }
        if self.renotify {
            f.push("is_renotify");
        }
        f.into_iter().map(str::to_owned).collect()
    }

    /// `$ALERT_TRANSITION`: `Triggered`/`Re-Triggered`, `Warn`/`Re-Warn`, `No Data`/
    /// `Re-No Data`, `Recovered`.
    pub fn transition(&self) -> &'static str {
        match (self.to, self.renotify) {
            (Status::Alert, false) => "Triggered",
            (Status::Alert, true) => "Re-Triggered",
            (Status::Warn, false) => "Warn",
            (Status::Warn, true) => "Re-Warn",
            (Status::NoData, false) => "No Data",
            (Status::NoData, true) => "Re-No Data",
            (Status::Ok, _) => "Recovered",
        }
    }
}

/// The status `v` puts a group in, given its previous status (recovery thresholds apply only
/// while in the matching state).
pub fn classify(rule: &MonitorRule, prev: Status, v: f64) -> Status {
    let t = &rule.thresholds;
    let op = rule.op;
    let crit_at = match (prev, t.critical_recovery) {
        (Status::Alert, Some(r)) => r,
        _ => t.critical,
    };
    if op.holds(v, crit_at) {
        return Status::Alert;
    }
    if let Some(w) = t.warning {
        let warn_at = match (prev, t.warning_recovery) {
            (Status::Warn, Some(r)) => r,
            _ => w,
        };
        if op.holds(v, warn_at) {
            return Status::Warn;
        }
    }
    Status::Ok
}

/// One evaluation of one group at `now` with `value` (None: no data in the window). Updates
/// `st` and returns what to announce, if anything.
pub fn step(
    rule: &MonitorRule,
    st: &mut GroupState,
    value: Option<f64>,
    now: i64,
) -> Option<MonitorEvent> {
    let prev = st.status;
    let next = match value {
        Some(v) => {
            st.last_data_ts = Some(now);
            st.last_value = Some(v);
            let s = classify(rule, prev, v);
            if s != Status::Ok && !st.notified && now - st.first_seen < rule.new_group_delay_secs {
                // Too young to alert on: hold (an OK reading still clears No Data).
                if prev == Status::NoData {
                    Status::NoData
                } else {
                    prev
                }
            } else {
                s
            }
        }
        None => {
            st.last_value = None;
            let since = st.last_data_ts.unwrap_or(st.first_seen);
            if rule.notify_no_data && now - since >= rule.no_data_secs {
                Status::NoData
            } else {
                prev
            }
        }
    };
    if next != prev {
        st.status = next;
        let announce = match next {
            Status::Ok => st.notified,
            // Without notify_no_data a group only shows No Data (never announced).
            Status::NoData => rule.notify_no_data && value.is_none(),
            _ => true,
        };
        match next {
            Status::Alert | Status::Warn => st.last_triggered_ts = Some(now),
            Status::Ok => st.last_resolved_ts = Some(now),
            Status::NoData => st.last_nodata_ts = Some(now),
        }
        if !announce {
            st.notified = false;
            return None;
        }
        st.notified = next != Status::Ok;
        st.last_notified_ts = Some(now);
        return Some(MonitorEvent {
            from: prev,
            to: next,
            renotify: false,
            value,
        });
    }
    if let Some(every) = rule.renotify_secs {
        let due = st
            .last_notified_ts
            .is_some_and(|t| every > 0 && now - t >= every);
        if st.notified && due && rule.renotify_statuses.contains(&next) {
            st.last_notified_ts = Some(now);
            return Some(MonitorEvent {
                from: prev,
                to: next,
                renotify: true,
                value,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> MonitorRule {
        MonitorRule {
            op: Op::Gt,
            thresholds: Thresholds {
                critical: 90.0,
                critical_recovery: Some(85.0),
                warning: Some(80.0),
                warning_recovery: Some(75.0),
            },
            notify_no_data: true,
            no_data_secs: 120,
            renotify_secs: Some(600),
            renotify_statuses: vec![Status::Alert, Status::NoData],
            new_group_delay_secs: 0,
        }
    }

    fn run(r: &MonitorRule, st: &mut GroupState, v: Option<f64>, t: i64) -> Option<String> {
        step(r, st, v, t).map(|e| e.transition().to_owned())
    }

    #[test]
    fn alert_warn_ok_with_recovery_thresholds() {
        let r = rule();
        let mut st = GroupState::new(0);
        assert_eq!(
            run(&r, &mut st, Some(50.0), 10),
            None,
            "No Data -> OK is silent"
        );
        assert_eq!(st.status, Status::Ok);
        assert_eq!(
            run(&r, &mut st, Some(95.0), 20).as_deref(),
            Some("Triggered")
        );
        assert_eq!(
            run(&r, &mut st, Some(88.0), 30),
            None,
            "above critical_recovery"
        );
        assert_eq!(st.status, Status::Alert);
        let e = step(&r, &mut st, Some(83.0), 40).unwrap();
        assert_eq!((e.from, e.to), (Status::Alert, Status::Warn));
        assert!(e.flags().contains(&"is_alert_to_warning".to_owned()));
        assert_eq!(
            run(&r, &mut st, Some(78.0), 50),
            None,
            "above warning_recovery"
        );
        let e = step(&r, &mut st, Some(70.0), 60).unwrap();
        assert_eq!(e.transition(), "Recovered");
        assert_eq!(
            e.flags(),
            ["is_recovery".to_owned(), "is_warning_recovery".to_owned()]
        );
        // Not in Warn any more: 78 is below the warning threshold, stays OK.
        assert_eq!(run(&r, &mut st, Some(78.0), 70), None);
        assert_eq!(st.status, Status::Ok);
        // 86 from OK is only a warning (critical_recovery does not apply).
        assert_eq!(run(&r, &mut st, Some(86.0), 80).as_deref(), Some("Warn"));
    }

    #[test]
    fn no_data_after_timeframe_and_renotify() {
        let r = rule();
        let mut st = GroupState::new(0);
        assert_eq!(
            run(&r, &mut st, Some(95.0), 0).as_deref(),
            Some("Triggered")
        );
        assert_eq!(
            run(&r, &mut st, None, 119),
            None,
            "no data for 119 s < 120 s"
        );
        assert_eq!(st.status, Status::Alert);
        assert_eq!(run(&r, &mut st, None, 120).as_deref(), Some("No Data"));
        assert_eq!(run(&r, &mut st, None, 719), None);
        assert_eq!(run(&r, &mut st, None, 720).as_deref(), Some("Re-No Data"));
        let e = step(&r, &mut st, Some(10.0), 730).unwrap();
        assert_eq!(e.flags()[1], "is_no_data_recovery");
    }

    #[test]
    fn silent_no_data_without_notify_and_new_group_delay() {
        let mut r = rule();
        r.notify_no_data = false;
        r.renotify_secs = None;
        r.new_group_delay_secs = 60;
        let mut st = GroupState::new(0);
        assert_eq!(run(&r, &mut st, Some(95.0), 30), None, "group too new");
        assert_eq!(st.status, Status::NoData);
        assert_eq!(
            run(&r, &mut st, Some(95.0), 60).as_deref(),
            Some("Triggered")
        );
        assert_eq!(run(&r, &mut st, None, 10_000), None);
        assert_eq!(st.status, Status::Alert, "keeps its state without data");
    }

    #[test]
    fn threshold_order_checked() {
        let mut t = rule().thresholds;
        assert!(t.validate(Op::Gt).is_ok());
        t.critical_recovery = Some(95.0);
        let e = t.validate(Op::Gt).unwrap_err();
        assert!(e.contains("Alert threshold (90)"), "{e}");
        assert!(t.validate(Op::Lt).is_err());
        let below = Thresholds {
            critical: 10.0,
            critical_recovery: Some(15.0),
            warning: Some(20.0),
            warning_recovery: None,
        };
        assert!(below.validate(Op::Lt).is_ok());
    }
}
