//! Black-box: the real `shoal-node` binary refuses bad arguments clearly.

use std::process::Command;

#[test]
fn a_bad_stream_id_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal-node"))
        .args(["--tracker", "http://127.0.0.1:9", "--stream", "not-hex"])
        .output()
        .expect("the binary runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("64 lowercase hex"), "{err}");
}

#[test]
fn a_bad_upload_limit_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal-node"))
        .args([
            "--tracker",
            "http://127.0.0.1:9",
            "--stream",
            &"ab".repeat(32),
            "--upload-limit",
            "fast",
        ])
        .output()
        .expect("the binary runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a rate"), "{err}");
}
