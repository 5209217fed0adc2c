use std::collections::BTreeMap;

use http::StatusCode;
use prost_types::{ListValue, Struct, Value as PValue};
use serde_json::json;
use tonic::Code;

use super::*;
use crate::grpc::proto::gorush::{Alert, FcmOptions, notification_request::Priority};

fn pv(kind: Kind) -> PValue {
    PValue { kind: Some(kind) }
}

fn pstruct(fields: &[(&str, Kind)]) -> Struct {
    Struct {
        fields: fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), pv(v.clone())))
            .collect::<BTreeMap<_, _>>(),
    }
}

#[test]
fn a_struct_becomes_the_json_a_client_would_have_sent() {
    let s = pstruct(&[
        ("badge", Kind::NumberValue(3.0)),
        ("ratio", Kind::NumberValue(0.5)),
        ("big", Kind::NumberValue(1e300)),
        ("nan", Kind::NumberValue(f64::NAN)),
        ("on", Kind::BoolValue(true)),
        ("none", Kind::NullValue(0)),
        ("text", Kind::StringValue("hi".into())),
        (
            "list",
            Kind::ListValue(ListValue {
                values: vec![
                    pv(Kind::NumberValue(-2.0)),
                    pv(Kind::StringValue("x".into())),
                ],
            }),
        ),
        (
            "aps",
            Kind::StructValue(pstruct(&[("alert", Kind::StringValue("hi".into()))])),
        ),
    ]);
    let json = Value::Object(struct_to_json(&s));
    assert_eq!(
        json,
        json!({
            "badge": 3, "ratio": 0.5, "big": 1e300, "nan": null, "on": true, "none": null,
            "text": "hi", "list": [-2, "x"], "aps": {"alert": "hi"},
        })
    );
    assert_eq!(json["badge"].to_string(), "3");
}

/// Every field of gorush's `NotificationRequest`, named as gorush's REST
/// JSON names it (`notify.PushNotification`).
#[test]
fn every_gorush_field_is_named_as_gorushs_rest_api_names_it() {
    let n = NotificationRequest {
        tokens: vec!["t1".into(), "t2".into()],
        platform: 1,
        message: "body".into(),
        title: "title".into(),
        topic: "com.example.app".into(),
        key: "ignored".into(),
        badge: 7,
        category: "cat".into(),
        alert: Some(Alert {
            title: "at".into(),
            body: "ab".into(),
            subtitle: "as".into(),
            action: "aa".into(),
            action_loc_key: "alk".into(),
            launch_image: "li.png".into(),
            loc_key: "lk".into(),
            title_loc_key: "tlk".into(),
            loc_args: vec!["1".into()],
            title_loc_args: vec!["2".into()],
        }),
        sound: "default".into(),
        content_available: true,
        thread_id: "thread".into(),
        mutable_content: true,
        data: Some(pstruct(&[("order", Kind::NumberValue(42.0))])),
        image: "https://example.com/i.png".into(),
        priority: Priority::High as i32,
        id: "notif-1".into(),
        push_type: "alert".into(),
        development: true,
        fcm_options: Some(FcmOptions {
            analytics_label: "label".into(),
        }),
    };
    assert_eq!(
        notification(&n),
        json!({
            "tokens": ["t1", "t2"],
            "platform": 1,
            "message": "body",
            "title": "title",
            "topic": "com.example.app",
            "badge": 7,
            "category": "cat",
            "alert": {
                "title": "at", "body": "ab", "subtitle": "as", "action": "aa",
                "action-loc-key": "alk", "launch-image": "li.png", "loc-key": "lk",
                "title-loc-key": "tlk", "loc-args": ["1"], "title-loc-args": ["2"],
            },
            "sound": "default",
            "content_available": true,
            "thread-id": "thread",
            "mutable_content": true,
            "data": {"order": 42},
            "image": "https://example.com/i.png",
            "priority": "high",
            "notif_id": "notif-1",
            "push_type": "alert",
            "development": true,
            "fcm_options": {"analytics_label": "label"},
        })
    );
}

#[test]
fn an_empty_gorush_request_carries_what_gorush_would() {
    let n = NotificationRequest {
        tokens: vec!["t".into()],
        platform: 2,
        badge: -1,
        alert: Some(Alert::default()),
        ..NotificationRequest::default()
    };
    // gorush's server: priority NORMAL → "normal"; badge only when > 0.
    assert_eq!(
        notification(&n),
        json!({ "tokens": ["t"], "platform": 2, "priority": "normal" })
    );
}

#[test]
fn a_platform_names_its_route() {
    for (name, path) in [
        ("apns", "/apns/send"),
        ("fcm", "/fcm/send"),
        ("gcm", "/gcm/send"),
        ("webpush", "/webpush/send"),
        ("hms", "/hms/send"),
    ] {
        assert_eq!(Route::parse(name).expect(name).path(), path);
    }
    for bad in ["", "APNS", "ios"] {
        let e = Route::parse(bad).expect_err(bad);
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().starts_with("platform:"), "{}", e.message());
    }
}

fn request(message: Struct, tokens: &[&str], app: &str) -> SendRequest {
    SendRequest {
        platform: String::new(),
        message: Some(message),
        tokens: tokens.iter().map(|t| (*t).to_owned()).collect(),
        app: app.into(),
        idempotency_key: String::new(),
    }
}

#[test]
fn a_send_body_is_the_message_plus_tokens_and_app() {
    let message = pstruct(&[(
        "payload",
        Kind::StructValue(pstruct(&[("aps", Kind::StructValue(pstruct(&[])))])),
    )]);
    let body = send_body(Route::Apns, &request(message, &["ab", "cd"], "watch")).expect("ok");
    assert_eq!(
        body,
        json!({ "payload": {"aps": {}}, "tokens": ["ab", "cd"], "app": "watch" })
    );
    // No message at all: the route says what is missing.
    let bare = SendRequest {
        message: None,
        ..request(Struct::default(), &["ab"], "")
    };
    assert_eq!(
        send_body(Route::Fcm, &bare).expect("ok"),
        json!({ "tokens": ["ab"] })
    );
}

#[test]
fn webpush_tokens_are_subscription_objects() {
    let sub = r#"{"endpoint":"https://push.example/abc","keys":{"p256dh":"P","auth":"A"}}"#;
    let body = send_body(
        Route::WebPush,
        &request(Struct::default(), &[sub, "not json"], ""),
    )
    .expect("ok");
    assert_eq!(
        body,
        json!({ "subscriptions": [
            {"endpoint": "https://push.example/abc", "keys": {"p256dh": "P", "auth": "A"}},
            "not json",
        ] })
    );
    // One a line, whatever newlines the text had.
    let spread = "{\n  \"endpoint\": \"https://push.example/x\"\n}";
    let lines = ndjson_tokens(Route::WebPush, &[spread.to_owned()]);
    assert_eq!(&lines[..], b"{\"endpoint\":\"https://push.example/x\"}\n");
}

#[test]
fn tokens_in_the_message_and_two_apps_are_refused() {
    let e = send_body(
        Route::Apns,
        &request(pstruct(&[("tokens", Kind::NullValue(0))]), &["ab"], ""),
    )
    .expect_err("refused");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("message.tokens"), "{}", e.message());
    let e = send_body(
        Route::WebPush,
        &request(pstruct(&[("subscriptions", Kind::NullValue(0))]), &[], ""),
    )
    .expect_err("refused");
    assert!(
        e.message().starts_with("message.subscriptions"),
        "{}",
        e.message()
    );
    let e = send_body(
        Route::Apns,
        &request(pstruct(&[("app", Kind::StringValue("a".into()))]), &[], "b"),
    )
    .expect_err("refused");
    assert!(e.message().starts_with("app:"), "{}", e.message());
    // The same app twice is one app.
    let same = send_body(
        Route::Apns,
        &request(pstruct(&[("app", Kind::StringValue("a".into()))]), &[], "a"),
    )
    .expect("ok");
    assert_eq!(same["app"], "a");
}

#[test]
fn ndjson_is_the_header_line_then_one_token_a_line() {
    let message = pstruct(&[("topic", Kind::StringValue("com.example".into()))]);
    let header = ndjson_header(Route::Apns, &request(message, &["ignored"], "watch")).expect("ok");
    assert_eq!(
        &header[..],
        b"{\"app\":\"watch\",\"topic\":\"com.example\"}\n"
    );
    let lines = ndjson_tokens(Route::Apns, &["ab".to_owned(), "c\"d".to_owned()]);
    assert_eq!(&lines[..], b"\"ab\"\n\"c\\\"d\"\n");
}

fn answer(body: Value, replayed: bool) -> Answer {
    Answer {
        status: StatusCode::ACCEPTED,
        retry_after: None,
        replayed,
        body,
    }
}

#[test]
fn a_202_becomes_a_send_reply() {
    let reply = send_reply(&answer(
        json!({
            "job": "j1", "accepted": 3, "duplicates": 1, "rejected_count": 1500,
            "rejected": [{"token": "zz", "reason": "BadDeviceToken"}],
        }),
        false,
    ));
    assert_eq!(reply.job, "j1");
    assert_eq!(
        (reply.accepted, reply.duplicates, reply.rejected_count),
        (3, 1, 1500)
    );
    assert_eq!(
        reply.rejected,
        [Rejection {
            token: "zz".into(),
            reason: "BadDeviceToken".into()
        }]
    );
    assert!(!reply.replayed);
    // Web Push names the endpoint; a replay is flagged by header or body.
    let reply = send_reply(&answer(
        json!({"job": "j2", "accepted": 0, "rejected": [{"endpoint": "https://e", "reason": "BadEndpoint"}]}),
        true,
    ));
    assert_eq!(reply.rejected[0].token, "https://e");
    assert_eq!(reply.rejected_count, 1);
    assert!(reply.replayed);
    assert!(send_reply(&answer(json!({"job": "j", "replayed": true}), false)).replayed);
}

#[test]
fn a_job_answer_becomes_a_job_status() {
    let s = job_status(&json!({
        "job": "j1", "platform": "apns", "state": "done", "total": 5, "successes": 2,
        "failures": 1, "unregistered": 1, "canonicals": 0, "expired": 1, "cancelled": 0,
        "pending": 0, "notif_id": "ignored",
    }));
    assert_eq!(
        s,
        JobStatus {
            job: "j1".into(),
            platform: "apns".into(),
            state: "done".into(),
            total: 5,
            successes: 2,
            failures: 1,
            unregistered: 1,
            canonicals: 0,
            expired: 1,
            cancelled: 0,
            pending: 0,
        }
    );
}
