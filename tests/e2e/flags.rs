//! `rollwave relay --flags FILE` as a real process: a real OpenFeature SDK evaluates
//! through it, and a bad version of the file is reported and not served.

use crate::kit::{BIN, Proc, free_port, wait_for};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The Python of a venv with `openfeature-sdk` and `openfeature-provider-ofrep` (see
/// `.ci/run`).
const PYTHON_ENV: &str = "ROLLWAVE_TEST_OFREP_PYTHON";

/// `rollwave relay --flags FILE` on a free port, its log in `log`, ready when returned.
fn relay(flags: &Path, log: &Path) -> (Proc, String) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let child = Command::new(BIN)
        .args(["relay", "--flags", flags.to_str().unwrap(), "--listen", &listen, "--reload-every", "50ms"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("rollwave starts");
    let process = Proc(child);
    let base = format!("http://{listen}");
    wait_for("the relay to listen", Duration::from_secs(20), || ureq::get(format!("{base}/healthz")).call().is_ok());
    (process, base)
}

fn evaluate(base: &str, key: &str) -> serde_json::Value {
    let mut response = ureq::post(format!("{base}/ofrep/v1/evaluate/flags/{key}"))
        .config()
        .http_status_as_error(false)
        .build()
        .send_json(serde_json::json!({"context": {"targetingKey": "user-1"}}))
        .unwrap();
    response.body_mut().read_json().unwrap()
}

#[test]
fn the_openfeature_python_sdk_evaluates_every_type_through_the_relay() {
    let Ok(python) = std::env::var(PYTHON_ENV) else {
        // Straight to stderr, past the harness's capture, so the skip is seen.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED the_openfeature_python_sdk_evaluates_every_type_through_the_relay: set {PYTHON_ENV} to the python \
             of a venv with openfeature-sdk and openfeature-provider-ofrep (.ci/run makes one)"
        );
        return;
    };
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk");
    let dir = tempfile::tempdir().unwrap();
    let (_relay, base) = relay(&sdk.join("flags.json"), &dir.path().join("relay.log"));
    let output = Command::new(&python).arg(sdk.join("ofrep_sdk.py")).arg(&base).output().expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the SDK checks failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all SDK checks passed"), "{stdout}");
    println!("{stdout}");
}

#[test]
fn a_bad_flags_file_is_reported_with_its_places_and_the_last_good_set_stays() {
    let dir = tempfile::tempdir().unwrap();
    let flags = dir.path().join("flags.json");
    let log = dir.path().join("relay.log");
    let good = |theme: &str| {
        format!(
            r#"{{"flags": {{"theme": {{"state": "ENABLED", "variants": {{"blue": "blue", "red": "red"}}, "defaultVariant": "{theme}"}}}}}}"#
        )
    };
    std::fs::write(&flags, good("blue")).unwrap();
    let (_relay, base) = relay(&flags, &log);
    assert_eq!(evaluate(&base, "theme")["value"], "blue");

    let bad = "{\"flags\": {\n  \"theme\": {\"state\": \"ON\", \"variants\": {\"blue\": \"blue\"},\n    \"defaultVariant\": \"green\"}}}";
    std::fs::write(&flags, bad).unwrap();
    let origin = flags.display().to_string();
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for("the errors to be logged", Duration::from_secs(20), || {
        logged().contains(&format!("{origin}:2:")) && logged().contains(&format!("{origin}:3:"))
    });
    assert_eq!(evaluate(&base, "theme")["value"], "blue", "{}", logged());

    std::fs::write(&flags, good("red")).unwrap();
    wait_for("the fixed file to be served", Duration::from_secs(20), || evaluate(&base, "theme")["value"] == "red");
}

#[test]
fn a_relay_does_not_start_on_a_bad_flags_file() {
    let dir = tempfile::tempdir().unwrap();
    let flags = dir.path().join("flags.yaml");
    std::fs::write(&flags, "flags:\n  theme:\n    state: ON\n").unwrap();
    let output = Command::new(BIN)
        .args(["relay", "--flags", flags.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.lines().any(|l| l.starts_with(&format!("{}:3:", flags.display()))), "{stderr}");
}
