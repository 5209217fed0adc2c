//! Reading a block's JSON the way FCM's proto3 JSON parser does: a member
//! by its snake_case name or its lowerCamelCase one, each refusal naming the
//! dotted path of the member (`android.notification.color`), and the value
//! formats FCM documents (Duration, the analytics label, https links).

use std::time::Duration;

use serde_json::{Map, Value};

use crate::message::{FieldError, field_error};

/// One object of a block, at `path`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Obj<'a> {
    path: &'a str,
    map: &'a Map<String, Value>,
}

/// `direct_boot_ok` → `directBootOk`.
pub(crate) fn camel(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

impl<'a> Obj<'a> {
    /// The object `map`, found at `path`.
    pub(crate) fn new(path: &'a str, map: &'a Map<String, Value>) -> Self {
        Self { path, map }
    }

    /// The dotted path of member `name`.
    pub(crate) fn path_of(&self, name: &str) -> String {
        format!("{}.{name}", self.path)
    }

    /// A refusal of member `name`.
    pub(crate) fn error(&self, name: &str, problem: impl Into<String>) -> FieldError {
        field_error(self.path_of(name), problem)
    }

    /// Member `name` (snake_case) or its lowerCamelCase spelling; JSON
    /// `null` counts as absent, as it does to FCM.
    pub(crate) fn get(&self, name: &str) -> Option<&'a Value> {
        let value = match self.map.get(name) {
            Some(v) => Some(v),
            None if name.contains('_') => self.map.get(&camel(name)),
            None => None,
        };
        value.filter(|v| !v.is_null())
    }

    /// A string member.
    pub(crate) fn string(&self, name: &str) -> Result<Option<&'a str>, FieldError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.error(name, format!("must be a string, got {other}"))),
        }
    }

    /// Each of `names` is a string when given.
    pub(crate) fn strings_each(&self, names: &[&str]) -> Result<(), FieldError> {
        for name in names {
            self.string(name)?;
        }
        Ok(())
    }

    /// Each of `names` is `true` or `false` when given.
    pub(crate) fn booleans(&self, names: &[&str]) -> Result<(), FieldError> {
        for name in names {
            if let Some(v) = self.get(name)
                && !v.is_boolean()
            {
                return Err(self.error(name, format!("must be true or false, got {v}")));
            }
        }
        Ok(())
    }

    /// An object member.
    pub(crate) fn object(&self, name: &str) -> Result<Option<&'a Map<String, Value>>, FieldError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(other) => Err(self.error(name, format!("must be a JSON object, got {other}"))),
        }
    }

    /// An array of strings, when given.
    pub(crate) fn string_array(&self, name: &str) -> Result<Option<Vec<&'a str>>, FieldError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_str().ok_or_else(|| {
                        self.error(
                            &format!("{name}[{i}]"),
                            format!("must be a string, got {v}"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(other) => {
                Err(self.error(name, format!("must be an array of strings, got {other}")))
            }
        }
    }

    /// A `map<string, string>` member (FCM's `data`, `headers`): an object
    /// whose every value is a string.
    pub(crate) fn string_map(
        &self,
        name: &str,
    ) -> Result<Option<&'a Map<String, Value>>, FieldError> {
        let Some(map) = self.object(name)? else {
            return Ok(None);
        };
        for (key, value) in map {
            if !value.is_string() {
                return Err(self.error(
                    &format!("{name}.{key}"),
                    format!(
                        "must be a string (FCM takes {name} as string values only), got {value}"
                    ),
                ));
            }
        }
        Ok(Some(map))
    }

    /// A string member that must be one of `allowed` (an FCM enum).
    pub(crate) fn one_of(
        &self,
        name: &str,
        allowed: &[&str],
    ) -> Result<Option<&'a str>, FieldError> {
        match self.string(name)? {
            Some(s) if !allowed.contains(&s) => {
                Err(self.error(name, format!("{s:?} is not one of {}", allowed.join(", "))))
            }
            other => Ok(other),
        }
    }

    /// A Duration member (`"3.5s"`), at most `max` when given.
    pub(crate) fn duration(
        &self,
        name: &str,
        max: Option<Duration>,
    ) -> Result<Option<Duration>, FieldError> {
        let Some(text) = self.string(name)? else {
            return Ok(None);
        };
        let d = parse_duration(text).ok_or_else(|| {
            self.error(
                name,
                format!("{text:?} is not a duration: seconds with up to nine fractional digits and an \"s\", like \"3600s\" or \"3.5s\""),
            )
        })?;
        if let Some(max) = max
            && d > max
        {
            return Err(self.error(
                name,
                format!("{text} is longer than FCM's maximum of {}s", max.as_secs()),
            ));
        }
        Ok(Some(d))
    }
}

/// A protobuf Duration in its JSON form (`"3.5s"`, `"86400s"`): non-negative
/// seconds, at most nine fractional digits, an `s`.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let number = text.strip_suffix('s')?;
    let (secs, frac) = match number.split_once('.') {
        Some((s, f)) => (s, Some(f)),
        None => (number, None),
    };
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: u64 = secs.parse().ok()?;
    let nanos = match frac {
        None => 0,
        Some(f) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
            let padded = format!("{f:0<9}");
            padded.parse::<u32>().ok()?
        }
        Some(_) => return None,
    };
    Some(Duration::new(secs, nanos))
}

/// FCM's analytics label: `^[a-zA-Z0-9-_.~%]{1,50}$`.
pub(crate) fn is_analytics_label(label: &str) -> bool {
    (1..=50).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b))
}

/// An `fcm_options` object (the message's, `android.fcm_options`,
/// `apns.fcm_options` or `webpush.fcm_options`): its `analytics_label`
/// checked against FCM's pattern.
pub(crate) fn check_fcm_options(obj: Obj<'_>) -> Result<(), FieldError> {
    if let Some(label) = obj.string("analytics_label")?
        && !is_analytics_label(label)
    {
        return Err(obj.error(
            "analytics_label",
            format!("{label:?} does not match FCM's pattern ^[a-zA-Z0-9-_.~%]{{1,50}}$"),
        ));
    }
    Ok(())
}

/// An absolute `https://` URL with a host (FCM: "For all URL values, HTTPS
/// is required").
pub(crate) fn is_https_url(text: &str) -> bool {
    url::Url::parse(text).is_ok_and(|u| u.scheme() == "https" && u.host().is_some())
}

/// Parses a block's JSON text as an object.
pub(crate) fn parse_object(
    field: &'static str,
    bytes: &[u8],
) -> Result<Map<String, Value>, FieldError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(field_error(field, "must be a JSON object")),
        Err(e) => Err(field_error(field, format!("not valid JSON ({e})"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_are_protobuf_json() {
        assert_eq!(parse_duration("3600s"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("3.5s"), Some(Duration::from_millis(3500)));
        assert_eq!(
            parse_duration("0.000000001s"),
            Some(Duration::from_nanos(1))
        );
        for bad in [
            "3600",
            "s",
            "-1s",
            "1.s",
            ".5s",
            "1.0000000001s",
            "1 s",
            "1e3s",
            "PT1S",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn analytics_labels_follow_fcms_pattern() {
        for good in ["a", "campaign-1_x.y~z%20", &"a".repeat(50)] {
            assert!(is_analytics_label(good), "{good:?}");
        }
        for bad in ["", "has space", "é", "a/b", &"a".repeat(51)] {
            assert!(!is_analytics_label(bad), "{bad:?}");
        }
    }

    #[test]
    fn members_are_found_in_either_spelling_and_errors_name_the_path() {
        let map = json!({"directBootOk": true, "ttl": 5, "data": {"a": 1}})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let obj = Obj::new("android", &map);
        assert_eq!(obj.get("direct_boot_ok"), Some(&json!(true)));
        assert_eq!(
            obj.string("ttl").expect_err("a number").field,
            "android.ttl"
        );
        assert_eq!(
            obj.string_map("data").expect_err("a number").field,
            "android.data.a"
        );
        assert_eq!(camel("bandwidth_constrained_ok"), "bandwidthConstrainedOk");
    }
}
