//! The server's `/metrics` as Prometheus itself reads it: `promtool check metrics` (from
//! Debian's `prometheus` package) finds nothing to say, and the content type names the
//! format the body is in (the text format, 0.0.4).

use crate::support;

use rollwave_exposition::testing::promtool_check;
use rollwave_server::Driver;
use rollwave_server::api::CreateRelease;
use std::time::Duration;
use support::{ADMIN, TestServer};

const MANIFEST: &str = "\
service: shop
environments:
  prod: { regions: { r1: { zones: { p1: 2 } } } }
strategy:
  one_box: { hosts: 1, max_share: 50%, bake: 1s }
  rolling: { batch: 50%, zone_bake: 0s }
stages:
  - { name: prod, environment: prod, bake: 0s }
";

#[test]
fn promtool_accepts_the_servers_metrics_served_as_the_text_format() {
    let server = TestServer::start(Driver::Noop { delay: Duration::from_millis(10) });
    let admin = server.client(Some(ADMIN));
    admin.apply("shop.yaml", MANIFEST).unwrap();
    admin
        .create_release("shop", &CreateRelease { version: "v2".into(), artifact: None, sha256: None, flags: None })
        .unwrap();
    // A few requests, so that every family has samples (the request histogram, the
    // releases by outcome).
    let (status, _) = server.raw("GET", "/v1/nope", None, b"");
    assert_eq!(status, 404);
    admin.services().unwrap();

    let mut response = ureq::get(format!("{}/metrics", server.base)).call().unwrap();
    let content_type = response.headers().get("content-type").unwrap().to_str().unwrap().to_owned();
    let body = response.body_mut().read_to_string().unwrap();
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    // The text format: a counter's family is named as its samples are.
    assert!(body.contains("# TYPE rollwave_log_records_appended_total counter\n"), "{body}");
    assert!(!body.contains("# EOF"), "{body}");
    assert!(body.contains("rollwave_releases{service=\"shop\",outcome="), "{body}");
    assert!(body.contains("rollwave_http_request_duration_seconds_bucket{"), "{body}");
    assert!(body.contains("# HELP rollwave_leader "), "{body}");

    let Some(verdict) = promtool_check("promtool_accepts_the_servers_metrics", &body) else { return };
    assert!(
        verdict.accepted && verdict.said.trim().is_empty(),
        "promtool check metrics:\n{}\non:\n{body}",
        verdict.said
    );
}
