//! `android`: FCM v1's `AndroidConfig`, passed through as given and checked
//! only where FCM documents a rule, so a request FCM would refuse for every
//! token is refused once, up front, naming the member. Unknown members go
//! through untouched (FCM adds fields; the gateway must not lag behind).
//!
//! | member | rule |
//! |---|---|
//! | `priority` | `NORMAL` or `HIGH` |
//! | `ttl` | a Duration (`"3600s"`, `"3.5s"`), at most 4 weeks |
//! | `collapse_key`, `restricted_package_name` | strings |
//! | `data` | string values only |
//! | `direct_boot_ok`, `bandwidth_constrained_ok`, `restricted_satellite_ok` | booleans |
//! | `fcm_options.analytics_label` | `^[a-zA-Z0-9-_.~%]{1,50}$` |
//! | `notification.color` | `#rrggbb` |
//! | `notification.notification_priority` | `PRIORITY_UNSPECIFIED`, `PRIORITY_MIN`, `PRIORITY_LOW`, `PRIORITY_DEFAULT`, `PRIORITY_HIGH`, `PRIORITY_MAX` |
//! | `notification.visibility` | `VISIBILITY_UNSPECIFIED`, `PRIVATE`, `PUBLIC`, `SECRET` |
//! | `notification.proxy` | `PROXY_UNSPECIFIED`, `ALLOW`, `DENY`, `IF_PRIORITY_LOWERED` |
//! | `notification.event_time` | an RFC 3339 time |
//! | `notification.notification_count` | an integer, 0 or more |
//! | `notification.vibrate_timings` | Durations |
//! | `notification.light_settings` | `color` (`red`, `green`, `blue`, `alpha` in 0..=1), `light_on_duration` and `light_off_duration` (Durations), all three required |
//! | `notification.*` text members, `*_loc_args` | strings, arrays of strings |
//! | `notification.sticky`, `local_only`, `default_sound`, `default_vibrate_timings`, `default_light_settings`, `bypass_proxy_notification` | booleans |

use std::time::Duration;

use serde_json::{Map, Value};

use super::check::{Obj, check_fcm_options};
use crate::message::FieldError;

/// FCM's longest (and default) time to live: 4 weeks.
pub const MAX_TTL: Duration = Duration::from_secs(2_419_200);

const NOTIFICATION_TEXT: [&str; 12] = [
    "title",
    "body",
    "icon",
    "sound",
    "tag",
    "click_action",
    "body_loc_key",
    "title_loc_key",
    "channel_id",
    "ticker",
    "image",
    "color",
];

const NOTIFICATION_FLAGS: [&str; 6] = [
    "sticky",
    "local_only",
    "default_sound",
    "default_vibrate_timings",
    "default_light_settings",
    "bypass_proxy_notification",
];

/// Checks an `android` block; returns its `ttl`, when given (the gateway's
/// own deadline follows it).
pub fn check(android: &Map<String, Value>) -> Result<Option<Duration>, FieldError> {
    let obj = Obj::new("android", android);
    obj.one_of("priority", &["NORMAL", "HIGH"])?;
    let ttl = obj.duration("ttl", Some(MAX_TTL))?;
    obj.strings_each(&["collapse_key", "restricted_package_name"])?;
    obj.string_map("data")?;
    obj.booleans(&[
        "direct_boot_ok",
        "bandwidth_constrained_ok",
        "restricted_satellite_ok",
    ])?;
    if let Some(options) = obj.object("fcm_options")? {
        check_fcm_options(Obj::new("android.fcm_options", options))?;
    }
    if let Some(notification) = obj.object("notification")? {
        check_notification(Obj::new("android.notification", notification))?;
    }
    Ok(ttl)
}

fn check_notification(n: Obj<'_>) -> Result<(), FieldError> {
    n.strings_each(&NOTIFICATION_TEXT)?;
    n.booleans(&NOTIFICATION_FLAGS)?;
    n.string_array("body_loc_args")?;
    n.string_array("title_loc_args")?;
    if let Some(color) = n.string("color")?
        && !is_rgb(color)
    {
        return Err(n.error("color", format!("{color:?} is not #rrggbb")));
    }
    n.one_of(
        "notification_priority",
        &[
            "PRIORITY_UNSPECIFIED",
            "PRIORITY_MIN",
            "PRIORITY_LOW",
            "PRIORITY_DEFAULT",
            "PRIORITY_HIGH",
            "PRIORITY_MAX",
        ],
    )?;
    n.one_of(
        "visibility",
        &["VISIBILITY_UNSPECIFIED", "PRIVATE", "PUBLIC", "SECRET"],
    )?;
    n.one_of(
        "proxy",
        &["PROXY_UNSPECIFIED", "ALLOW", "DENY", "IF_PRIORITY_LOWERED"],
    )?;
    if let Some(at) = n.string("event_time")?
        && time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).is_err()
    {
        return Err(n.error(
            "event_time",
            format!("{at:?} is not an RFC 3339 time like \"2026-01-02T15:04:05Z\""),
        ));
    }
    if let Some(count) = n.get("notification_count")
        && !count.is_u64()
    {
        return Err(n.error(
            "notification_count",
            format!("must be an integer, 0 or more, got {count}"),
        ));
    }
    if let Some(timings) = n.string_array("vibrate_timings")? {
        for (i, t) in timings.iter().enumerate() {
            if super::check::parse_duration(t).is_none() {
                return Err(n.error(
                    &format!("vibrate_timings[{i}]"),
                    format!("{t:?} is not a duration like \"0.5s\""),
                ));
            }
        }
    }
    if let Some(light) = n.object("light_settings")? {
        check_light(Obj::new("android.notification.light_settings", light))?;
    }
    Ok(())
}

/// `light_settings`: FCM requires all three members.
fn check_light(light: Obj<'_>) -> Result<(), FieldError> {
    let Some(color) = light.object("color")? else {
        return Err(light.error(
            "color",
            "is required: {\"red\",\"green\",\"blue\",\"alpha\"} in 0..=1",
        ));
    };
    let color = Obj::new("android.notification.light_settings.color", color);
    for part in ["red", "green", "blue", "alpha"] {
        if let Some(v) = color.get(part)
            && !v.as_f64().is_some_and(|x| (0.0..=1.0).contains(&x))
        {
            return Err(color.error(part, format!("must be a number in 0..=1, got {v}")));
        }
    }
    for name in ["light_on_duration", "light_off_duration"] {
        if light.duration(name, None)?.is_none() {
            return Err(light.error(name, "is required: a duration like \"0.5s\""));
        }
    }
    Ok(())
}

/// `#rrggbb`.
fn is_rgb(color: &str) -> bool {
    color.len() == 7 && color.starts_with('#') && color[1..].bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn android(v: Value) -> Result<Option<Duration>, FieldError> {
        check(v.as_object().expect("an object"))
    }

    #[test]
    fn the_documented_members_pass_and_unknown_ones_go_through() {
        let ttl = android(json!({
            "priority": "HIGH", "ttl": "3.5s", "collapse_key": "c",
            "direct_boot_ok": true, "bandwidthConstrainedOk": false, "restricted_satellite_ok": true,
            "data": {"k": "v"}, "fcm_options": {"analytics_label": "spring-sale"},
            "notification": {
                "title": "t", "color": "#a0B1c2", "visibility": "SECRET",
                "notification_priority": "PRIORITY_MAX", "proxy": "DENY",
                "event_time": "2026-01-02T15:04:05.5+01:00", "notification_count": 3,
                "vibrate_timings": ["0.5s", "1s"], "sticky": true, "title_loc_args": ["a"],
                "light_settings": {"color": {"red": 1, "green": 0.5, "blue": 0},
                                   "light_on_duration": "1s", "light_off_duration": "0.5s"},
                "a_future_member": {"anything": [1]}
            },
            "a_future_member": 1
        }))
        .expect("valid");
        assert_eq!(ttl, Some(Duration::from_millis(3500)));
    }

    #[test]
    fn each_documented_rule_names_its_member() {
        for (block, field) in [
            (json!({"priority": "high"}), "android.priority"),
            (json!({"ttl": 3600}), "android.ttl"),
            (json!({"ttl": "3600"}), "android.ttl"),
            (json!({"ttl": "2419201s"}), "android.ttl"),
            (json!({"data": {"n": 1}}), "android.data.n"),
            (json!({"direct_boot_ok": "yes"}), "android.direct_boot_ok"),
            (
                json!({"restrictedSatelliteOk": 1}),
                "android.restricted_satellite_ok",
            ),
            (
                json!({"bandwidth_constrained_ok": null, "collapse_key": 5}),
                "android.collapse_key",
            ),
            (
                json!({"fcm_options": {"analytics_label": "no spaces"}}),
                "android.fcm_options.analytics_label",
            ),
            (
                json!({"notification": {"visibility": "HIDDEN"}}),
                "android.notification.visibility",
            ),
            (
                json!({"notification": {"notificationPriority": "MAX"}}),
                "android.notification.notification_priority",
            ),
            (
                json!({"notification": {"proxy": "allow"}}),
                "android.notification.proxy",
            ),
            (
                json!({"notification": {"color": "red"}}),
                "android.notification.color",
            ),
            (
                json!({"notification": {"event_time": "yesterday"}}),
                "android.notification.event_time",
            ),
            (
                json!({"notification": {"notification_count": -1}}),
                "android.notification.notification_count",
            ),
            (
                json!({"notification": {"vibrate_timings": ["1"]}}),
                "android.notification.vibrate_timings[0]",
            ),
            (
                json!({"notification": {"sticky": "true"}}),
                "android.notification.sticky",
            ),
            (
                json!({"notification": {"body_loc_args": [1]}}),
                "android.notification.body_loc_args[0]",
            ),
            (
                json!({"notification": {"light_settings": {"light_on_duration": "1s", "light_off_duration": "1s"}}}),
                "android.notification.light_settings.color",
            ),
            (
                json!({"notification": {"light_settings": {"color": {"red": 2}, "light_on_duration": "1s", "light_off_duration": "1s"}}}),
                "android.notification.light_settings.color.red",
            ),
            (
                json!({"notification": {"light_settings": {"color": {}, "light_on_duration": "1s"}}}),
                "android.notification.light_settings.light_off_duration",
            ),
            (json!({"notification": "text"}), "android.notification"),
        ] {
            match android(block.clone()) {
                Err(e) => assert_eq!(e.field, field, "{block}"),
                Ok(_) => panic!("{block} passed"),
            }
        }
    }
}
