//! The message builder's own tests: FCM v1 and legacy bodies, limits, `data` as strings.
use super::*;
use serde_json::json;

fn data(payload: &[u8]) -> GoogleFields<'_> {
    GoogleFields {
        payload: Some(payload),
        ..Default::default()
    }
}

fn parse(body: &[u8]) -> Value {
    serde_json::from_slice(body).expect("valid JSON body")
}

#[test]
fn data_values_become_strings() {
    let m = GoogleMessage::new(data(
        br#"{"s":"x","n":1.5,"i":7,"b":true,"z":null,"o":{"a":[1,"b"]},"l":[1,2]}"#,
    ))
    .expect("valid");
    let body = parse(&m.v1_body("tok"));
    assert_eq!(
        body["message"]["data"],
        json!({"s":"x","n":"1.5","i":"7","b":"true","z":"null","o":"{\"a\":[1,\"b\"]}","l":"[1,2]"})
    );
    assert_eq!(body["message"]["token"], "tok");
    let legacy = parse(&m.legacy_body(["a", "b"]));
    assert_eq!(legacy["data"], body["message"]["data"]);
    assert_eq!(legacy["registration_ids"], json!(["a", "b"]));
}

#[test]
fn tokens_are_json_escaped() {
    let m = GoogleMessage::new(data(br#"{"a":"b"}"#)).expect("valid");
    let body = parse(&m.v1_body(r#"we"ird\tok"#));
    assert_eq!(body["message"]["token"], r#"we"ird\tok"#);
    let legacy = parse(&m.legacy_body([r#"q"uote"#]));
    assert_eq!(legacy["registration_ids"][0], r#"q"uote"#);
}

#[test]
fn options_land_where_each_api_wants_them() {
    let m = GoogleMessage::new(GoogleFields {
        payload: Some(br#"{"k":"v"}"#),
        notification: Some(
            br#"{"title":"T","body":"B","sound":"ding","android_channel_id":"news","body_loc_args":["x"]}"#,
        ),
        collapse_key: Some("c1"),
        priority: Some("HIGH"),
        time_to_live: Some(3600),
        ..Default::default()
    })
    .expect("valid");
    let v1 = parse(&m.v1_body("t"));
    assert_eq!(
        v1,
        json!({"message":{
            "token":"t",
            "data":{"k":"v"},
            "notification":{"title":"T","body":"B"},
            "android":{"collapse_key":"c1","priority":"HIGH","ttl":"3600s",
                "notification":{"sound":"ding","channel_id":"news","body_loc_args":["x"]}}
        }})
    );
    let legacy = parse(&m.legacy_body(["t"]));
    assert_eq!(
        legacy,
        json!({
            "registration_ids":["t"],
            "data":{"k":"v"},
            "notification":{"title":"T","body":"B","sound":"ding","android_channel_id":"news","body_loc_args":["x"]},
            "collapse_key":"c1","priority":"high","time_to_live":3600
        })
    );
}

#[test]
fn notification_only_message_has_no_data() {
    let m = GoogleMessage::new(GoogleFields {
        notification: Some(br#"{"title":"hi"}"#),
        ..Default::default()
    })
    .expect("valid");
    assert_eq!(
        parse(&m.v1_body("t")),
        json!({"message":{"token":"t","notification":{"title":"hi"}}})
    );
    assert_eq!(
        parse(&m.legacy_body(["t"])),
        json!({"registration_ids":["t"],"notification":{"title":"hi"}})
    );
}

#[test]
fn size_limit_is_413() {
    let ok = format!("{{\"a\":\"{}\"}}", "x".repeat(4096 - 8));
    assert!(GoogleMessage::new(data(ok.as_bytes())).is_ok());
    let big = format!("{{\"a\":\"{}\"}}", "x".repeat(4096 - 7));
    assert!(matches!(
        GoogleMessage::new(data(big.as_bytes())),
        Err(MessageError::TooLarge(PayloadTooLarge {
            size: 4097,
            limit: 4096,
            ..
        }))
    ));
}

#[test]
fn bad_fields_are_named() {
    let cases: Vec<(GoogleFields<'_>, &str)> = vec![
        (data(b"[1]"), "payload"),
        (data(b"{nope"), "payload"),
        (data(br#"{"google.x":"1"}"#), "payload"),
        (data(br#"{"from":"1"}"#), "payload"),
        (GoogleFields::default(), "payload"),
        (data(b"{}"), "payload"),
        (
            GoogleFields {
                notification: Some(br#"{"badge":"1"}"#),
                ..data(b"{}")
            },
            "notification",
        ),
        (
            GoogleFields {
                notification: Some(br#"{"title":1}"#),
                ..data(b"{}")
            },
            "notification",
        ),
        (
            GoogleFields {
                notification: Some(b"\"x\""),
                ..data(b"{}")
            },
            "notification",
        ),
        (
            GoogleFields {
                priority: Some("urgent"),
                ..data(br#"{"a":"b"}"#)
            },
            "priority",
        ),
        (
            GoogleFields {
                time_to_live: Some(-1),
                ..data(br#"{"a":"b"}"#)
            },
            "time_to_live",
        ),
        (
            GoogleFields {
                time_to_live: Some(MAX_TIME_TO_LIVE + 1),
                ..data(br#"{"a":"b"}"#)
            },
            "time_to_live",
        ),
    ];
    for (f, name) in cases {
        match GoogleMessage::new(f.clone()) {
            Err(MessageError::Field(e)) => assert_eq!(e.field, name, "{f:?}"),
            other => panic!("{f:?}: {other:?}"),
        }
    }
}

#[test]
fn expiry_follows_time_to_live() {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
    let with = |ttl| {
        GoogleMessage::new(GoogleFields {
            time_to_live: ttl,
            ..data(br#"{"a":"b"}"#)
        })
        .expect("valid")
    };
    assert_eq!(
        with(Some(60)).expires_at(at),
        Some(at + Duration::from_secs(60))
    );
    assert_eq!(with(Some(0)).expires_at(at), None);
    assert_eq!(with(None).expires_at(at), None);
}

/// FCM v1's blocks ride in the v1 body (`android` over the GoCM fields), keep
/// through the stored form, and `android.ttl` becomes the deadline.
#[test]
fn blocks_land_in_v1_and_survive_the_stored_form() {
    let fields = GoogleFields {
        notification: Some(br##"{"title":"T","color":"#000000"}"##),
        priority: Some("high"),
        time_to_live: Some(60),
        blocks: crate::fcm::blocks::BlockFields {
            android: Some(
                br#"{"ttl":"7200s","direct_boot_ok":true,"bandwidth_constrained_ok":true,
                     "restricted_satellite_ok":true,"notification":{"visibility":"PRIVATE"}}"#,
            ),
            apns: Some(
                br#"{"live_activity_token":"la1","headers":{"apns-priority":"10"},
                     "payload":{"aps":{"event":"update","timestamp":1700000000,"content-state":{}}}}"#,
            ),
            webpush: Some(br#"{"fcm_options":{"link":"https://example.com/o/1"}}"#),
            fcm_options: Some(br#"{"analytics_label":"spring"}"#),
        },
        ..Default::default()
    };
    let m = GoogleMessage::new(fields.clone()).expect("valid");
    let v1 = parse(&m.v1_body("t"));
    assert_eq!(
        v1["message"]["android"],
        json!({"priority":"HIGH","ttl":"7200s","direct_boot_ok":true,"bandwidth_constrained_ok":true,
               "restricted_satellite_ok":true,
               "notification":{"color":"#000000","visibility":"PRIVATE"}})
    );
    assert_eq!(v1["message"]["apns"]["live_activity_token"], "la1");
    assert_eq!(
        v1["message"]["webpush"]["fcm_options"]["link"],
        "https://example.com/o/1"
    );
    assert_eq!(v1["message"]["fcm_options"]["analytics_label"], "spring");
    assert_eq!(m.time_to_live, Some(7200));
    let rebuilt = GoogleMessage::from_stored(&fields.to_stored()).expect("rebuilds");
    assert_eq!(rebuilt.v1_body("t"), m.v1_body("t"));
    // An iOS-only message: the apns block alone is something to send.
    let ios = GoogleFields {
        blocks: crate::fcm::blocks::BlockFields {
            apns: Some(br#"{"payload":{"aps":{"alert":"hi"}}}"#),
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(GoogleMessage::new(ios).is_ok());
    let only_options = GoogleFields {
        blocks: crate::fcm::blocks::BlockFields {
            fcm_options: Some(br#"{"analytics_label":"x"}"#),
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(GoogleMessage::new(only_options).is_err());
}

#[test]
fn a_target_s_data_and_badge_land_where_google_shows_them() {
    use crate::message::personal::{Personal, Personalise};
    let personal = Personal {
        data: json!({"unread": 3})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        badge: Some(7),
    };
    // A shown notification: the badge is Android's count and iOS's badge.
    let shown = GoogleFields {
        payload: Some(br#"{"order":"42"}"#),
        notification: Some(br#"{"title":"T"}"#),
        ..GoogleFields::default()
    };
    let message = GoogleMessage::new(shown.clone()).expect("valid");
    let own = message
        .personalise(&shown.to_stored(), &personal)
        .expect("personalised");
    let body = parse(&own.v1_body("tok"));
    assert_eq!(
        body["message"]["data"],
        json!({"order": "42", "unread": "3"})
    );
    assert_eq!(
        body["message"]["android"]["notification"]["notification_count"],
        7
    );
    assert_eq!(body["message"]["apns"]["payload"]["aps"]["badge"], 7);
    // A data-only message stays one: the badge is a data key.
    let silent = data(br#"{"order":"42"}"#);
    let message = GoogleMessage::new(silent.clone()).expect("valid");
    let own = message
        .personalise(&silent.to_stored(), &personal)
        .expect("personalised");
    let body = parse(&own.v1_body("tok"));
    assert_eq!(body["message"]["data"]["badge"], "7");
    assert!(body["message"].get("android").is_none());
}
