//! The router's `/metrics` as Prometheus itself reads it: `promtool check metrics` (from
//! Debian's `prometheus` package) finds nothing to say, and the content type names the
//! format the body is in (the text format, 0.0.4).

mod support;

use rollwave_exposition::testing::promtool_check;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_the_routers_metrics_served_as_the_text_format() {
    let (stable, canary) = (Backend::start("stable").await, Backend::start("canary").await);
    let router =
        TestRouter::start(&routes_yaml("s", "50%", &[host(&stable, "v2", "stable"), host(&canary, "v3", "canary")]))
            .await;
    let http = Http::new();
    canary.set_mode(Mode::Fail);
    // Traffic on both tracks, some of it failing, and a rejected reload: every family
    // has samples.
    for i in 0..20 {
        http.get(router.addr, "/", &[("x-rollwave-key", format!("user-{i}").as_bytes())]).await;
    }
    router.rewrite_routes("salt: s\ncanary_share: 110%\nhosts: []\n", "rejected").await;

    let scrape = http.get(router.admin, "/metrics", &[]).await;
    assert_eq!(scrape.status, 200);
    assert_eq!(scrape.header("content-type"), "text/plain; version=0.0.4; charset=utf-8");
    let body = scrape.body;
    // The text format: a counter's family is named as its samples are.
    assert!(body.contains("# TYPE rollwave_router_requests_total counter\n"), "{body}");
    assert!(body.contains("rollwave_router_responses_5xx_total{"), "{body}");
    assert!(body.contains("rollwave_router_request_duration_seconds_bucket{"), "{body}");
    assert!(body.contains("rollwave_router_table_reloads_total{outcome=\"rejected\"} 1"), "{body}");
    assert!(!body.contains("# EOF"), "{body}");

    let Some(verdict) = promtool_check("promtool_accepts_the_routers_metrics", &body) else { return };
    assert!(
        verdict.accepted && verdict.said.trim().is_empty(),
        "promtool check metrics:\n{}\non:\n{body}",
        verdict.said
    );
}
