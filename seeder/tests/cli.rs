//! Black-box: the real `shoal-seeder` binary.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

/// Ports of the system's choosing: the defaults are fixed, and the tests
/// run at once (as may other seeders on the machine).
const EPHEMERAL: [&str; 4] = ["--port", "0", "--http", "127.0.0.1:0"];

#[test]
fn prints_the_stream_id_when_ready() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal-seeder"))
        .args(["--input", "synthetic:500kbps", "--name", "cli-test"])
        .args(EPHEMERAL)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("a first line within 30 s");
    let _ = child.kill();
    let _ = child.wait();
    let id = line
        .strip_prefix("stream: ")
        .expect("starts with 'stream: '");
    assert_eq!(id.len(), 64);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
}

#[test]
fn a_missing_input_file_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal-seeder"))
        .args(["--input", "/nonexistent/shoal.ts"])
        .args(EPHEMERAL)
        .output()
        .expect("the binary runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/shoal.ts"), "{err}");
}
