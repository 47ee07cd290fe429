//! The engine thread: drains the event queue, runs each org's rules, persists the changed
//! signals in one transaction per batch, then notifies and runs rule actions.
//!
//! Why new and escalated signals are written at once but absorbed events are coalesced: a
//! signal under attack absorbs hundreds of events a second, and rewriting (serializing and
//! sealing) it for each would make persistence, not detection, the bottleneck. A signal that
//! only absorbed events is written at most every [`COALESCE`]; one that appears or escalates
//! is written (and notified) in the same batch.
//!
//! Why one thread and a queue: `ingest` is called from the trace intake's request path and
//! must never wait on rule evaluation or SQLite; the engine is single-threaded state anyway
//! (windows per group), and at the rates Warden targets (thousands of events per second) one
//! core is plenty. Effects happen only after the signal is durable, so a notification never
//! names a signal the API cannot show.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use warden_detection::{Engine, Signal, SignalUpdate, UpdateKind};

use super::{Effects, Msg, Shared};

/// Longest a live signal can last (the largest `maxSignalDuration`): how far back a restart
/// looks for signals to re-adopt.
const MAX_SIGNAL_MS: i64 = 86_400_000;
/// Events processed before the batch is persisted even if the queue is not empty.
const MAX_BATCH_EVENTS: usize = 20_000;
/// Longest an absorbed-events-only update waits before it is written.
const COALESCE: Duration = Duration::from_millis(250);
/// Pending coalesced signals that force a write.
const MAX_PENDING: usize = 10_000;

/// Signals with absorbed events not yet written: latest snapshot, first event's queue time.
type Pending = HashMap<(u64, String), (Arc<Signal>, Instant)>;

pub(crate) fn run(
    shared: Arc<Shared>,
    rx: Receiver<Msg>,
    effects: Arc<Mutex<Option<Arc<dyn Effects>>>>,
) {
    let mut engines: HashMap<u64, Engine> = HashMap::new();
    let mut last_tick = Instant::now();
    let mut pending: Pending = HashMap::new();
    loop {
        let first = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut msgs = Vec::new();
        let mut n_events = 0usize;
        if let Some(m) = first {
            if let Msg::Events { events, .. } = &m {
                n_events += events.len();
            }
            msgs.push(m);
            while n_events < MAX_BATCH_EVENTS {
                match rx.try_recv() {
                    Ok(m) => {
                        if let Msg::Events { events, .. } = &m {
                            n_events += events.len();
                        }
                        msgs.push(m);
                    }
                    Err(_) => break,
                }
            }
        }
        let mut updates: Vec<(u64, SignalUpdate, Instant)> = Vec::new();
        let mut syncs = Vec::new();
        for m in msgs {
            match m {
                Msg::Events { org, events, at } => {
                    let eng = engine_for(&shared, &mut engines, org);
                    let mut out = Vec::new();
                    for e in &events {
                        eng.process(e, &mut out);
                    }
                    let n = events.len() as u64;
                    shared.stats.with(org, |s| s.events_evaluated += n);
                    updates.extend(out.into_iter().map(|u| (org, u, at)));
                }
                Msg::Reload(org) => {
                    if let Some(eng) = engines.get_mut(&org) {
                        match super::load_rules(&shared, org) {
                            Ok(rules) => eng.set_rules(rules),
                            Err(e) => tracing::error!(org, error = %e, "reloading detection rules"),
                        }
                    }
                }
                Msg::Sync(tx) => syncs.push(tx),
            }
        }
        if !updates.is_empty() || !pending.is_empty() {
            persist_and_act(&shared, &effects, updates, &mut pending, !syncs.is_empty());
        }
        for s in syncs {
            let _ = s.send(());
        }
        if last_tick.elapsed() >= Duration::from_secs(5) {
            let now = crate::now_secs() * 1000;
            for eng in engines.values_mut() {
                eng.tick(now);
            }
            last_tick = Instant::now();
        }
    }
}

fn engine_for<'a>(
    shared: &Shared,
    engines: &'a mut HashMap<u64, Engine>,
    org: u64,
) -> &'a mut Engine {
    engines.entry(org).or_insert_with(|| {
        let mut seed = [0u8; 8];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed);
        let mut eng = Engine::new(u64::from_le_bytes(seed));
        match super::load_rules(shared, org) {
            Ok(rules) => eng.set_rules(rules),
            Err(e) => tracing::error!(org, error = %e, "loading detection rules"),
        }
        let now = crate::now_secs() * 1000;
        let recent = shared
            .db
            .lock()
            .map_err(|e| e.to_string())
            .and_then(|db| db.recent(org, now - MAX_SIGNAL_MS));
        match recent {
            Ok(signals) => {
                for s in signals {
                    eng.restore(s, now);
                }
            }
            Err(e) => tracing::error!(org, error = %e, "re-adopting live signals"),
        }
        eng
    })
}

fn persist_and_act(
    shared: &Shared,
    effects: &Mutex<Option<Arc<dyn Effects>>>,
    updates: Vec<(u64, SignalUpdate, Instant)>,
    pending: &mut Pending,
    flush_all: bool,
) {
    // Last snapshot per signal; urgent when it appeared or escalated in this batch.
    // (index of the last update, urgent, queue time of the first event) per signal.
    let mut last: HashMap<(u64, String), (usize, bool, Instant)> = HashMap::new();
    for (i, (org, u, at)) in updates.iter().enumerate() {
        let urgent = matches!(u.kind, UpdateKind::Created | UpdateKind::Escalated);
        let e = last
            .entry((*org, u.signal.id.clone()))
            .or_insert((i, urgent, *at));
        e.0 = i;
        e.1 |= urgent;
        e.2 = e.2.min(*at);
    }
    let now = Instant::now();
    let mut rows: Vec<(u64, Arc<Signal>, Instant, bool)> = Vec::new();
    for ((org, id), (i, urgent, first_at)) in last {
        let u = &updates[i].1;
        if urgent {
            pending.remove(&(org, id));
            rows.push((org, u.signal.clone(), first_at, true));
        } else {
            let e = pending
                .entry((org, id))
                .or_insert_with(|| (u.signal.clone(), first_at));
            e.0 = u.signal.clone();
        }
    }
    let flush_pending = flush_all || pending.len() > MAX_PENDING;
    let due: Vec<(u64, String)> = pending
        .iter()
        .filter(|(_, (_, at))| flush_pending || now.saturating_duration_since(*at) >= COALESCE)
        .map(|(k, _)| k.clone())
        .collect();
    for k in due {
        if let Some((s, at)) = pending.remove(&k) {
            rows.push((k.0, s, at, false));
        }
    }
    if rows.is_empty() {
        return;
    }
    let refs: Vec<(u64, &Signal)> = rows.iter().map(|(o, s, _, _)| (*o, &**s)).collect();
    let res = match shared.db.lock() {
        Ok(mut db) => db.put_signals(&refs),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = res {
        // The signals stay live in the engine; the next event of each rewrites it.
        for (org, _) in &refs {
            shared.stats.with(*org, |s| s.persist_errors += 1);
        }
        tracing::error!(error = %e, n = refs.len(), "persisting signals failed");
        return;
    }
    let done = Instant::now();
    for (org, _, at, urgent) in &rows {
        let us = done.saturating_duration_since(*at).as_micros() as u64;
        shared.stats.with(*org, |s| {
            s.signal_writes += 1;
            let v = if *urgent {
                &mut s.latency_us
            } else {
                &mut s.update_latency_us
            };
            if v.len() < 2_000_000 {
                v.push(us);
            }
        });
    }
    for (org, u, _) in &updates {
        if u.kind == UpdateKind::Created {
            shared.stats.with(*org, |s| s.signals_created += 1);
        }
    }
    let fx = effects.lock().ok().and_then(|g| g.clone());
    let Some(fx) = fx else {
        return;
    };
    for (org, u, _) in &updates {
        if matches!(u.kind, UpdateKind::Created | UpdateKind::Escalated) {
            fx.signal_triggered(*org, &u.signal);
        }
        for a in &u.actions {
            fx.action(*org, &u.signal, a);
        }
    }
}
