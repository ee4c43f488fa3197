//! The real engine and real clients: `cache-sim serve` on port 0 and
//! `cache-sim load` against it for a few seconds. On main the metrics-first
//! triage finds no leak; with a leaking bug-zoo switch it names the leak
//! class (O-3) and exits 1. Bad input to `serve` exits 2 with a clear error.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};

const BIN: &str = env!("CARGO_BIN_EXE_cache-sim");

/// A running `serve`, killed on drop; its stderr (the log) is collected.
struct Server {
    child: Child,
    listen: String,
    metrics: String,
    log: Arc<Mutex<String>>,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--metrics",
                "127.0.0.1:0",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("serve starts");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let listen = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("first line names the address: {line:?}"))
            .to_string();
        line.clear();
        out.read_line(&mut line).unwrap();
        let metrics = line
            .trim()
            .strip_prefix("metrics on ")
            .unwrap_or_else(|| panic!("second line names the metrics URL: {line:?}"))
            .to_string();
        // Drain both pipes so the server never blocks on a full one.
        let log = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = out.read_to_string(&mut rest);
        });
        Server {
            child,
            listen,
            metrics,
            log,
        }
    }

    fn load(&self, clients: &str, duration: &str) -> Output {
        Command::new(BIN)
            .args([
                "load",
                "--connect",
                &self.listen,
                "--metrics-url",
                &self.metrics,
            ])
            .args([
                "--clients",
                clients,
                "--duration",
                duration,
                "--drain",
                "3s",
            ])
            .output()
            .expect("load runs")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn load_on_main_leaves_no_entry() {
    let server = Server::start(&[]);
    let o = server.load("32", "3s");
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("dagger_connected_clients 0"), "{out}");
    assert!(out.contains("no leak"), "{out}");
    // Plans ran: requests were sent and answered.
    assert!(out.contains("requests="), "{out}");
    // S-7: every closed session logged its line, ending at 0 entries.
    let log = server.log.lock().unwrap().clone();
    assert!(log.contains("(S-7)"), "{log}");
    assert!(log.contains("TTL store: in-memory SQLite"), "{log}");
}

#[test]
fn a_leaking_switch_is_named_by_its_leak_class() {
    let server = Server::start(&["--bug", "dup-completion-discard"]);
    let o = server.load("32", "4s");
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("LEAK"), "{out}");
    assert!(
        out.contains("leak class: completed-call refs not released"),
        "{out}"
    );
}

#[test]
fn bad_serve_input_exits_2_naming_it() {
    let run = |args: &[&str]| {
        let o = Command::new(BIN).arg("serve").args(args).output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    let (code, err) = run(&["--listen", "nowhere", "--metrics", "127.0.0.1:0"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("bad --listen"), "{err}");

    // An address in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, err) = run(&["--listen", &addr, "--metrics", "127.0.0.1:0"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("cannot listen on --listen"), "{err}");

    // A corrupt database file.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ttl.db");
    std::fs::write(&db, b"this is not a SQLite database, just text").unwrap();
    let db = db.to_string_lossy().to_string();
    let (code, err) = run(&[
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
        "--ttl-db",
        &db,
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("bad --ttl-db"), "{err}");

    // `load` with nothing to connect to.
    let o = Command::new(BIN)
        .args([
            "load",
            "--connect",
            &addr,
            "--metrics-url",
            "http://127.0.0.1:1/metrics",
        ])
        .args(["--duration", "1s"])
        .output()
        .unwrap();
    drop(taken);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}
