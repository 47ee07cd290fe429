//! A deliberately vulnerable axum app, one endpoint per OWASP family, protected by
//! `warden-appsec` with the RASP hooks in place. DO NOT deploy: without the layer every
//! endpoint below is exploitable on purpose.
//!
//! ```text
//! WARDEN_APPSEC_ENABLED=true WARDEN_APPSEC_RULES=../shared/waf/datadog-rules-1.18.2.json \
//! WARDEN_APPSEC_MODE=block PORT=8080 cargo run -p warden-appsec --example protected_app
//! ```
//!
//! | endpoint | family | sink |
//! |---|---|---|
//! | `GET /hello?name=` | XSS | reflected into HTML |
//! | `GET /sql?name=` | SQL injection | string-built query on in-memory SQLite (`check_sql`) |
//! | `GET /file?name=` | path traversal | `fs::read` under a data dir (`check_file_open`) |
//! | `GET /fetch?host=` | SSRF | URL built from input (`check_outbound_url`), not fetched |
//! | `GET /shell?msg=` | command injection | `sh -c "echo <msg>"` (`check_shell`) |
//! | `GET /exec?dir=` | command injection | exec `sh -c "ls <dir>"` (`check_exec`) |
//! | `POST /login` | user tracking | form `user`, `password` (`track_login_*`) |
//! | `GET /me` | user denylist | `x-user` header as the authenticated user (`set_user`) |
//! | `GET /users/{id}` | path params | echoes the id |
//! | `GET /gone/{*path}` | response inspection | always 404 (scanner probes are seen on the response) |
//! | `GET /__stats` | test support | how many handler bodies ran |
//! | `GET /__reports` | test support | app protection reports since the last call (drained) |
//! | `POST /__flush` | test support | ships queued security spans to the agent now |
//! | anything else | fallback | counts and answers 200 |

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{ConnectInfo, Extension, Form, MatchedPath, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use warden_appsec::{Appsec, Blocked, Config, EventSink, RequestHandle, RequestReport};

/// Keeps the last reports so `/__reports` can show what app protection saw.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<serde_json::Value>>);

impl EventSink for Recorder {
    fn report(&self, r: RequestReport) {
        let v = json!({
            "method": r.method,
            "uri": r.uri,
            "status": r.status,
            "client_ip": r.client_ip.map(|i| i.to_string()),
            "blocked_by": r.blocked.as_ref().map(|b| b.rule_id.clone()),
            "security_response_id": r.blocked.as_ref().map(|b| b.request_id.clone()),
            "rules": r.events.iter().map(|e| e.rule.id.clone()).collect::<Vec<_>>(),
            "tags": r.tags,
            "traceparent": r.trace.traceparent,
            "datadog_trace_id": r.trace.datadog_trace_id,
        });
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.len() >= 10_000 {
            g.remove(0);
        }
        g.push(v);
    }
}

#[derive(Clone)]
struct App {
    handled: Arc<AtomicU64>,
    data_dir: PathBuf,
    db: Arc<std::sync::Mutex<rusqlite::Connection>>,
}

impl App {
    fn count(&self) {
        self.handled.fetch_add(1, Ordering::SeqCst);
    }
}

/// What handlers return when a hook blocked: the layer replaces it with the blocking response.
struct Refused(Blocked);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        (StatusCode::FORBIDDEN, format!("blocked: {}\n", self.0)).into_response()
    }
}

impl From<Blocked> for Refused {
    fn from(b: Blocked) -> Self {
        Refused(b)
    }
}

type Q = Query<std::collections::HashMap<String, String>>;

fn param(q: &Q, k: &str) -> String {
    q.0.get(k).cloned().unwrap_or_default()
}

async fn hello(State(app): State<App>, q: Q) -> Html<String> {
    app.count();
    Html(format!(
        "<html><body><p>Hello {}</p></body></html>",
        param(&q, "name")
    ))
}

async fn sql(
    State(app): State<App>,
    Extension(h): Extension<RequestHandle>,
    q: Q,
) -> Result<String, Refused> {
    app.count();
    let stmt = format!(
        "SELECT id, name FROM users WHERE name = '{}'",
        param(&q, "name")
    );
    h.check_sql(&stmt, "sqlite")?;
    let db = app.db.lock().unwrap_or_else(|p| p.into_inner());
    let rows: Result<Vec<String>, rusqlite::Error> = db.prepare(&stmt).and_then(|mut s| {
        s.query_map([], |r| {
            Ok(format!(
                "{}:{}",
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?
            ))
        })?
        .collect()
    });
    Ok(match rows {
        Ok(r) => format!("{}\n", r.join(",")),
        Err(e) => format!("sql error: {e}\n"),
    })
}

async fn file(
    State(app): State<App>,
    Extension(h): Extension<RequestHandle>,
    q: Q,
) -> Result<String, Refused> {
    app.count();
    let path = format!("{}/{}", app.data_dir.display(), param(&q, "name"));
    h.check_file_open(&path)?;
    Ok(std::fs::read_to_string(&path).unwrap_or_else(|e| format!("cannot read: {e}\n")))
}

async fn fetch(
    State(app): State<App>,
    Extension(h): Extension<RequestHandle>,
    q: Q,
) -> Result<String, Refused> {
    app.count();
    let url = format!("http://{}/api/status", param(&q, "host"));
    h.check_outbound_url(&url)?;
    Ok(format!("would fetch {url}\n"))
}

async fn shell(
    State(app): State<App>,
    Extension(h): Extension<RequestHandle>,
    q: Q,
) -> Result<String, Refused> {
    app.count();
    let cmd = format!("echo {}", param(&q, "msg"));
    h.check_shell(&cmd)?;
    run(&["sh", "-c", &cmd]).await
}

async fn exec(
    State(app): State<App>,
    Extension(h): Extension<RequestHandle>,
    q: Q,
) -> Result<String, Refused> {
    app.count();
    let cmd = format!("ls {}", param(&q, "dir"));
    let argv = ["sh", "-c", cmd.as_str()];
    h.check_exec(&argv)?;
    run(&argv).await
}

async fn run(argv: &[&str]) -> Result<String, Refused> {
    let out = tokio::process::Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .await;
    Ok(match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => format!("cannot run: {e}\n"),
    })
}

async fn login(
    State(app): State<App>,
    Extension(h): Extension<RequestHandle>,
    Form(f): Form<std::collections::HashMap<String, String>>,
) -> Result<Response, Refused> {
    app.count();
    let user = f.get("user").cloned().unwrap_or_default();
    let ok = f.get("password").map(String::as_str) == Some("correct horse");
    if ok {
        h.track_login_success(&user, &[("method", "password")])?;
        Ok((StatusCode::OK, format!("welcome {user}\n")).into_response())
    } else {
        h.track_login_failure(&user, user == "alice", &[("method", "password")])?;
        Ok((StatusCode::UNAUTHORIZED, "bad credentials\n").into_response())
    }
}

async fn me(
    State(app): State<App>,
    Extension(h): Extension<RequestHandle>,
    headers: HeaderMap,
) -> Result<String, Refused> {
    app.count();
    let user = headers
        .get("x-user")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("anonymous")
        .to_string();
    h.set_user(&user, Some("sess-1"))?;
    Ok(format!("you are {user}\n"))
}

async fn user(State(app): State<App>, Path(id): Path<String>) -> String {
    app.count();
    format!("user {id}\n")
}

async fn gone(State(app): State<App>) -> (StatusCode, &'static str) {
    app.count();
    (StatusCode::NOT_FOUND, "not found\n")
}

async fn stats(State(app): State<App>) -> axum::Json<serde_json::Value> {
    axum::Json(json!({ "handled": app.handled.load(Ordering::SeqCst) }))
}

async fn reports(State(rec): State<Arc<Recorder>>) -> axum::Json<serde_json::Value> {
    let mut g = rec.0.lock().unwrap_or_else(|p| p.into_inner());
    axum::Json(serde_json::Value::Array(std::mem::take(&mut *g)))
}

async fn flush(State(appsec): State<Appsec>) -> axum::Json<serde_json::Value> {
    let ok = tokio::task::spawn_blocking(move || {
        appsec.flush_traces(std::time::Duration::from_secs(10))
    })
    .await
    .unwrap_or(false);
    axum::Json(json!({ "flushed": ok }))
}

async fn fallback(State(app): State<App>) -> &'static str {
    app.count();
    "handled\n"
}

fn main() -> std::process::ExitCode {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("protected_app: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("protected_app: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve() -> Result<(), Box<dyn std::error::Error>> {
    let cfg = Config::from_env()?;
    let recorder = Arc::new(Recorder::default());
    // Reports go to the agent as trace spans (the default sink, unless
    // WARDEN_APPSEC_TRACE=false) and to the recorder behind `/__reports`.
    let appsec = Appsec::builder(cfg)
        .add_event_sink(recorder.clone())
        .route_template(|ext| ext.get::<MatchedPath>().map(|m| m.as_str().to_string()))
        .peer_addr(|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()))
        .build()?;
    eprintln!("protected_app: appsec {appsec:?}");

    let data_dir = std::env::temp_dir().join(format!("protected_app-{}", std::process::id()));
    std::fs::create_dir_all(&data_dir)?;
    std::fs::write(
        data_dir.join("welcome.txt"),
        "welcome to the protected app\n",
    )?;
    let db = rusqlite::Connection::open_in_memory()?;
    db.execute_batch(
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);
         INSERT INTO users (name) VALUES ('alice'), ('bob'), ('carol');",
    )?;
    let app = App {
        handled: Arc::new(AtomicU64::new(0)),
        data_dir,
        db: Arc::new(std::sync::Mutex::new(db)),
    };

    let router = Router::new()
        .route("/hello", get(hello))
        .route("/sql", get(sql))
        .route("/file", get(file))
        .route("/fetch", get(fetch))
        .route("/shell", get(shell))
        .route("/exec", get(exec))
        .route("/login", post(login))
        .route("/me", get(me))
        .route("/users/{id}", get(user))
        .route("/gone/{*path}", get(gone))
        .fallback(fallback)
        .layer(appsec.layer())
        // Added after the layer: not protected, so reading it never changes what it counts.
        .route("/__stats", get(stats))
        .with_state(app)
        .route("/__reports", get(reports).with_state(recorder))
        .route("/__flush", post(flush).with_state(appsec.clone()));

    let port: u16 = std::env::var("PORT")
        .ok()
        .map(|p| p.parse())
        .transpose()
        .map_err(|e| format!("PORT: {e}"))?
        .unwrap_or(8080);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
