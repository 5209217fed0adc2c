//! FCM v1's per-platform blocks and options on a message: `android`
//! (`AndroidConfig`), `apns` (`ApnsConfig`, iOS apps on FCM), `webpush`
//! (`WebpushConfig`) and `fcm_options` (`FcmOptions`). Each is passed
//! through as the sender wrote it and checked only where FCM (or the
//! platform behind it) documents a rule ([`android`], [`apns`],
//! [`webpush`]), so a message FCM would refuse for every token is refused
//! once, before anything is queued, naming the member.
//!
//! Built here, not in the `/fcm/send` reader, so every front that makes an
//! FCM v1 message (`/fcm/send`, the coming `POST /send`) checks and places
//! them the same way: [`Blocks::new`] from parsed objects, [`BlockFields`]
//! from a body's JSON text, [`Blocks::write`] into the v1 `message`.
//! Legacy GCM has none of them: a request with a block is refused there.

pub mod android;
pub mod apns;
mod check;
pub mod webpush;

use std::time::Duration;

use serde_json::{Map, Value};

use self::check::{Obj, check_fcm_options};
use crate::message::{FieldError, field_error};

pub(crate) use self::check::parse_object;

/// The blocks of one message, checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Blocks {
    android: Option<Map<String, Value>>,
    apns: Option<Map<String, Value>>,
    webpush: Option<Map<String, Value>>,
    fcm_options: Option<Map<String, Value>>,
    /// `android.ttl`, when given.
    android_ttl: Option<Duration>,
}

/// The blocks as a body carries them: each the JSON text of an object.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BlockFields<'a> {
    /// `android`.
    pub android: Option<&'a [u8]>,
    /// `apns`.
    pub apns: Option<&'a [u8]>,
    /// `webpush`.
    pub webpush: Option<&'a [u8]>,
    /// `fcm_options`.
    pub fcm_options: Option<&'a [u8]>,
}

impl BlockFields<'_> {
    /// The name of the first block given, if any (legacy GCM refuses them).
    pub fn first_given(&self) -> Option<&'static str> {
        [
            ("android", self.android),
            ("apns", self.apns),
            ("webpush", self.webpush),
            ("fcm_options", self.fcm_options),
        ]
        .into_iter()
        .find_map(|(name, given)| given.map(|_| name))
    }

    /// Parses and checks every block given.
    pub fn parse(&self) -> Result<Blocks, FieldError> {
        let object =
            |field, bytes: Option<&[u8]>| bytes.map(|b| parse_object(field, b)).transpose();
        Blocks::new(
            object("android", self.android)?,
            object("apns", self.apns)?,
            object("webpush", self.webpush)?,
            object("fcm_options", self.fcm_options)?,
        )
    }
}

impl Blocks {
    /// Checks the blocks (each rule of [`android`], [`apns`], [`webpush`];
    /// `fcm_options.analytics_label` against FCM's pattern).
    pub fn new(
        android: Option<Map<String, Value>>,
        apns: Option<Map<String, Value>>,
        webpush: Option<Map<String, Value>>,
        fcm_options: Option<Map<String, Value>>,
    ) -> Result<Self, FieldError> {
        let android_ttl = match &android {
            Some(a) => android::check(a)?,
            None => None,
        };
        if let Some(a) = &apns {
            apns::check(a)?;
        }
        if let Some(w) = &webpush {
            webpush::check(w)?;
        }
        if let Some(o) = &fcm_options {
            check_fcm_options(Obj::new("fcm_options", o))?;
        }
        Ok(Self {
            android,
            apns,
            webpush,
            fcm_options,
            android_ttl,
        })
    }

    /// No block given.
    pub fn is_empty(&self) -> bool {
        self.android.is_none()
            && self.apns.is_none()
            && self.webpush.is_none()
            && self.fcm_options.is_none()
    }

    /// A block that makes the message show or carry something by itself
    /// (`fcm_options` alone does not).
    pub fn carries_content(&self) -> bool {
        self.android.is_some() || self.apns.is_some() || self.webpush.is_some()
    }

    /// `android.ttl`, when given: what FCM keeps the message for, and so the
    /// gateway's own deadline.
    pub fn android_ttl(&self) -> Option<Duration> {
        self.android_ttl
    }

    /// Writes the blocks into a v1 `message` object. `android` goes over
    /// what the request's own fields put there (`collapse_key`, `priority`,
    /// `time_to_live`, the Android keys of `notification`): the block wins
    /// member by member, and `android.notification` is merged one level
    /// deeper, so `{"notification": {"color": …}}` keeps the title's
    /// placement. The others are written as given.
    pub fn write(&self, message: &mut Map<String, Value>) {
        if let Some(block) = &self.android {
            let android = message
                .entry("android")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(android) = android {
                merge(android, block);
            }
        }
        for (name, block) in [
            ("apns", &self.apns),
            ("webpush", &self.webpush),
            ("fcm_options", &self.fcm_options),
        ] {
            if let Some(block) = block {
                message.insert(name.into(), Value::Object(block.clone()));
            }
        }
    }

    /// The blocks as JSON text, for the stored message.
    pub fn to_texts(&self) -> [(&'static str, Option<String>); 4] {
        let text = |b: &Option<Map<String, Value>>| {
            b.as_ref().map(|m| Value::Object(m.clone()).to_string())
        };
        [
            ("android", text(&self.android)),
            ("apns", text(&self.apns)),
            ("webpush", text(&self.webpush)),
            ("fcm_options", text(&self.fcm_options)),
        ]
    }
}

/// `block` over `base`, member by member; `notification` one level deeper.
fn merge(base: &mut Map<String, Value>, block: &Map<String, Value>) {
    for (key, value) in block {
        match (base.get_mut(key), value) {
            (Some(Value::Object(inner)), Value::Object(over)) if key == "notification" => {
                for (k, v) in over {
                    inner.insert(k.clone(), v.clone());
                }
            }
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

/// The refusal of a block on legacy GCM, which has no such field.
pub fn legacy_refusal(block: &'static str) -> FieldError {
    field_error(
        block,
        "is an FCM HTTP v1 field; this gateway delivers Google messages through the legacy [gcm] API, which has none (configure [fcm] to use it)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(v: Value) -> Option<Map<String, Value>> {
        v.as_object().cloned()
    }

    #[test]
    fn android_goes_over_the_fields_and_the_rest_as_given() {
        let blocks = Blocks::new(
            object(json!({"priority": "NORMAL", "direct_boot_ok": true,
                          "notification": {"visibility": "PUBLIC"}})),
            object(json!({"headers": {"apns-priority": "5"}})),
            object(json!({"fcm_options": {"link": "https://example.com"}})),
            object(json!({"analytics_label": "l"})),
        )
        .expect("valid");
        let mut message = object(json!({
            "notification": {"title": "t"},
            "android": {"priority": "HIGH", "ttl": "60s", "notification": {"color": "#000000"}}
        }))
        .expect("an object");
        blocks.write(&mut message);
        assert_eq!(
            Value::Object(message),
            json!({
                "notification": {"title": "t"},
                "android": {"priority": "NORMAL", "ttl": "60s", "direct_boot_ok": true,
                            "notification": {"color": "#000000", "visibility": "PUBLIC"}},
                "apns": {"headers": {"apns-priority": "5"}},
                "webpush": {"fcm_options": {"link": "https://example.com"}},
                "fcm_options": {"analytics_label": "l"}
            })
        );
    }

    #[test]
    fn fields_parse_and_name_the_bad_block() {
        let fields = BlockFields {
            android: Some(br#"{"ttl":"90s"}"#),
            fcm_options: Some(br#"{"analytics_label":"x y"}"#),
            ..BlockFields::default()
        };
        assert_eq!(fields.first_given(), Some("android"));
        assert_eq!(
            fields.parse().expect_err("bad label").field,
            "fcm_options.analytics_label"
        );
        let fields = BlockFields {
            android: Some(br#"{"ttl":"90s"}"#),
            ..BlockFields::default()
        };
        assert_eq!(
            fields.parse().expect("valid").android_ttl(),
            Some(Duration::from_secs(90))
        );
        let bad = BlockFields {
            webpush: Some(b"[1]"),
            ..BlockFields::default()
        };
        assert_eq!(bad.parse().expect_err("not an object").field, "webpush");
        assert!(BlockFields::default().parse().expect("none").is_empty());
    }
}
