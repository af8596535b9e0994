//! The deterministic heart of rollwave.
//!
//! Everything here is a pure function of its inputs: manifest types, the expanded
//! [`plan::Plan`], CloudWatch-style [`alarm`] evaluation and the rollout [`engine::Engine`].
//! No I/O, no clock, no randomness: time arrives as an argument, so the server and the
//! simulator drive the same code and replaying the same inputs gives the same outputs.

pub mod alarm;
pub mod engine;
pub mod judge;
pub mod manifest;
pub mod plan;
pub mod sequential;
pub mod share;
pub mod window;

pub use jiff::Timestamp;
pub use std::time::Duration;

/// Renders a duration the way manifests write it: `90s`, `30m`, `12h`, `2d`, `1h30m`.
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_render_as_written() {
        assert_eq!(format_duration(Duration::from_secs(0)), "0s");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_secs(12 * 3600)), "12h");
        assert_eq!(format_duration(Duration::from_secs(2 * 86_400 + 1800)), "2d30m");
    }
}
