//! The release page's chart, as inline SVG: the share of the service's hosts on each
//! version over time (stacked), and the error rate of the release and of the other
//! versions beneath it, on the same time axis.

use rollwave_store::MetricRow;
use std::collections::BTreeMap;
use std::fmt::Write;

const WIDTH: f64 = 960.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 16.0;
const SHARE_TOP: f64 = 28.0;
const SHARE_HEIGHT: f64 = 180.0;
const ERROR_TOP: f64 = 262.0;
const ERROR_HEIGHT: f64 = 90.0;
const HEIGHT: f64 = 384.0;
/// The release in blue; the versions around it in colours that do not mean a state.
const RELEASE_COLOUR: &str = "#0969da";
const OTHER_COLOURS: [&str; 6] = ["#8c959f", "#8250df", "#1b7c83", "#57606a", "#bf3989", "#6e7781"];

/// Text for SVG and HTML: `&`, `<`, `>`, `"` and `'` escaped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn clock(ms: i64) -> String {
    let t = crate::state::timestamp(ms).to_string();
    t.split_once('T').map_or(t.clone(), |(_, time)| time.chars().take(8).collect())
}

/// `history`: (unix ms, hosts per version) at every change, oldest first.
pub fn rollout(
    release: &str,
    history: &[(i64, BTreeMap<String, u64>)],
    rows: &[MetricRow],
    from_ms: i64,
    to_ms: i64,
) -> String {
    let span = (to_ms - from_ms).max(1) as f64;
    let x = |t: i64| LEFT + (t.clamp(from_ms, to_ms) - from_ms) as f64 / span * (WIDTH - LEFT - RIGHT);
    // Versions in the order they first appear, the release last so that it is on top.
    let mut versions: Vec<&str> = Vec::new();
    for (_, counts) in history {
        for v in counts.keys() {
            if v != release && !versions.contains(&v.as_str()) {
                versions.push(v);
            }
        }
    }
    versions.push(release);
    let colour = |v: &str| -> &str {
        if v == release {
            RELEASE_COLOUR
        } else {
            let i = versions.iter().position(|x| *x == v).unwrap_or(0);
            OTHER_COLOURS[i % OTHER_COLOURS.len()]
        }
    };
    let first = history.first().and_then(|(_, c)| share(c, release)).unwrap_or(0.0);
    let last = history.last().and_then(|(_, c)| share(c, release)).unwrap_or(0.0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="chart-title chart-desc" xmlns="http://www.w3.org/2000/svg">"#
    );
    let _ = write!(
        svg,
        r#"<title id="chart-title">Rollout of {} over time</title><desc id="chart-desc">The share of hosts on {} went from {:.0}% to {:.0}% between {} and {} UTC; the error rate is drawn beneath.</desc>"#,
        escape(release),
        escape(release),
        first * 100.0,
        last * 100.0,
        clock(from_ms),
        clock(to_ms)
    );
    let _ = write!(svg, r#"<text class="chart-label" x="{LEFT}" y="16">Share of hosts per version</text>"#);
    // The stacked steps.
    for (i, (t, counts)) in history.iter().enumerate() {
        let end = history.get(i + 1).map_or(to_ms, |n| n.0);
        let total: u64 = counts.values().sum();
        if total == 0 || end <= from_ms {
            continue;
        }
        let (x0, x1) = (x(*t), x(end));
        let mut bottom = SHARE_TOP + SHARE_HEIGHT;
        for v in &versions {
            let n = counts.get(*v).copied().unwrap_or(0);
            if n == 0 {
                continue;
            }
            let h = n as f64 / total as f64 * SHARE_HEIGHT;
            bottom -= h;
            let _ = write!(
                svg,
                r#"<rect x="{x0:.1}" y="{bottom:.1}" width="{:.1}" height="{h:.1}" fill="{}"><title>{}: {n} of {total} hosts from {}</title></rect>"#,
                (x1 - x0).max(0.5),
                colour(v),
                escape(v),
                clock(*t)
            );
        }
    }
    axis(&mut svg, SHARE_TOP, SHARE_HEIGHT, "100%", "0%");
    // The error rate, per 10 s, of the release and of the rest.
    let bin = crate::signals::BIN_MS;
    let mut bins: BTreeMap<i64, [crate::signals::Traffic; 2]> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.source == "traffic") {
        let slot = usize::from(r.version == release);
        bins.entry(r.at_ms.div_euclid(bin) * bin).or_default()[slot].add(r);
    }
    let rates: Vec<(i64, [Option<f64>; 2])> = bins
        .iter()
        .map(|(t, [rest, rel])| (*t + bin / 2, [rest.metric("error_rate", 10.0), rel.metric("error_rate", 10.0)]))
        .collect();
    let top = rates.iter().flat_map(|(_, r)| r.iter().flatten().copied()).fold(0.01_f64, f64::max);
    let top = nice_ceiling(top);
    let _ =
        write!(svg, r#"<text class="chart-label" x="{LEFT}" y="{}">Error rate (per 10 s)</text>"#, ERROR_TOP - 10.0);
    if rates.is_empty() {
        let _ = write!(
            svg,
            r#"<text class="chart-note" x="{}" y="{}" text-anchor="middle">no traffic recorded</text>"#,
            (LEFT + WIDTH - RIGHT) / 2.0,
            ERROR_TOP + ERROR_HEIGHT / 2.0
        );
    }
    for (slot, stroke, name) in [(0, "#57606a", "other versions".to_owned()), (1, RELEASE_COLOUR, escape(release))] {
        let points: Vec<String> = rates
            .iter()
            .filter_map(|(t, r)| r[slot].map(|v| (x(*t), ERROR_TOP + ERROR_HEIGHT - v / top * ERROR_HEIGHT)))
            .map(|(px, py)| format!("{px:.1},{py:.1}"))
            .collect();
        if !points.is_empty() {
            let _ = write!(
                svg,
                r#"<polyline fill="none" stroke="{stroke}" stroke-width="2" points="{}"><title>error rate of {name}</title></polyline>"#,
                points.join(" ")
            );
        }
    }
    axis(&mut svg, ERROR_TOP, ERROR_HEIGHT, &format!("{:.1}%", top * 100.0), "0%");
    // The time axis, shared.
    let y = HEIGHT - 8.0;
    for (t, anchor) in [(from_ms, "start"), ((from_ms + to_ms) / 2, "middle"), (to_ms, "end")] {
        let _ = write!(
            svg,
            r#"<text class="chart-note" x="{:.1}" y="{y}" text-anchor="{anchor}">{}</text>"#,
            x(t),
            clock(t)
        );
    }
    svg.push_str("</svg>");
    // The legend, as HTML beside it.
    svg.push_str(r#"<ul class="legend">"#);
    for v in versions.iter().rev() {
        let _ = write!(svg, r#"<li><span class="swatch" style="background:{}"></span>{}</li>"#, colour(v), escape(v));
    }
    svg.push_str(r#"<li><span class="swatch line-other"></span>error rate, other versions</li></ul>"#);
    svg
}

fn share(counts: &BTreeMap<String, u64>, version: &str) -> Option<f64> {
    let total: u64 = counts.values().sum();
    (total > 0).then(|| counts.get(version).copied().unwrap_or(0) as f64 / total as f64)
}

/// 1, 2 or 5 times a power of ten, at least `v`.
fn nice_ceiling(v: f64) -> f64 {
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * p).find(|c| *c >= v).unwrap_or(v)
}

fn axis(svg: &mut String, top: f64, height: f64, high: &str, low: &str) {
    let right = WIDTH - RIGHT;
    let bottom = top + height;
    let _ = write!(
        svg,
        r#"<line class="axis" x1="{LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}"/><line class="axis" x1="{LEFT}" y1="{top}" x2="{LEFT}" y2="{bottom}"/><text class="chart-note" x="{}" y="{}" text-anchor="end">{high}</text><text class="chart-note" x="{}" y="{bottom}" text-anchor="end">{low}</text>"#,
        LEFT - 6.0,
        top + 10.0,
        LEFT - 6.0
    );
}
