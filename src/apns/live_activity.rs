//! Live Activity payloads (`apns-push-type: liveactivity`), checked as
//! ActivityKit reads them, so a payload the device would drop without a
//! word is a 400 naming the key instead. `/apns/send` takes the APNs payload
//! as Apple documents it, so every Live Activity key (`event`, `timestamp`,
//! `content-state`, `attributes-type`, `attributes`, `stale-date`,
//! `dismissal-date`, `relevance-score`, `input-push-token`,
//! `input-push-channel`) goes in `payload.aps`; broadcasts are checked by the
//! same rules, with the events a channel takes.

use serde_json::{Map, Value};

use crate::message::{FieldError, field_error};

/// Where a Live Activity push goes: which events it may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A device's push token (or push-to-start token): start, update, end.
    Device,
    /// A broadcast channel: update and end.
    Channel,
}

/// Checks a Live Activity payload (a JSON object holding `aps`).
pub fn check(payload: &[u8], via: Via) -> Result<(), FieldError> {
    let value: Value =
        serde_json::from_slice(payload).map_err(|e| bad(format!("not valid JSON ({e})")))?;
    let aps = value
        .as_object()
        .ok_or_else(|| bad("must be a JSON object"))?
        .get("aps")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("must hold an \"aps\" object"))?;
    check_aps(aps, via)
}

fn bad(problem: impl Into<String>) -> FieldError {
    field_error("payload", problem)
}

fn check_aps(aps: &Map<String, Value>, via: Via) -> Result<(), FieldError> {
    let event = aps.get("event").and_then(Value::as_str);
    match (via, event) {
        (Via::Device, Some("start" | "update" | "end"))
        | (Via::Channel, Some("update" | "end")) => {}
        (Via::Device, _) => return Err(bad("aps.event must be \"start\", \"update\" or \"end\"")),
        (Via::Channel, _) => return Err(bad("aps.event must be \"update\" or \"end\"")),
    }
    if !aps.get("timestamp").is_some_and(Value::is_u64) {
        return Err(bad("aps.timestamp must be a UNIX time in seconds"));
    }
    // An end may carry the final content; a start and an update must.
    let state = aps.get("content-state");
    let state_needed = via == Via::Channel || event != Some("end");
    if (state_needed || state.is_some()) && !state.is_some_and(Value::is_object) {
        return Err(bad("aps.content-state must be an object"));
    }
    for key in ["stale-date", "dismissal-date"] {
        if aps.get(key).is_some_and(|v| !v.is_u64()) {
            return Err(bad(format!("aps.{key} must be a UNIX time in seconds")));
        }
    }
    if aps.get("relevance-score").is_some_and(|v| !v.is_number()) {
        return Err(bad("aps.relevance-score must be a number"));
    }
    let start = event == Some("start");
    if start {
        if aps
            .get("attributes-type")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(bad(
                "aps.attributes-type must name the app's ActivityAttributes type for a start",
            ));
        }
        if !aps.get("attributes").is_some_and(Value::is_object) {
            return Err(bad("aps.attributes must be an object for a start"));
        }
    }
    for key in ["input-push-token", "input-push-channel"] {
        if aps.contains_key(key) && !start {
            return Err(bad(format!("aps.{key} belongs to a start event only")));
        }
    }
    if aps
        .get("input-push-token")
        .is_some_and(|v| v.as_u64() != Some(1))
    {
        return Err(bad(
            "aps.input-push-token must be 1 (the started activity sends its push token)",
        ));
    }
    if aps
        .get("input-push-channel")
        .is_some_and(|v| v.as_str().is_none_or(str::is_empty))
    {
        return Err(bad(
            "aps.input-push-channel must be a channel id (base64, as APNs returned it)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(payload: &str, via: Via) -> Option<String> {
        check(payload.as_bytes(), via).err().map(|e| e.problem)
    }

    #[test]
    fn a_start_needs_its_attributes_and_may_ask_for_a_token_or_a_channel() {
        let start = r#"{"aps":{"event":"start","timestamp":1700000000,"content-state":{"eta":5},
            "attributes-type":"RideAttributes","attributes":{"rider":"Ann"},
            "alert":{"title":"Ride","body":"On its way"},"input-push-token":1,"stale-date":1700003600}}"#;
        assert_eq!(problem(start, Via::Device), None);
        let channel = start.replace(
            r#""input-push-token":1"#,
            r#""input-push-channel":"dHJpcA==""#,
        );
        assert_eq!(problem(&channel, Via::Device), None);
        let untyped = start.replace(r#""attributes-type":"RideAttributes","#, "");
        assert!(problem(&untyped, Via::Device).is_some_and(|p| p.contains("attributes-type")));
        let token2 = start.replace(r#""input-push-token":1"#, r#""input-push-token":2"#);
        assert!(problem(&token2, Via::Device).is_some_and(|p| p.contains("input-push-token")));
        assert!(problem(start, Via::Channel).is_some_and(|p| p.contains("aps.event")));
    }

    #[test]
    fn updates_and_ends_are_held_to_what_activitykit_reads() {
        let update = r#"{"aps":{"event":"update","timestamp":1700000000,"content-state":{"eta":2},"relevance-score":75.5}}"#;
        assert_eq!(problem(update, Via::Device), None);
        assert_eq!(problem(update, Via::Channel), None);
        let end = r#"{"aps":{"event":"end","timestamp":1700000000,"dismissal-date":1700000600}}"#;
        assert_eq!(problem(end, Via::Device), None);
        assert!(problem(end, Via::Channel).is_some_and(|p| p.contains("content-state")));
        for (payload, key) in [
            (
                r#"{"aps":{"event":"update","content-state":{}}}"#,
                "timestamp",
            ),
            (
                r#"{"aps":{"event":"update","timestamp":1}}"#,
                "content-state",
            ),
            (
                r#"{"aps":{"event":"pause","timestamp":1,"content-state":{}}}"#,
                "event",
            ),
            (
                r#"{"aps":{"event":"update","timestamp":1,"content-state":{},"stale-date":"soon"}}"#,
                "stale-date",
            ),
            (
                r#"{"aps":{"event":"update","timestamp":1,"content-state":{},"input-push-token":1}}"#,
                "input-push-token",
            ),
            (
                r#"{"aps":{"event":"end","timestamp":1,"content-state":[]}}"#,
                "content-state",
            ),
            (r#"{"alert":"hi"}"#, "aps"),
        ] {
            assert!(
                problem(payload, Via::Device).is_some_and(|p| p.contains(key)),
                "{payload} should name {key}"
            );
        }
    }
}
