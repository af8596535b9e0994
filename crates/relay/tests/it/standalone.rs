//! Standalone mode: a flags file, reloaded, a bad version of it never served.

use crate::kit::{Relay, wait_for};
use rollwave_relay::Served;
use rollwave_relay::standalone::{self, FileWatch, LoadError, Reload};
use std::sync::Arc;
use std::time::Duration;

const GOOD: &str = r#"{"flags": {"theme": {"state": "ENABLED", "variants": {"blue": "blue", "red": "red"}, "defaultVariant": "blue"}}}"#;
const BETTER: &str = r#"{"flags": {"theme": {"state": "ENABLED", "variants": {"blue": "blue", "red": "red"}, "defaultVariant": "red"}}}"#;
const BAD: &str = "{\"flags\": {\n  \"theme\": {\"state\": \"ON\", \"variants\": {\"blue\": \"blue\"}, \"defaultVariant\": \"green\"}}}";

#[test]
fn a_bad_file_keeps_the_last_good_set_and_a_fixed_one_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flags.json");
    std::fs::write(&path, GOOD).unwrap();
    let (text, set) = standalone::load(&path).unwrap();
    let first = set.version().to_owned();
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(Served::single(set)));
    let relay = Relay::start_with(tx.clone(), rx.clone());
    let theme = || relay.evaluate("theme", serde_json::json!({})).json()["value"].as_str().unwrap().to_owned();
    let mut file = FileWatch::new(path.clone(), text);
    assert!(matches!(file.look(&tx), Reload::Unchanged));

    std::fs::write(&path, BAD).unwrap();
    let Reload::Kept(LoadError::Invalid(errors)) = file.look(&tx) else { panic!("a bad file was not refused") };
    assert!(errors.len() >= 2, "{errors:?}");
    assert_eq!(rx.borrow().stable().version(), first);
    assert_eq!(theme(), "blue");

    std::fs::remove_file(&path).unwrap();
    assert!(matches!(file.look(&tx), Reload::Unreadable(_)));
    assert_eq!(theme(), "blue");

    std::fs::write(&path, BETTER).unwrap();
    let Reload::Served(set) = file.look(&tx) else { panic!("the fixed file was not served") };
    assert_ne!(set.version(), first);
    assert_eq!(theme(), "red");
}

#[test]
fn the_watcher_serves_each_new_version_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flags.json");
    std::fs::write(&path, GOOD).unwrap();
    let (text, set) = standalone::load(&path).unwrap();
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(Served::single(set)));
    let relay = Relay::start_with(tx.clone(), rx);
    let watcher = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(standalone::watch(FileWatch::new(path.clone(), text), Duration::from_millis(20), tx));
    });
    let theme = || relay.evaluate("theme", serde_json::json!({})).json()["value"].as_str().unwrap().to_owned();
    std::fs::write(dir.path().join("flags.json"), BETTER).unwrap();
    wait_for("the new file to be served", Duration::from_secs(10), || theme() == "red");
    // The relay holds the last receiver: once it stops, the watcher does.
    drop(relay);
    watcher.join().unwrap();
}

#[test]
fn every_error_of_a_bad_file_is_reported_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flags.json");
    std::fs::write(&path, BAD).unwrap();
    let Err(LoadError::Invalid(diagnostics)) = standalone::load(&path) else { panic!("a bad file loads") };
    assert!(diagnostics.len() >= 2, "{diagnostics:?}");
    let text = LoadError::Invalid(diagnostics.clone()).to_string();
    let origin = path.display().to_string();
    for (line, d) in text.lines().zip(&diagnostics) {
        assert!(line.starts_with(&format!("{origin}:{}:{}: ", d.line, d.col)), "{line}");
        assert_eq!(d.line, 2, "{line}");
    }
}
