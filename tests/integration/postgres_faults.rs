//! PostgreSQL faults, against real servers. A private PostgreSQL cluster crash-restarted
//! (`pg_ctl stop -m immediate`, down ~3 s) under a write and read load on the broker binary: every
//! request that fails is answered promptly with 503 `storage_unavailable` and a `Retry-After` (no
//! 500, no hang), the same broker process serves 2xx again within a bound once the server is back,
//! every acknowledged create reads back with its exact value, and no object is left without its
//! current version. And TLS to the machine's PostgreSQL (`ssl = on`, Debian's self-signed snakeoil
//! certificate) follows libpq's `sslmode`: `require` and `verify-ca` (the certificate as
//! `sslrootcert`) serve over connections the server reports encrypted; `verify-full` refuses to
//! start on a certificate no trusted root signed, and on one that does not name the host.
//!
//! They need PostgreSQL: they run in the PostgreSQL pass (`BYOK_TEST_DATABASE_URL` set), where a
//! missing server or missing server binaries fail them; without it they return at once. `kill -9`
//! of the broker on PostgreSQL is `process_lifecycle.rs`'s test: its brokers run on the backend
//! under test, each data directory on a database of its own that a restart finds again.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use byok_broker::broker::Broker;
use byok_broker::config::Config;
use byok_broker::supervisor::Supervisor;
use futures_util::future::join_all;
use serde_json::{Value, json};

use common::TestDir;
use common::broker::TestBroker;
use common::http_client::HttpClient;
use common::process::{APP_KEY, free_port, spawn_local_broker, temp_dir};

const TEST_DATABASE_URL: &str = "BYOK_TEST_DATABASE_URL";

/// `BYOK_TEST_DATABASE_URL`, or `None` (with one line saying why) when PostgreSQL is not under test.
fn postgres_under_test(test: &str) -> Option<String> {
    match std::env::var(TEST_DATABASE_URL) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!(
                "{test}: not run: it needs PostgreSQL, and {TEST_DATABASE_URL} is unset (scripts/test.sh's PostgreSQL pass sets it)"
            );
            None
        }
    }
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    // The connection does the I/O; it ends when the client is dropped.
    tokio::spawn(connection);
    Ok(client)
}

fn output_text(output: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

// ---------------------------------------------------------------------------------------------
// A private PostgreSQL cluster: the machine's shared server stays untouched (other tests use it).

/// Where Debian installs the server binaries: `<major>/bin/{initdb,pg_ctl}`.
const SERVER_BINARIES: &str = "/usr/lib/postgresql";

/// The newest installed server's `bin` directory; panics if there is none.
fn server_binaries() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(SERVER_BINARIES)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((major, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "{TEST_DATABASE_URL} is set, but no PostgreSQL server binaries were found \
             ({SERVER_BINARIES}/<major>/bin/initdb and pg_ctl): install the postgresql package"
        ),
    }
}

fn running_as_root() -> bool {
    let output = Command::new("id").arg("-u").output().expect("run id -u");
    String::from_utf8_lossy(&output.stdout).trim() == "0"
}

/// A cluster of its own in a temporary directory, on a free port, stopped and removed on drop.
struct PrivateCluster {
    bin: PathBuf,
    /// Owned by the server's user: the data directory, the Unix socket and the server log.
    root: PathBuf,
    port: u16,
    /// initdb and the server refuse to run as root: as root, they run as `postgres`.
    as_postgres: bool,
}

impl PrivateCluster {
    fn start() -> Self {
        let bin = server_binaries();
        let as_postgres = running_as_root();
        let root =
            std::env::temp_dir().join(format!("byok-pgfault-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&root).unwrap();
        // From here on, the drop removes the directory, whatever fails next.
        let mut cluster = Self {
            bin,
            root,
            port: 0,
            as_postgres,
        };
        if as_postgres {
            let chown = Command::new("chown")
                .arg("postgres:postgres")
                .arg(&cluster.root)
                .output()
                .expect("run chown");
            assert!(
                chown.status.success(),
                "cannot give {} to the postgres user (initdb refuses root): {}",
                cluster.root.display(),
                output_text(&chown)
            );
        }
        let data = cluster.data();
        let initdb = cluster
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["--auth=trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync")
            .output()
            .expect("run initdb");
        assert!(initdb.status.success(), "initdb: {}", output_text(&initdb));
        // The port was free a moment ago; another process may take it first.
        let mut failures = Vec::new();
        for _ in 0..3 {
            cluster.port = free_port();
            match cluster.start_server() {
                Ok(()) => return cluster,
                Err(e) => failures.push(e),
            }
        }
        panic!("the private PostgreSQL cluster did not start:\n{failures:#?}");
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.root.join("server.log")
    }

    /// A server binary, run as `postgres` when the tests run as root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut runuser = Command::new("runuser");
            runuser.args(["-u", "postgres", "--"]).arg(path);
            runuser
        } else {
            Command::new(path)
        };
        // `postgres` may not be allowed into the test's working directory.
        command.current_dir(&self.root);
        command
    }

    /// `pg_ctl start`, waiting until it accepts connections. The server logs to a file: with
    /// inherited pipes, reading pg_ctl's output would wait for the server to exit.
    fn start_server(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.root.display()
        );
        let output = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.log_file())
            .args(["-o", &options, "-w", "-t", "60", "start"])
            .output()
            .map_err(|e| format!("cannot run pg_ctl: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "pg_ctl start on port {}: {}\nserver log:\n{}",
                self.port,
                output_text(&output),
                self.log()
            ))
        }
    }

    /// `pg_ctl stop -m immediate`: the server processes quit at once, without a checkpoint, as
    /// in a crash; the next start runs crash recovery.
    fn stop_immediately(&self) -> Result<(), String> {
        let output = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output()
            .map_err(|e| format!("cannot run pg_ctl: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!("pg_ctl stop: {}", output_text(&output)))
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        if self.data().join("postmaster.pid").exists() {
            let _ = self.stop_immediately();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

// ---------------------------------------------------------------------------------------------
// The restart under load.

/// How long a request may take before it counts as hung.
const REQUEST_BOUND: Duration = Duration::from_secs(10);
/// Load before the crash, so acknowledged writes exist on both sides of it.
const WARM_UP: Duration = Duration::from_millis(1500);
/// How long the server stays down.
const DOWN_FOR: Duration = Duration::from_secs(3);
/// From the server accepting connections again to the broker's first acknowledged create.
const RECOVERY_BOUND: Duration = Duration::from_secs(10);
/// Load after the recovery, to see it hold.
const AFTER_RECOVERY: Duration = Duration::from_millis(1500);
const WRITERS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Create,
    Read,
    List,
}

/// One request and its answer.
#[derive(Debug)]
struct Outcome {
    op: Op,
    sent: Instant,
    answered: Instant,
    /// `None`: no answer within `REQUEST_BOUND`, or the connection was cut.
    status: Option<u16>,
    /// The error body's `code`.
    code: Option<String>,
    retry_after: Option<String>,
    /// What went wrong on the way (no answer, a read of the wrong value).
    problem: Option<String>,
    /// A create's object name.
    name: Option<String>,
}

impl Outcome {
    fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s)) && self.problem.is_none()
    }

    /// A failure the way a storage outage must look: 503 `storage_unavailable` with `Retry-After`.
    fn is_storage_unavailable(&self) -> bool {
        self.status == Some(503)
            && self.code.as_deref() == Some("storage_unavailable")
            && self.retry_after.is_some()
            && self.problem.is_none()
    }
}

/// An acknowledged create: what must read back.
#[derive(Debug, Clone)]
struct Acknowledged {
    id: String,
    name: String,
    value: String,
}

/// One request with the app key, bounded by `REQUEST_BOUND`; the outcome and the JSON body.
async fn timed_request(
    port: u16,
    op: Op,
    method: &str,
    path: &str,
    body: &str,
) -> (Outcome, Value) {
    let client =
        HttpClient::new(&format!("http://127.0.0.1:{port}"), Some(APP_KEY.into())).expect("client");
    let sent = Instant::now();
    let answer = tokio::time::timeout(
        REQUEST_BOUND,
        client.send(method, path, body.as_bytes(), &[]),
    )
    .await;
    let answered = Instant::now();
    let mut outcome = Outcome {
        op,
        sent,
        answered,
        status: None,
        code: None,
        retry_after: None,
        problem: None,
        name: None,
    };
    let response = match answer {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => {
            outcome.problem = Some(format!("no answer: {e}"));
            return (outcome, Value::Null);
        }
        Err(_) => {
            outcome.problem = Some(format!("no answer within {REQUEST_BOUND:?}"));
            return (outcome, Value::Null);
        }
    };
    let json: Value = serde_json::from_slice(&response.body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&response.body).into_owned()));
    outcome.status = Some(response.status);
    outcome.code = json["code"].as_str().map(str::to_owned);
    outcome.retry_after = response.headers.get("retry-after").cloned();
    (outcome, json)
}

/// Creates objects with unique names and known values until `stop`, reading back one of its
/// acknowledged objects after each create and listing every fourth turn. Every request goes to
/// `log`; returns the acknowledged creates.
async fn writer(
    port: u16,
    w: usize,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Outcome>>>,
) -> Vec<Acknowledged> {
    let record = |outcome: Outcome| {
        let failed = !outcome.succeeded();
        log.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(outcome);
        failed
    };
    let mut acknowledged: Vec<Acknowledged> = Vec::new();
    let mut turn = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let name = format!("w{w}-{turn}");
        let value = format!("value {turn} of writer {w}: {}", uuid::Uuid::new_v4());
        let body = json!({"name": name, "value": value, "key_context": {"organization_id": "org_pgfault"}})
            .to_string();
        let (mut outcome, json) =
            timed_request(port, Op::Create, "POST", "/vault/v1/kv", &body).await;
        outcome.name = Some(name.clone());
        if outcome.succeeded() {
            match json["id"].as_str() {
                Some(id) => acknowledged.push(Acknowledged {
                    id: id.to_owned(),
                    name,
                    value,
                }),
                None => outcome.problem = Some(format!("a create answered without an id: {json}")),
            }
        }
        let mut failed = record(outcome);
        if !acknowledged.is_empty() {
            let object = &acknowledged[turn.wrapping_mul(7) % acknowledged.len()];
            let path = format!("/vault/v1/kv/{}", object.id);
            let (mut outcome, json) = timed_request(port, Op::Read, "GET", &path, "").await;
            if outcome.succeeded() && json["value"].as_str() != Some(object.value.as_str()) {
                outcome.problem = Some(format!("{} read back as {json}", object.name));
            }
            failed |= record(outcome);
        }
        if turn.is_multiple_of(4) {
            let (outcome, _) =
                timed_request(port, Op::List, "GET", "/vault/v1/kv?limit=10", "").await;
            failed |= record(outcome);
        }
        if failed {
            // A client that got a 503 backs off a little (Retry-After asks for a second).
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        turn += 1;
    }
    acknowledged
}

/// When the restart happened, as the controller saw it.
struct Timeline {
    /// `pg_ctl stop -m immediate` was run.
    crash_at: Instant,
    /// It returned: the server is gone.
    down_at: Instant,
    /// `pg_ctl start -w` was run.
    restart_at: Instant,
    /// It returned: the server accepts connections again (after its crash recovery).
    back_at: Instant,
    /// The broker's first acknowledged create sent after `back_at`.
    recovered_at: Option<Instant>,
}

/// Runs a blocking `pg_ctl` call off the runtime's worker threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work)
        .await
        .expect("the blocking call panicked")
}

/// Lets the load warm up, crash-restarts the server, waits for the broker's recovery (or the
/// bound), lets the load run a little longer and stops it.
async fn crash_restart(
    cluster: Arc<PrivateCluster>,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Outcome>>>,
) -> Timeline {
    tokio::time::sleep(WARM_UP).await;
    let crash_at = Instant::now();
    let stopping = Arc::clone(&cluster);
    let stopped = blocking(move || stopping.stop_immediately()).await;
    let down_at = Instant::now();
    if let Err(e) = stopped {
        stop.store(true, Ordering::SeqCst);
        panic!("{e}");
    }
    tokio::time::sleep(DOWN_FOR).await;
    let restart_at = Instant::now();
    let starting = Arc::clone(&cluster);
    let started = blocking(move || starting.start_server()).await;
    let back_at = Instant::now();
    if let Err(e) = started {
        stop.store(true, Ordering::SeqCst);
        panic!("the restart failed: {e}");
    }
    let deadline = back_at + RECOVERY_BOUND;
    let recovered_at = loop {
        let first = log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|o| o.op == Op::Create && o.sent >= back_at && o.succeeded())
            .map(|o| o.answered)
            .min();
        if first.is_some() || Instant::now() > deadline {
            break first;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(AFTER_RECOVERY).await;
    stop.store(true, Ordering::SeqCst);
    Timeline {
        crash_at,
        down_at,
        restart_at,
        back_at,
        recovered_at,
    }
}

fn describe(outcome: &Outcome, start: Instant) -> String {
    format!(
        "{:?} sent at {:?}, answered after {:?}: status {:?}, code {:?}, Retry-After {:?}{}",
        outcome.op,
        outcome.sent - start,
        outcome.answered - outcome.sent,
        outcome.status,
        outcome.code,
        outcome.retry_after,
        outcome
            .problem
            .as_ref()
            .map(|p| format!(", {p}"))
            .unwrap_or_default()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgresql_restarted_under_load_answers_503_then_recovers_and_loses_no_acknowledged_write()
{
    let test = "postgresql_restarted_under_load";
    if postgres_under_test(test).is_none() {
        return;
    }
    let cluster = Arc::new(blocking(PrivateCluster::start).await);
    let url = cluster.url();
    let data_dir = temp_dir("pgfault");
    let broker = spawn_local_broker(
        &data_dir,
        &[
            ("BYOK_BROKER_DATABASE_URL", url.as_str()),
            ("BYOK_BROKER_STORE_CONNECT_TIMEOUT_MS", "1000"),
        ],
        None,
    )
    .await;
    let port = broker.port;

    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::new()));
    let writers =
        (0..WRITERS).map(|w| tokio::spawn(writer(port, w, Arc::clone(&stop), Arc::clone(&log))));
    let writers: Vec<_> = writers.collect();
    let timeline = crash_restart(Arc::clone(&cluster), Arc::clone(&stop), Arc::clone(&log)).await;
    let acknowledged: Vec<Acknowledged> = join_all(writers)
        .await
        .into_iter()
        .flat_map(|writer| writer.expect("a writer panicked"))
        .collect();
    let outcomes = std::mem::take(&mut *log.lock().unwrap_or_else(PoisonError::into_inner));

    // The figures.
    let unavailable: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.is_storage_unavailable())
        .collect();
    let wrong: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| !o.succeeded() && !o.is_storage_unavailable())
        .collect();
    let creates = outcomes.iter().filter(|o| o.op == Op::Create).count();
    let slowest = outcomes
        .iter()
        .map(|o| o.answered - o.sent)
        .max()
        .unwrap_or_default();
    let slowest_503 = unavailable
        .iter()
        .map(|o| o.answered - o.sent)
        .max()
        .unwrap_or_default();
    let first_503 = unavailable.iter().map(|o| o.answered).min();
    let last_503 = unavailable.iter().map(|o| o.answered).max();
    let server_down = timeline.back_at - timeline.down_at;
    let recovery = timeline.recovered_at.map(|at| at - timeline.back_at);
    let acknowledged_before = outcomes
        .iter()
        .filter(|o| o.op == Op::Create && o.succeeded() && o.answered < timeline.down_at)
        .count();
    let acknowledged_after = outcomes
        .iter()
        .filter(|o| o.op == Op::Create && o.succeeded() && o.sent >= timeline.back_at)
        .count();
    let failed_after_recovery: Vec<&Outcome> = match timeline.recovered_at {
        Some(at) => outcomes
            .iter()
            .filter(|o| o.sent >= at && !o.succeeded())
            .collect(),
        None => Vec::new(),
    };
    println!(
        "PostgreSQL crash-restart under load: {} requests ({creates} creates, {} reads, {} lists), \
         {} creates acknowledged ({acknowledged_before} before the crash, {acknowledged_after} sent \
         after the restart), {} answered 503 storage_unavailable (all with Retry-After; slowest \
         {slowest_503:?}), {} other failures; slowest answer {slowest:?}",
        outcomes.len(),
        outcomes.iter().filter(|o| o.op == Op::Read).count(),
        outcomes.iter().filter(|o| o.op == Op::List).count(),
        acknowledged.len(),
        unavailable.len(),
        wrong.len(),
    );
    println!(
        "server down {server_down:?} (stop -m immediate returned → start -w returned; the start \
         itself, with crash recovery, took {:?}); 503s answered from {:?} to {:?} after the crash \
         began; first acknowledged create after the server came back: {recovery:?} later; {} \
         failures among requests sent after that",
        timeline.back_at - timeline.restart_at,
        first_503.map(|at| at.saturating_duration_since(timeline.crash_at)),
        last_503.map(|at| at.saturating_duration_since(timeline.crash_at)),
        failed_after_recovery.len(),
    );

    assert!(
        wrong.is_empty(),
        "every failure must be a prompt 503 storage_unavailable with Retry-After; {} were not, e.g.:\n{}\nbroker stderr:\n{}",
        wrong.len(),
        wrong
            .iter()
            .take(10)
            .map(|o| describe(o, start))
            .collect::<Vec<_>>()
            .join("\n"),
        broker.stderr()
    );
    assert!(
        acknowledged_before > 0,
        "the load made progress before the crash"
    );
    assert!(
        !unavailable.is_empty(),
        "the outage was seen: some requests answered 503"
    );
    let recovery = recovery.unwrap_or_else(|| {
        panic!(
            "the broker acknowledged no create within {RECOVERY_BOUND:?} of the server coming back; broker stderr:\n{}",
            broker.stderr()
        )
    });
    assert!(recovery <= RECOVERY_BOUND, "{recovery:?}");
    assert!(
        failed_after_recovery.is_empty(),
        "once recovered, the broker stays recovered; failed after the recovery:\n{}",
        failed_after_recovery
            .iter()
            .take(10)
            .map(|o| describe(o, start))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Every acknowledged create reads back, with its value, from the broker that lived through
    // the crash.
    let mut lost = Vec::new();
    for chunk in acknowledged.chunks(32) {
        let reads = chunk.iter().map(|object| async move {
            let path = format!("/vault/v1/kv/{}", object.id);
            let (outcome, json) = timed_request(port, Op::Read, "GET", &path, "").await;
            let intact = outcome.status == Some(200)
                && json["value"].as_str() == Some(object.value.as_str());
            (!intact).then(|| format!("{}: {} → {json}", object.name, describe(&outcome, start)))
        });
        lost.extend(join_all(reads).await.into_iter().flatten());
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged creates do not read back, e.g.:\n{}",
        lost.len(),
        acknowledged.len(),
        lost.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );

    // In the database itself (the broker's record cache aside): every acknowledged object is
    // there with its current version, and nothing is half-written.
    let db = connect(&url).await.expect("connect to the private cluster");
    let count = |sql: &'static str| {
        let db = &db;
        async move {
            let row = db
                .query_one(sql, &[])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            row.get::<_, i64>(0)
        }
    };
    let headless = count("SELECT COUNT(*) FROM objects o LEFT JOIN versions v ON v.id = o.current_version WHERE v.id IS NULL").await;
    let orphaned = count("SELECT COUNT(*) FROM versions v LEFT JOIN objects o ON o.id = v.object_id WHERE o.id IS NULL").await;
    let stored: HashMap<String, String> = db
        .query(
            "SELECT o.id, o.name FROM objects o JOIN versions v ON v.id = o.current_version",
            &[],
        )
        .await
        .expect("list the stored objects")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let missing: Vec<&Acknowledged> = acknowledged
        .iter()
        .filter(|a| stored.get(&a.id) != Some(&a.name))
        .collect();
    // A create answered 503 may still have committed, but only one in flight when the server
    // went down (its commit's answer lost with the connection): never one the broker refused
    // while the server was gone, which a retry would then duplicate.
    let acknowledged_names: HashSet<&str> = acknowledged.iter().map(|a| a.name.as_str()).collect();
    let stored_names: HashSet<&str> = stored.values().map(String::as_str).collect();
    let unacknowledged_but_stored: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| {
            o.name.as_deref().is_some_and(|name| {
                stored_names.contains(name) && !acknowledged_names.contains(name)
            })
        })
        .collect();
    let committed_later: Vec<&&Outcome> = unacknowledged_but_stored
        .iter()
        .filter(|o| o.sent >= timeline.down_at)
        .collect();
    let in_flight = unacknowledged_but_stored
        .iter()
        .map(|o| o.sent.saturating_duration_since(timeline.crash_at));
    let in_flight = match (in_flight.clone().min(), in_flight.max()) {
        (Some(first), Some(last)) => {
            format!(" (sent {first:?} to {last:?} after the crash began: in flight when it came)")
        }
        _ => String::new(),
    };
    println!(
        "after the load: {} acknowledged creates all read back with their values; the database \
         holds {} objects: {} committed although answered 503{in_flight}, {headless} without their \
         current version, {orphaned} orphaned versions",
        acknowledged.len(),
        stored.len(),
        unacknowledged_but_stored.len(),
    );
    assert!(
        committed_later.is_empty(),
        "creates refused while the server was down were committed afterwards:\n{}",
        committed_later
            .iter()
            .map(|o| describe(o, start))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        missing.is_empty(),
        "acknowledged creates missing from the database: {:?}",
        missing.iter().take(10).collect::<Vec<_>>()
    );
    assert_eq!((headless, orphaned), (0, 0), "no half-written object");
    drop(broker);
}

// ---------------------------------------------------------------------------------------------
// TLS to the machine's PostgreSQL.

/// A database of its own on the shared server, so the brokers' migrations meet no other test's;
/// dropped (its connections closed) on drop, even when the test fails.
struct ScratchDatabase {
    admin_url: String,
    name: String,
}

impl ScratchDatabase {
    async fn create(admin: &tokio_postgres::Client, admin_url: &str) -> Self {
        let name = format!("byok_tls_{}", uuid::Uuid::new_v4().simple());
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        Self {
            admin_url: admin_url.to_owned(),
            name,
        }
    }

    /// The admin URL on this database, with `query` as its parameters.
    fn url(&self, query: &str) -> String {
        let base = self.admin_url.split('?').next().unwrap_or_default();
        let authority = base.find("://").map(|i| i + 3).expect("a postgres:// URL");
        let path = base[authority..]
            .find('/')
            .map_or(base.len(), |i| authority + i);
        format!("{}/{}?{query}", &base[..path], self.name)
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        // Its own thread and runtime: a drop cannot await, and the test's runtime cannot be
        // blocked on from within. Never panics (a panic while unwinding aborts the run).
        let url = self.admin_url.clone();
        let statement = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let client = connect(&url).await.map_err(|e| e.to_string())?;
                client
                    .batch_execute(&statement)
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!(
                "warning: cannot drop the database {}: {dropped:?}",
                self.name
            );
        }
    }
}

/// The server's setting `name`.
async fn show(admin: &tokio_postgres::Client, name: &str) -> String {
    admin
        .query_one(&format!("SHOW {name}"), &[])
        .await
        .unwrap_or_else(|e| panic!("SHOW {name}: {e}"))
        .get(0)
}

/// Starts an in-process broker (local key provider) on `url`, checks it stores and reads an
/// object, and returns, for each of its connections to `database`, whether the server reports it
/// encrypted and with which protocol.
async fn serves_over(
    admin: &tokio_postgres::Client,
    database: &ScratchDatabase,
    label: &str,
    url: &str,
) -> Vec<(bool, Option<String>)> {
    let broker = TestBroker::start_local_with(
        &format!("tls-{label}"),
        &[("BYOK_BROKER_DATABASE_URL", url)],
    )
    .await;
    let body = json!({"name": "tls", "value": format!("over {label}"), "key_context": {"organization_id": "org_tls"}});
    let created = broker.call("POST", "/vault/v1/kv", Some(&body)).await;
    assert_eq!(created.status, 201, "{label}: {}", created.body);
    let id = created.body["id"].as_str().expect("id");
    let read = broker
        .call("GET", &format!("/vault/v1/kv/{id}"), None)
        .await;
    assert_eq!(read.status, 200, "{label}: {}", read.body);
    assert_eq!(read.body["value"], format!("over {label}").as_str());
    let rows = admin
        .query(
            "SELECT s.ssl, s.version FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'byok-broker' AND a.datname = $1",
            &[&database.name],
        )
        .await
        .expect("pg_stat_ssl");
    broker.shutdown().await;
    rows.iter().map(|row| (row.get(0), row.get(1))).collect()
}

/// Starts a broker (as `serve` does) on `url` and returns why it refused to start, and how long
/// that took.
async fn refused(url: &str) -> (String, Duration) {
    let data_dir = TestDir::new("pg-tls-refused");
    let env: HashMap<&str, String> = [
        ("BYOK_BROKER_KMS", "local".to_owned()),
        ("BYOK_BROKER_LISTEN", "127.0.0.1:0".to_owned()),
        ("BYOK_BROKER_DATA_DIR", data_dir.display().to_string()),
        ("BYOK_BROKER_APP_KEY", APP_KEY.to_owned()),
        (
            "BYOK_BROKER_ADMIN_KEY",
            common::process::ADMIN_KEY.to_owned(),
        ),
        ("BYOK_BROKER_DATABASE_URL", url.to_owned()),
    ]
    .into_iter()
    .collect();
    let config = Config::load(None, |name| env.get(name).cloned()).expect("config");
    let supervisor = Supervisor::new();
    let started = Instant::now();
    let result = Broker::start(config, &supervisor).await;
    let took = started.elapsed();
    supervisor.shutdown(Duration::from_secs(5)).await;
    match result {
        Ok(_) => panic!("the broker started over {url}"),
        Err(e) => (e.to_string(), took),
    }
}

#[tokio::test]
async fn postgresql_tls_follows_libpq_sslmode() {
    let Some(admin_url) = postgres_under_test("postgresql_tls_follows_libpq_sslmode") else {
        return;
    };
    let admin = connect(&admin_url).await.unwrap_or_else(|e| {
        panic!("{TEST_DATABASE_URL} is set, but its PostgreSQL server does not answer: {e}")
    });
    // What the test needs of the server: TLS on, with a self-signed certificate this machine can
    // read (Debian's snakeoil), reached by an IP address the certificate does not name.
    assert_eq!(
        show(&admin, "ssl").await,
        "on",
        "the TLS test needs ssl = on on the server {TEST_DATABASE_URL} names"
    );
    let certificate = show(&admin, "ssl_cert_file").await;
    assert!(
        Path::new(&certificate).is_file(),
        "the server's certificate {certificate} must be readable here (the test uses it as sslrootcert)"
    );
    let config = tokio_postgres::Config::from_str(&admin_url).expect("a PostgreSQL URL");
    let by_ip = matches!(config.get_hosts(), [tokio_postgres::config::Host::Tcp(host)] if host.parse::<IpAddr>().is_ok());
    assert!(
        by_ip,
        "the TLS test needs {TEST_DATABASE_URL} to name its server by IP address (verify-full must refuse it)"
    );
    let root = format!("sslrootcert={certificate}");

    // Control: unencrypted connections show as such, so the checks below can tell.
    let plain = ScratchDatabase::create(&admin, &admin_url).await;
    let connections = serves_over(&admin, &plain, "disable", &plain.url("sslmode=disable")).await;
    println!("sslmode=disable: serves; connections (ssl, protocol): {connections:?}");
    assert!(!connections.is_empty(), "the broker holds a connection");
    assert!(connections.iter().all(|(ssl, _)| !ssl), "{connections:?}");

    // (a) require: encrypted, the certificate not checked.
    let required = ScratchDatabase::create(&admin, &admin_url).await;
    let connections = serves_over(
        &admin,
        &required,
        "require",
        &required.url("sslmode=require"),
    )
    .await;
    println!("sslmode=require: serves; connections (ssl, protocol): {connections:?}");
    assert!(!connections.is_empty(), "the broker holds a connection");
    assert!(connections.iter().all(|(ssl, _)| *ssl), "{connections:?}");

    // (b) verify-full against the public roots (sslrootcert=system): the self-signed certificate
    // is refused.
    let public_roots = ScratchDatabase::create(&admin, &admin_url).await;
    let (unknown_issuer, took) =
        refused(&public_roots.url("sslmode=verify-full&sslrootcert=system")).await;
    println!("sslmode=verify-full (webpki roots): refused after {took:?}: {unknown_issuer}");

    // (c) verify-ca with the certificate as root: encrypted and authenticated, any host name.
    let chain = ScratchDatabase::create(&admin, &admin_url).await;
    let url = chain.url(&format!("sslmode=verify-ca&{root}"));
    let connections = serves_over(&admin, &chain, "verify-ca", &url).await;
    println!("sslmode=verify-ca&{root}: serves; connections (ssl, protocol): {connections:?}");
    assert!(!connections.is_empty(), "the broker holds a connection");
    assert!(connections.iter().all(|(ssl, _)| *ssl), "{connections:?}");

    // (d) verify-full with the same root: the certificate does not name the IP address.
    let full = ScratchDatabase::create(&admin, &admin_url).await;
    let (wrong_name, took) = refused(&full.url(&format!("sslmode=verify-full&{root}"))).await;
    println!("sslmode=verify-full&{root} by IP address: refused after {took:?}: {wrong_name}");

    // Both refusals say why, so an operator can tell an untrusted certificate from a wrong host
    // name (checked last: the cases above run whatever the messages say).
    assert!(
        unknown_issuer.contains("certificate"),
        "the refusal of an untrusted certificate names the certificate: {unknown_issuer}"
    );
    assert!(
        wrong_name.contains("certificate") && wrong_name.contains("name"),
        "the refusal of a certificate for another host names the mismatch: {wrong_name}"
    );
}
