//! Escalation policies: ordered steps, each with targets and a delay; a triggered alert that
//! nobody acknowledges within a step's delay moves to the next step; after the last step the
//! policy starts over `repeat` more times (PagerDuty's `num_loops`).
//!
//! Why a separate state value with `next_at`: the server keeps one [`Escalation`] per open
//! alert in SQLite and a ticker asks [`Escalation::due`] with the current time, so a restart
//! resumes exactly where it was and tests can drive time by hand.

use serde::{Deserialize, Serialize};

/// One step: who is told, and how long to wait for an acknowledgement before the next step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub delay_secs: i64,
    /// Handles (`@slack-oncall`, `@pagerduty-Infra`, `@webhook-phone`).
    pub targets: Vec<String>,
}

/// An escalation policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub name: String,
    pub steps: Vec<Step>,
    /// How many times the whole policy runs again after its last step.
    pub repeat: u32,
}

/// Most steps and repeats (Datadog On-Call's limits: 10 steps, 10 retries).
pub const MAX_STEPS: usize = 10;
pub const MAX_REPEAT: u32 = 10;

impl Policy {
    /// Checks limits, naming the offending step.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("policy name must not be empty".into());
        }
        if self.steps.is_empty() || self.steps.len() > MAX_STEPS {
            return Err(format!("steps must have 1 to {MAX_STEPS} entries"));
        }
        if self.repeat > MAX_REPEAT {
            return Err(format!("repeat must be 0 to {MAX_REPEAT}"));
        }
        for (i, s) in self.steps.iter().enumerate() {
            if s.delay_secs < 1 || s.delay_secs > 86_400 {
                return Err(format!(
                    "steps[{i}]: delay must be 1 s to 24 h, got {} s",
                    s.delay_secs
                ));
            }
            if s.targets.is_empty() {
                return Err(format!("steps[{i}]: targets must not be empty"));
            }
        }
        Ok(())
    }
}

/// Where one alert is in its policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Escalation {
    /// Index of the step whose targets were notified last.
    pub step: usize,
    /// Completed passes through the policy.
    pub loops: u32,
    /// When to move on (None: finished or stopped).
    pub next_at: Option<i64>,
}

impl Escalation {
    /// Starts at step 0 at `now`; returns the state and step 0's targets.
    pub fn start(policy: &Policy, now: i64) -> (Escalation, Vec<String>) {
        let first = policy.steps.first();
        (
            Escalation {
                step: 0,
                loops: 0,
                next_at: first.map(|s| now + s.delay_secs),
            },
            first.map(|s| s.targets.clone()).unwrap_or_default(),
        )
    }

    /// Stops escalating (acknowledged or resolved).
    pub fn stop(&mut self) {
        self.next_at = None;
    }

    pub fn active(&self) -> bool {
        self.next_at.is_some()
    }

    /// If the current step's delay has passed at `now`, moves to the next step (or the next
    /// loop) and returns its index and targets; returns None when nothing is due or the policy
    /// is exhausted.
    pub fn due(&mut self, policy: &Policy, now: i64) -> Option<(usize, Vec<String>)> {
        let at = self.next_at?;
        if now < at {
            return None;
        }
        let mut next = self.step + 1;
        if next >= policy.steps.len() {
            if self.loops >= policy.repeat {
                self.next_at = None;
                return None;
            }
            self.loops += 1;
            next = 0;
        }
        let Some(s) = policy.steps.get(next) else {
            self.next_at = None;
            return None;
        };
        self.step = next;
        // From the due time, not from `now`: a late tick does not stretch the schedule.
        self.next_at = Some(at.max(now - s.delay_secs) + s.delay_secs);
        Some((next, s.targets.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(repeat: u32) -> Policy {
        Policy {
            name: "primary".into(),
            steps: vec![
                Step {
                    delay_secs: 300,
                    targets: vec!["@slack-l1".into()],
                },
                Step {
                    delay_secs: 600,
                    targets: vec!["@pagerduty-l2".into()],
                },
            ],
            repeat,
        }
    }

    #[test]
    fn escalates_then_loops_then_stops() {
        let p = policy(1);
        let (mut e, t) = Escalation::start(&p, 1000);
        assert_eq!(t, ["@slack-l1"]);
        assert_eq!(e.due(&p, 1299), None);
        assert_eq!(e.due(&p, 1300), Some((1, vec!["@pagerduty-l2".into()])));
        assert_eq!(e.due(&p, 1899), None);
        assert_eq!(e.due(&p, 1900), Some((0, vec!["@slack-l1".into()])));
        assert_eq!(e.due(&p, 2200), Some((1, vec!["@pagerduty-l2".into()])));
        assert_eq!(e.due(&p, 2800), None, "repeat exhausted");
        assert!(!e.active());
    }

    #[test]
    fn ack_stops() {
        let p = policy(3);
        let (mut e, _) = Escalation::start(&p, 0);
        e.stop();
        assert_eq!(e.due(&p, 10_000), None);
    }

    #[test]
    fn validation_names_the_step() {
        let mut p = policy(0);
        assert!(p.validate().is_ok());
        p.steps[1].delay_secs = 0;
        assert!(p.validate().unwrap_err().starts_with("steps[1]"));
        p.steps.clear();
        assert!(p.validate().is_err());
    }
}
