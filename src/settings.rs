//! Per-service meeting settings (`services.meeting_settings`), validated before any platform call.
//!
//! Owns the accepted keys and the title template. Pure: no I/O. An unknown key or placeholder is an
//! error sentence the provider can act on, recorded in `bookings.meeting_error`.

use serde_json::Value;

/// The keys a service may set, for every platform.
pub const KEYS: [&str; 2] = ["title", "description"];

const PLACEHOLDERS: [&str; 3] = ["service", "customer", "provider"];

/// What `{service}` stands for when the service has no title.
pub const UNTITLED_SERVICE: &str = "Online meeting";

/// Default event title.
pub const DEFAULT_TITLE: &str = "{service} with {customer}";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeetingSettings {
    /// Title template with `{service}`, `{customer}`, `{provider}`.
    pub title: Option<String>,
    /// Event description (replaces the service's description).
    pub description: Option<String>,
}

/// Names the title template can use.
pub struct TitleContext<'a> {
    pub service: &'a str,
    pub customer: &'a str,
    pub provider: &'a str,
}

pub fn parse(value: &Value) -> Result<MeetingSettings, String> {
    let object = match value {
        Value::Null => return Ok(MeetingSettings::default()),
        Value::Object(o) => o,
        _ => return Err("The service's meeting settings must be a JSON object.".into()),
    };
    let unknown: Vec<&str> = object.keys().map(String::as_str).filter(|k| !KEYS.contains(k)).collect();
    if !unknown.is_empty() {
        return Err(format!(
            "The service's meeting settings have unknown keys ({}); the keys allowed are {}.",
            unknown.join(", "),
            KEYS.join(", ")
        ));
    }
    let text = |key: &str, max: usize| -> Result<Option<String>, String> {
        match object.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.chars().count() <= max => Ok(Some(s.clone())),
            Some(Value::String(_)) => Err(format!("The meeting setting \"{key}\" is longer than {max} characters.")),
            Some(_) => Err(format!("The meeting setting \"{key}\" must be text.")),
        }
    };
    let title = text("title", 300)?;
    if let Some(t) = &title {
        check_template(t)?;
    }
    Ok(MeetingSettings { title, description: text("description", 8000)? })
}

fn check_template(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or("The meeting title template has a \"{\" without a closing \"}\".")?;
        let name = &after[..close];
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "The meeting title template uses {{{name}}}; the placeholders available are {{service}}, {{customer}} and {{provider}}."
            ));
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

impl MeetingSettings {
    pub fn title(&self, ctx: &TitleContext<'_>) -> String {
        self.title
            .as_deref()
            .unwrap_or(DEFAULT_TITLE)
            .replace("{service}", ctx.service)
            .replace("{customer}", ctx.customer)
            .replace("{provider}", ctx.provider)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CTX: TitleContext<'static> = TitleContext { service: "Yoga", customer: "Sam", provider: "Dana" };

    #[test]
    fn defaults_and_templates() {
        assert_eq!(parse(&json!({})).unwrap().title(&CTX), "Yoga with Sam");
        let s = parse(&json!({"title": "{provider} × {customer}: {service}", "description": "Bring a mat"})).unwrap();
        assert_eq!(s.title(&CTX), "Dana × Sam: Yoga");
        assert_eq!(s.description.as_deref(), Some("Bring a mat"));
        assert_eq!(parse(&Value::Null).unwrap(), MeetingSettings::default());
    }

    #[test]
    fn unknown_keys_and_placeholders_are_rejected_clearly() {
        let e = parse(&json!({"title": "x", "waiting_room": true})).unwrap_err();
        assert!(e.contains("unknown keys (waiting_room)"), "{e}");
        let e = parse(&json!({"title": "{room}"})).unwrap_err();
        assert!(e.contains("{room}"), "{e}");
        assert!(parse(&json!({"title": "open {"})).is_err());
        assert!(parse(&json!({"title": 5})).unwrap_err().contains("must be text"));
        assert!(parse(&json!([1])).is_err());
    }
}
