//! FCM topic names and topic conditions, checked the way FCM checks them so a
//! bad one is a 400 at the API instead of a failed job.
//!
//! - A topic name matches `[a-zA-Z0-9-_.~%]+` (an optional `/topics/` prefix,
//!   which the legacy API and the Admin SDKs accept, is stripped).
//! - A condition is a boolean expression over at most five
//!   `'<topic>' in topics` terms with `&&`, `||`, `!` and parentheses, e.g.
//!   `'stock-GOOG' in topics && ('news' in topics || 'sports' in topics)`.

use std::borrow::Cow;

use super::message::Target;
use crate::platform::RequestError;

/// Most topics one condition may name (FCM's limit).
pub const MAX_CONDITION_TOPICS: usize = 5;

/// Longest topic name accepted.
pub const MAX_TOPIC_LEN: usize = 900;

/// Why a topic or condition is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The name has a character outside `[a-zA-Z0-9-_.~%]`, or is empty or too long.
    #[error("topic name {0:?} must match [a-zA-Z0-9-_.~%]+ (at most 900 characters)")]
    BadName(String),
    /// The condition is not a valid expression.
    #[error(
        "condition is not valid: {0} (write e.g. \"'a' in topics && ('b' in topics || 'c' in topics)\")"
    )]
    BadCondition(String),
}

/// Checks a topic name and returns it without a `/topics/` prefix.
pub fn check_topic(name: &str) -> Result<&str, TopicError> {
    let bare = name.strip_prefix("/topics/").unwrap_or(name);
    let ok = !bare.is_empty()
        && bare.len() <= MAX_TOPIC_LEN
        && bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b));
    if ok {
        Ok(bare)
    } else {
        Err(TopicError::BadName(name.to_owned()))
    }
}

/// Checks a condition's syntax and the topic names it mentions.
pub fn check_condition(condition: &str) -> Result<(), TopicError> {
    let tokens = lex(condition)?;
    let topics = tokens.iter().filter(|t| matches!(t, Tok::Topic)).count();
    if topics == 0 {
        return Err(TopicError::BadCondition("it names no topic".into()));
    }
    if topics > MAX_CONDITION_TOPICS {
        return Err(TopicError::BadCondition(format!(
            "it names {topics} topics; FCM allows at most {MAX_CONDITION_TOPICS}"
        )));
    }
    let mut parser = Parser { tokens, at: 0 };
    parser.or()?;
    if parser.at != parser.tokens.len() {
        return Err(TopicError::BadCondition(
            "unexpected text after the expression".into(),
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    /// `'name' in topics`.
    Topic,
    And,
    Or,
    Not,
    Open,
    Close,
}

fn lex(text: &str) -> Result<Vec<Tok>, TopicError> {
    let bad = |m: &str| TopicError::BadCondition(m.to_owned());
    let mut out = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let (tok, after) = if let Some(r) = rest.strip_prefix("&&") {
            (Tok::And, r)
        } else if let Some(r) = rest.strip_prefix("||") {
            (Tok::Or, r)
        } else if let Some(r) = rest.strip_prefix('!') {
            (Tok::Not, r)
        } else if let Some(r) = rest.strip_prefix('(') {
            (Tok::Open, r)
        } else if let Some(r) = rest.strip_prefix(')') {
            (Tok::Close, r)
        } else if let Some(quote) = rest.chars().next().filter(|c| *c == '\'' || *c == '"') {
            let inner = &rest[1..];
            let end = inner
                .find(quote)
                .ok_or_else(|| bad("a topic name's quote is not closed"))?;
            check_topic(&inner[..end])?;
            let after = inner[end + 1..].trim_start();
            let after = after
                .strip_prefix("in")
                .map(str::trim_start)
                .and_then(|a| a.strip_prefix("topics"))
                .ok_or_else(|| bad("a quoted topic must be followed by `in topics`"))?;
            (Tok::Topic, after)
        } else {
            return Err(bad(&format!(
                "unexpected {:?}",
                rest.chars().take(12).collect::<String>()
            )));
        };
        out.push(tok);
        rest = after.trim_start();
    }
    Ok(out)
}

/// `or := and ('||' and)*`, `and := unary ('&&' unary)*`,
/// `unary := '!' unary | '(' or ')' | topic`.
struct Parser {
    tokens: Vec<Tok>,
    at: usize,
}

impl Parser {
    fn next(&mut self) -> Option<Tok> {
        let t = self.tokens.get(self.at).copied();
        self.at += 1;
        t
    }

    fn peek(&self) -> Option<Tok> {
        self.tokens.get(self.at).copied()
    }

    fn or(&mut self) -> Result<(), TopicError> {
        self.and()?;
        while self.peek() == Some(Tok::Or) {
            self.at += 1;
            self.and()?;
        }
        Ok(())
    }

    fn and(&mut self) -> Result<(), TopicError> {
        self.unary()?;
        while self.peek() == Some(Tok::And) {
            self.at += 1;
            self.unary()?;
        }
        Ok(())
    }

    fn unary(&mut self) -> Result<(), TopicError> {
        match self.next() {
            Some(Tok::Not) => self.unary(),
            Some(Tok::Topic) => Ok(()),
            Some(Tok::Open) => {
                self.or()?;
                match self.next() {
                    Some(Tok::Close) => Ok(()),
                    _ => Err(TopicError::BadCondition("a `(` is not closed".into())),
                }
            }
            _ => Err(TopicError::BadCondition(
                "an operator is missing its topic".into(),
            )),
        }
    }
}

/// Reads the target of a Google send: `None` for device tokens; for a topic
/// or a condition its kind and the one "token" the job carries. Tokens,
/// topic and condition are mutually exclusive (an empty one counts as absent).
pub fn target<'a>(
    topic: Option<&'a str>,
    condition: Option<&'a str>,
    tokens: &[Cow<'_, str>],
) -> Result<Option<(Target, Cow<'a, str>)>, RequestError> {
    let topic = topic.filter(|t| !t.is_empty());
    let condition = condition.filter(|c| !c.trim().is_empty());
    let bad = |field: &str, m: String| {
        RequestError::bad("bad_field", m).with(serde_json::json!({ "field": field }))
    };
    match (topic, condition) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(bad(
            "topic",
            "give either \"topic\" or \"condition\", not both".into(),
        )),
        (Some(_), None) | (None, Some(_)) if !tokens.is_empty() => Err(bad(
            "tokens",
            "a topic or condition send goes to the topic's subscribers: leave \"tokens\" out"
                .into(),
        )),
        (Some(topic), None) => {
            let bare = check_topic(topic).map_err(|e| bad("topic", e.to_string()))?;
            Ok(Some((Target::Topic, Cow::Borrowed(bare))))
        }
        (None, Some(condition)) => {
            check_condition(condition).map_err(|e| bad("condition", e.to_string()))?;
            Ok(Some((Target::Condition, Cow::Borrowed(condition))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_fcm() {
        assert_eq!(check_topic("news"), Ok("news"));
        assert_eq!(check_topic("/topics/a-b_c.d~e%20"), Ok("a-b_c.d~e%20"));
        for bad in [
            "",
            "/topics/",
            "has space",
            "sl/ash",
            "ünï",
            &"x".repeat(901),
        ] {
            assert!(check_topic(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn conditions_parse_like_fcm() {
        for good in [
            "'a' in topics",
            "'a' in topics && 'b' in topics",
            "'stock-GOOG' in topics && ('news' in topics || 'sports' in topics)",
            "!('a' in topics) || \"b\" in topics",
        ] {
            assert_eq!(check_condition(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "'a' in topics &&",
            "('a' in topics",
            "'a' in topics 'b' in topics",
            "'a b' in topics",
            "'a' in",
            "a in topics",
            "'a' in topics && 'b' in topics && 'c' in topics && 'd' in topics && 'e' in topics && 'f' in topics",
        ] {
            assert!(check_condition(bad).is_err(), "{bad}");
        }
    }
}
