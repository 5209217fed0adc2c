//! Keeps `/openapi.json` true to the router: every documented path and method
//! answers on a running gateway (APNs, FCM v1 and HMS configured against the
//! mocks, so none of their routes is 404 for want of a platform), no documented path takes
//! a method the document leaves out, and every route of the API's route
//! table (`pushgate::api::route_table`) is documented. Request and response bodies are schemathesis'
//! job (`scripts/check-openapi`); this test needs no Python.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use common::*;
use pushgate::config::FcmSection;
use pushgate::mock;
use serde_json::Value;

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

/// `(path, method)` of every route the API serves, from its route table
/// (gorush's at the default, empty prefix, as documented). The test below
/// asks the running router for each, so the table cannot drift from it.
fn router_routes() -> BTreeSet<(String, String)> {
    pushgate::api::route_table(
        pushgate::platforms::CATALOG,
        &pushgate::api::gorush::GorushSection::default(),
    )
    .into_iter()
    .map(|r| (r.path, r.method.to_owned()))
    .collect()
}

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in METHODS {
            if item.get(m).is_some() {
                ops.insert((path.clone(), m.to_owned()));
            }
        }
    }
    ops
}

fn concrete(path: &str) -> String {
    path.replace("{id}", "0123456789abcdef0123456789abcdef")
}

#[tokio::test]
async fn openapi_document_matches_the_router_and_the_running_server() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        // FCM v1 against the mock, beside the APNs mock the harness starts.
        let pki = mock::tls::TestPki::generate().unwrap();
        let account = mock::fcm::ServiceAccountFixture::generate("pushgate-test").unwrap();
        let fcm = mock::fcm::start(mock::fcm::MockFcmOptions::new(&account, "test-key", &pki))
            .await
            .unwrap();
        let dir = scratch("openapi");
        let ca = dir.join("fcm-ca.pem");
        std::fs::write(&ca, &pki.ca_pem).unwrap();
        let sa = dir.join("service-account.json");
        std::fs::write(&sa, account.to_json(&format!("{}/token", fcm.url()))).unwrap();
        let section = FcmSection {
            service_account_file: sa.display().to_string(),
            endpoint: fcm.url(),
            ca_file: ca.display().to_string(),
            ..FcmSection::default()
        };
        // And Huawei Push Kit against its mock.
        let (_hms_mock, hms) = hms_mock_for_process(&dir, |_| {}).await;
        let env = apns_env(ApnsSetup {
            tweak: Box::new(move |file| {
                file.fcm = Some(section);
                file.hms = Some(hms);
            }),
            ..ApnsSetup::default()
        })
        .await;

        let served = env
            .client
            .get(env.url("/openapi.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(served.status(), 200);
        let doc: Value = served.json().await.unwrap();
        assert_eq!(doc["openapi"], "3.1.0");

        let in_router = router_routes();
        assert!(
            in_router.len() >= 20,
            "router scan found too little: {in_router:?}"
        );
        let in_doc = documented(&doc);
        let undocumented: Vec<_> = in_router.difference(&in_doc).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from src/api/openapi.json: {undocumented:?}"
        );
        let unrouted: Vec<_> = in_doc.difference(&in_router).collect();
        assert!(
            unrouted.is_empty(),
            "documented but not in router(): {unrouted:?}"
        );

        for (path, method) in &in_doc {
            let url = env.url(&concrete(path));
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let mut request = env.client.request(m, &url);
            if method == "post" {
                request = request
                    .header("content-type", "application/json")
                    .body("{}");
            }
            let answer = request.send().await.unwrap();
            let status = answer.status().as_u16();
            let body: Value = answer.json().await.unwrap_or(Value::Null);
            assert_ne!(status, 405, "{method} {path}: {body}");
            assert_ne!(status, 500, "{method} {path}: {body}");
            let fallback = body["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("no such route"));
            assert!(
                !fallback,
                "{method} {path} hit the router's fallback: {body}"
            );
            // Every documented status is declared for this operation.
            let declared = &doc["paths"][path.as_str()][method.as_str()]["responses"];
            assert!(
                declared.get(status.to_string()).is_some(),
                "{method} {path} answered {status}, not declared: {body}"
            );
        }

        // A method the document leaves out is refused on every documented path.
        let paths: BTreeSet<&String> = in_doc.iter().map(|(p, _)| p).collect();
        for path in paths {
            for method in METHODS {
                if in_doc.contains(&(path.clone(), method.to_owned())) {
                    continue;
                }
                let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let answer = env
                    .client
                    .request(m, env.url(&concrete(path)))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    answer.status(),
                    405,
                    "{method} {path} is routed but not documented"
                );
            }
        }
    })
    .await
    .expect("test timed out");
}
