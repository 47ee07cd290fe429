//! The agent's browser GUI: status, checks (with "run now"), recent log lines — server-rendered
//! HTML on the loopback address, off by default (`gui_port: -1`).
//!
//! How a browser gets in: `warden agent gui` asks the token-protected local API for a
//! **single-use intent token** (32 random bytes, hex, valid 2 minutes) and opens
//! `https://127.0.0.1:<gui_port>/auth?intent=<t>`. The GUI consumes the intent (a second use is
//! refused) and sets a session cookie `__Host-warden_session` (random id, `HttpOnly`,
//! `Secure`, `SameSite=Strict`, `Path=/`, one hour). So only someone who can read the
//! `auth_token` file can open a session, and the session id never appears in a URL.
//!
//! Why more than the Datadog GUI does (`specs/agent.md` §8 — cookie plus loopback only): a
//! page on any web site can make the browser POST to `127.0.0.1`. Every state-changing request
//! here needs, besides the cookie, a per-session **CSRF token** from a hidden form field
//! (compared in constant time), and is refused when `Sec-Fetch-Site` or `Origin` shows it came
//! from another origin. Responses carry `Cache-Control: no-store` and a strict CSP (no script
//! at all; the pages need none), and the `Host` header must be a loopback name (DNS rebinding).

use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::api::http::{self, Resp};
use crate::api::token::{ct_eq, random_hex};
use crate::api::{AgentView, check_output_json};
use crate::checks::{check_names, run_once};

/// How long a sign-in link stays valid.
const INTENT_TTL: Duration = Duration::from_secs(120);
/// How long a session lasts.
const SESSION_TTL: Duration = Duration::from_secs(3600);
/// Outstanding intents / live sessions kept; the oldest is dropped beyond this.
const MAX_INTENTS: usize = 16;
const MAX_SESSIONS: usize = 16;
/// Session cookie name; `__Host-` makes the browser insist on Secure, Path=/ and no Domain.
const COOKIE: &str = "__Host-warden_session";
/// Log lines shown on the logs page.
const LOG_LINES: usize = 300;

const CSP: &str = "default-src 'none'; style-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}\
nav a,nav form{margin-right:1em;display:inline}table{border-collapse:collapse}\
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}\
pre{background:#f4f4f4;padding:1em;overflow:auto;font-size:.85em}\
.OK{color:#070}.WARNING{color:#a60}.CRITICAL{color:#c00}.UNKNOWN{color:#666}";

struct Session {
    id: Zeroizing<String>,
    csrf: Zeroizing<String>,
    expires: Instant,
}

#[derive(Default)]
struct Auth {
    intents: Vec<(Zeroizing<String>, Instant)>,
    sessions: Vec<Session>,
}

/// GUI state shared between the GUI server and the API's intent endpoint.
pub(crate) struct GuiState {
    origin: String,
    port: u16,
    view: AgentView,
    auth: Mutex<Auth>,
}

impl GuiState {
    pub(crate) fn new(addr: SocketAddr, view: AgentView) -> Self {
        Self {
            origin: format!("https://{addr}"),
            port: addr.port(),
            view,
            auth: Mutex::new(Auth::default()),
        }
    }

    fn auth(&self) -> std::sync::MutexGuard<'_, Auth> {
        self.auth.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new single-use sign-in URL.
    pub(crate) fn new_intent(&self) -> std::io::Result<String> {
        let t = Zeroizing::new(random_hex::<32>()?);
        let url = format!("{}/auth?intent={}", self.origin, t.as_str());
        let mut a = self.auth();
        let now = Instant::now();
        a.intents.retain(|(_, exp)| *exp > now);
        if a.intents.len() >= MAX_INTENTS {
            a.intents.remove(0);
        }
        a.intents.push((t, now + INTENT_TTL));
        Ok(url)
    }

    /// Removes a valid intent and opens a session: `(session id, csrf)`.
    fn redeem(&self, presented: &str) -> Option<Zeroizing<String>> {
        let mut a = self.auth();
        let now = Instant::now();
        a.intents.retain(|(_, exp)| *exp > now);
        // Compare against every intent so timing does not reveal which (if any) matched.
        let mut hit = None;
        for (i, (t, _)) in a.intents.iter().enumerate() {
            if ct_eq(t.as_bytes(), presented.as_bytes()) {
                hit = Some(i);
            }
        }
        a.intents.remove(hit?);
        let (Ok(id), Ok(csrf)) = (random_hex::<32>(), random_hex::<32>()) else {
            return None;
        };
        a.sessions.retain(|s| s.expires > now);
        if a.sessions.len() >= MAX_SESSIONS {
            a.sessions.remove(0);
        }
        let id = Zeroizing::new(id);
        a.sessions.push(Session {
            id: id.clone(),
            csrf: Zeroizing::new(csrf),
            expires: now + SESSION_TTL,
        });
        Some(id)
    }

    /// The CSRF token of the request's live session, if it has one.
    fn session(&self, req: &Request<Incoming>) -> Option<Zeroizing<String>> {
        let id = cookie(req, COOKIE)?;
        let now = Instant::now();
        let mut a = self.auth();
        a.sessions.retain(|s| s.expires > now);
        let mut csrf = None;
        for s in &a.sessions {
            if ct_eq(s.id.as_bytes(), id.as_bytes()) {
                csrf = Some(s.csrf.clone());
            }
        }
        csrf
    }

    pub(crate) async fn handle(&self, req: Request<Incoming>) -> Resp {
        let mut r = self.route(req).await;
        http::harden(&mut r);
        r.headers_mut().insert(
            HeaderName::from_static("content-security-policy"),
            HeaderValue::from_static(CSP),
        );
        // Not `no-referrer`: under it browsers send `Origin: null` even on same-origin form
        // POSTs, which the origin check must refuse. `same-origin` still never sends a
        // referrer to other sites.
        r.headers_mut().insert(
            hyper::header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
        r
    }

    async fn route(&self, req: Request<Incoming>) -> Resp {
        if !http::host_is_local(&req, self.port) {
            return http::text(StatusCode::MISDIRECTED_REQUEST, "unexpected Host header\n");
        }
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        match (method, path.as_str()) {
            (Method::GET, "/style.css") => http::response(StatusCode::OK, "text/css", CSS),
            (Method::GET, "/auth") => self.sign_in(&req),
            (Method::GET, "/" | "/checks" | "/logs") => {
                let Some(csrf) = self.session(&req) else {
                    return not_signed_in();
                };
                let body = match path.as_str() {
                    "/" => self.status_page(),
                    "/checks" => self.checks_page(&csrf),
                    _ => self.logs_page(),
                };
                html(StatusCode::OK, &layout(&path, &csrf, &body))
            }
            (Method::POST, "/checks/run" | "/logout") => self.post(req, &path).await,
            (Method::GET | Method::POST, _) => html(
                StatusCode::NOT_FOUND,
                &layout_public("Not found", "<p>No such page.</p>"),
            ),
            _ => http::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
        }
    }

    fn sign_in(&self, req: &Request<Incoming>) -> Resp {
        let intent = req
            .uri()
            .query()
            .and_then(|q| form_field(q.as_bytes(), "intent"))
            .unwrap_or_default();
        let Some(id) = self.redeem(&intent) else {
            tracing::warn!("GUI sign-in refused: unknown, expired or already used intent token");
            return html(
                StatusCode::FORBIDDEN,
                &layout_public(
                    "Sign-in link refused",
                    "<p>This sign-in link is invalid, expired or was already used. \
                     Run <code>warden agent gui</code> for a new one.</p>",
                ),
            );
        };
        tracing::info!("GUI session opened");
        let mut r = http::text(StatusCode::SEE_OTHER, "signed in\n");
        let cookie = format!(
            "{COOKIE}={}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
            id.as_str(),
            SESSION_TTL.as_secs()
        );
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            r.headers_mut().insert(hyper::header::SET_COOKIE, v);
        }
        r.headers_mut()
            .insert(hyper::header::LOCATION, HeaderValue::from_static("/"));
        r
    }

    /// State-changing requests: same-origin only, a live session, and its CSRF token.
    async fn post(&self, req: Request<Incoming>, path: &str) -> Resp {
        let h = req.headers();
        let header = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        if let Some(site) = header("sec-fetch-site").filter(|s| s != "same-origin") {
            tracing::warn!(%site, "GUI refused a cross-site POST");
            return forbidden("cross-site request refused");
        }
        if let Some(origin) = header("origin").filter(|o| *o != self.origin) {
            tracing::warn!(%origin, "GUI refused a POST from another origin");
            return forbidden("request from another origin refused");
        }
        let Some(csrf) = self.session(&req) else {
            return not_signed_in();
        };
        let body = match http::read_body(req.into_body()).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let presented = form_field(&body, "csrf_token").unwrap_or_default();
        if !ct_eq(csrf.as_bytes(), presented.as_bytes()) {
            tracing::warn!("GUI refused a POST without a valid CSRF token");
            return forbidden("missing or invalid CSRF token");
        }
        if path == "/logout" {
            // The CSRF token is unique to the session, so it identifies the one to close.
            self.auth()
                .sessions
                .retain(|s| !ct_eq(s.csrf.as_bytes(), csrf.as_bytes()));
            let mut r = html(
                StatusCode::OK,
                &layout_public("Signed out", "<p>Signed out.</p>"),
            );
            if let Ok(v) = HeaderValue::from_str(&format!(
                "{COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"
            )) {
                r.headers_mut().insert(hyper::header::SET_COOKIE, v);
            }
            return r;
        }
        let name = form_field(&body, "check").unwrap_or_default();
        let cfg = &self.view.cfg;
        let body = match run_once(cfg, &name).await {
            Ok(out) => {
                // A manual run is a real run: it updates what status shows.
                self.view.registry.record(&out);
                tracing::info!(check = %out.name, status = ?out.status, "check run from the GUI");
                let v = check_output_json(&self.view.scrubber, &out);
                format!(
                    "<h2>Ran check <code>{}</code></h2>{}<h3>Output</h3><pre>{}</pre>\
                     <p><a href=\"/checks\">Back to checks</a></p>",
                    esc(&name),
                    status_badge(v.get("status")),
                    esc(&serde_json::to_string_pretty(&v).unwrap_or_default())
                )
            }
            Err(e) => format!(
                "<h2>Cannot run check</h2><p>{}</p><p><a href=\"/checks\">Back</a></p>",
                esc(&self.view.scrubber.scrub_text(&e.to_string()))
            ),
        };
        html(StatusCode::OK, &layout("/checks", &csrf, &body))
    }

    fn status_page(&self) -> String {
        let s = crate::api::status(&self.view);
        let mut out = String::from("<h2>Agent status</h2><table>");
        for k in [
            "version",
            "hostname",
            "pid",
            "uptime_seconds",
            "server_url",
            "check_errors",
        ] {
            out.push_str(&format!(
                "<tr><th>{}</th><td>{}</td></tr>",
                esc(k),
                esc(&plain(s.get(k)))
            ));
        }
        out.push_str("</table>");
        for (title, key) in [("Forwarder", "forwarder"), ("DogStatsD", "dogstatsd")] {
            out.push_str(&format!("<h3>{title}</h3><table>"));
            if let Some(Value::Object(m)) = s.get(key) {
                for (k, v) in m {
                    out.push_str(&format!(
                        "<tr><th>{}</th><td>{}</td></tr>",
                        esc(k),
                        esc(&plain(Some(v)))
                    ));
                }
            }
            out.push_str("</table>");
        }
        out.push_str("<h3>Checks</h3>");
        out.push_str(&checks_table(&s, None));
        out
    }

    fn checks_page(&self, csrf: &str) -> String {
        let s = crate::api::status(&self.view);
        let names = check_names(&self.view.cfg);
        let mut out = String::from("<h2>Checks</h2>");
        if let Err(e) = names {
            out.push_str(&format!(
                "<p>{}</p>",
                esc(&self.view.scrubber.scrub_text(&e.to_string()))
            ));
        }
        out.push_str(&checks_table(&s, Some(csrf)));
        out
    }

    fn logs_page(&self) -> String {
        let lines = self.view.logs.tail(LOG_LINES).join("\n");
        let lines = self.view.scrubber.scrub_text(&lines);
        format!(
            "<h2>Recent log lines</h2><p>Last {LOG_LINES} lines, newest last.</p><pre>{}</pre>",
            esc(&lines)
        )
    }
}

fn checks_table(status: &Value, run_form_csrf: Option<&str>) -> String {
    let mut out = String::from(
        "<table><tr><th>check</th><th>kind</th><th>status</th><th>message</th>\
         <th>error</th><th>runs</th><th>errors</th>",
    );
    if run_form_csrf.is_some() {
        out.push_str("<th></th>");
    }
    out.push_str("</tr>");
    let empty = Vec::new();
    let rows = status
        .get("checks")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    for c in rows {
        let name = plain(c.get("name"));
        out.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            esc(&name),
            esc(&plain(c.get("kind"))),
            status_badge(c.get("status")),
            esc(&plain(c.get("message"))),
            esc(&plain(c.get("error"))),
            esc(&plain(c.get("runs"))),
            esc(&plain(c.get("errors"))),
        ));
        if let Some(csrf) = run_form_csrf {
            out.push_str(&format!(
                "<td><form method=\"post\" action=\"/checks/run\">\
                 <input type=\"hidden\" name=\"csrf_token\" value=\"{}\">\
                 <input type=\"hidden\" name=\"check\" value=\"{}\">\
                 <button type=\"submit\">Run now</button></form></td>",
                esc(csrf),
                esc(&name)
            ));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    if rows.is_empty() {
        out.push_str("<p>No checks are configured.</p>");
    }
    out
}

fn status_badge(v: Option<&Value>) -> String {
    let s = plain(v);
    let class = match s.as_str() {
        "OK" | "WARNING" | "CRITICAL" | "UNKNOWN" => s.as_str(),
        _ => "",
    };
    format!("<span class=\"{class}\">{}</span>", esc(&s))
}

/// A JSON value as display text (strings without quotes, null as empty).
fn plain(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

fn layout(path: &str, csrf: &str, body: &str) -> String {
    let link = |href: &str, label: &str| {
        if href == path {
            format!("<strong>{label}</strong>")
        } else {
            format!("<a href=\"{href}\">{label}</a>")
        }
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Warden Agent</title><link rel=\"stylesheet\" href=\"/style.css\"></head><body>\
         <nav>{} {} {} <form method=\"post\" action=\"/logout\">\
         <input type=\"hidden\" name=\"csrf_token\" value=\"{}\">\
         <button type=\"submit\">Sign out</button></form></nav>{body}</body></html>",
        link("/", "Status"),
        link("/checks", "Checks"),
        link("/logs", "Logs"),
        esc(csrf)
    )
}

fn layout_public(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Warden Agent</title><link rel=\"stylesheet\" href=\"/style.css\"></head><body>\
         <h2>{}</h2>{body}</body></html>",
        esc(title)
    )
}

fn html(status: StatusCode, body: &str) -> Resp {
    http::response(status, "text/html; charset=utf-8", body.to_owned())
}

fn not_signed_in() -> Resp {
    html(
        StatusCode::UNAUTHORIZED,
        &layout_public(
            "Not signed in",
            "<p>Run <code>warden agent gui</code> on the agent's host to get a sign-in link.</p>",
        ),
    )
}

fn forbidden(why: &str) -> Resp {
    html(
        StatusCode::FORBIDDEN,
        &layout_public("Forbidden", &format!("<p>{}</p>", esc(why))),
    )
}

/// HTML-escapes text for element content and quoted attributes.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// The value of a cookie.
fn cookie(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get_all(hyper::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// A field of an `application/x-www-form-urlencoded` body or query string.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    body.split(|&b| b == b'&').find_map(|kv| {
        let (k, v) = match kv.iter().position(|&b| b == b'=') {
            Some(i) => (&kv[..i], &kv[i + 1..]),
            None => (kv, &[][..]),
        };
        if url_decode(k)? == name {
            url_decode(v)
        } else {
            None
        }
    })
}

fn url_decode(s: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(s.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_and_escaping() {
        assert_eq!(
            form_field(b"a=1&csrf_token=x%2By+z&check=my%20check", "csrf_token").as_deref(),
            Some("x+y z")
        );
        assert_eq!(
            form_field(b"check=my%20check", "check").as_deref(),
            Some("my check")
        );
        assert_eq!(form_field(b"check=%zz", "check"), None);
        assert_eq!(form_field(b"x=1", "check"), None);
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
