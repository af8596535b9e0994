//! A dashboard page whose store read fails says so with an error status, instead of
//! showing what it could not read as nothing.

use crate::support;

use rollwave_server::Driver;
use rollwave_server::api::*;
use std::time::Duration;
use support::{ADMIN, TestServer};

const MANIFEST: &str = "\
service: web
environments:
  prod: { regions: { r1: { zones: { z1: 1 } } } }
strategy:
  one_box: { hosts: 1, max_share: 100%, bake: 0s }
  rolling: { batch: 100%, zone_bake: 0s }
stages:
  - { name: prod, environment: prod, bake: 0s }
";

/// A dashboard page as the admin sees it: its status and body.
fn page(s: &TestServer, path: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut response =
        agent.get(format!("{}{path}", s.base)).header("Cookie", format!("rollwave_token={ADMIN}")).call().unwrap();
    (response.status().as_u16(), response.body_mut().read_to_string().unwrap())
}

#[test]
fn a_page_whose_store_read_fails_answers_an_error_not_an_empty_list() {
    let s = TestServer::start(Driver::Noop { delay: Duration::from_millis(10) });
    let admin = s.client(Some(ADMIN));
    admin.apply("web.yaml", MANIFEST).unwrap();
    admin
        .create_release("web", &CreateRelease { version: "v2".into(), artifact: None, sha256: None, flags: None })
        .unwrap();
    s.wait_for("v2 completes", || {
        admin.release("web", "v2").unwrap().release.outcome == rollwave_api::Outcome::Completed
    });
    let (status, hosts) = page(&s, "/services/web/hosts");
    assert_eq!(status, 200, "{hosts}");
    assert!(hosts.contains("z1-1"), "{hosts}");
    let (status, release) = page(&s, "/services/web/releases/v2");
    assert_eq!(status, 200, "{release}");

    s.block_on(s.node.store.raw_execute("DROP TABLE heartbeats")).unwrap();
    let (status, hosts) = page(&s, "/services/web/hosts");
    assert_eq!(status, 500, "{hosts}");
    assert!(hosts.contains("The store could not be read") && hosts.contains("heartbeats"), "{hosts}");
    assert!(!hosts.contains("z1-1"), "a page that could not read its hosts lists none as if it had: {hosts}");

    s.block_on(s.node.store.raw_execute("DROP TABLE metrics")).unwrap();
    let (status, release) = page(&s, "/services/web/releases/v2");
    assert_eq!(status, 500, "{release}");
    assert!(release.contains("The store could not be read") && release.contains("metrics"), "{release}");
}
