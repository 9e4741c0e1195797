//! Per-service meeting settings (`services.meeting_settings`), validated before any platform call.
//!
//! Owns the accepted keys, the title template and the platform-neutral meeting options
//! ([`MeetingOption`], [`MeetingOptions`]); which options a platform honours is its provider's
//! to say (`MeetingProvider::supported_options`). Pure: no I/O. An unknown key, a value of the
//! wrong type or an unknown placeholder is an error sentence the provider can act on, recorded in
//! `bookings.meeting_error`.

use serde_json::Value;

/// The keys a service may set, for every platform.
pub const KEYS: [&str; 6] = ["title", "description", "waiting_room", "recording", "passcode", "mute_on_entry"];

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
    pub options: MeetingOptions,
}

/// A platform-neutral meeting option, named by its key in `services.meeting_settings`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MeetingOption {
    /// `waiting_room`: participants wait until the host admits them.
    WaitingRoom,
    /// `recording`: whether and where the meeting is recorded automatically.
    Recording,
    /// `passcode`: the meeting gets a generated passcode (carried in its link).
    Passcode,
    /// `mute_on_entry`: participants join muted.
    MuteOnEntry,
}

impl MeetingOption {
    pub const ALL: [MeetingOption; 4] =
        [MeetingOption::WaitingRoom, MeetingOption::Recording, MeetingOption::Passcode, MeetingOption::MuteOnEntry];

    /// The key in `services.meeting_settings`.
    pub fn as_str(self) -> &'static str {
        match self {
            MeetingOption::WaitingRoom => "waiting_room",
            MeetingOption::Recording => "recording",
            MeetingOption::Passcode => "passcode",
            MeetingOption::MuteOnEntry => "mute_on_entry",
        }
    }
}

/// The `recording` option's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recording {
    None,
    /// On the host's computer.
    Local,
    /// In the platform's cloud.
    Cloud,
}

impl Recording {
    pub const ALL: [Recording; 3] = [Recording::None, Recording::Local, Recording::Cloud];

    pub fn as_str(self) -> &'static str {
        match self {
            Recording::None => "none",
            Recording::Local => "local",
            Recording::Cloud => "cloud",
        }
    }
}

/// The meeting options a service set. `None`: not set, so the platform account's default applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MeetingOptions {
    pub waiting_room: Option<bool>,
    pub recording: Option<Recording>,
    pub passcode: Option<bool>,
    pub mute_on_entry: Option<bool>,
}

impl MeetingOptions {
    /// The options the service set (to any value), in [`MeetingOption::ALL`]'s order.
    pub fn set(&self) -> Vec<MeetingOption> {
        MeetingOption::ALL.into_iter().filter(|o| self.is_set(*o)).collect()
    }

    pub fn is_set(&self, option: MeetingOption) -> bool {
        match option {
            MeetingOption::WaitingRoom => self.waiting_room.is_some(),
            MeetingOption::Recording => self.recording.is_some(),
            MeetingOption::Passcode => self.passcode.is_some(),
            MeetingOption::MuteOnEntry => self.mute_on_entry.is_some(),
        }
    }

    /// The options set that a platform honouring `supported` ignores.
    pub fn unsupported(&self, supported: &[MeetingOption]) -> Vec<MeetingOption> {
        self.set().into_iter().filter(|o| !supported.contains(o)).collect()
    }
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
    Ok(MeetingSettings { title, description: text("description", 8000)?, options: options(object)? })
}

fn options(object: &serde_json::Map<String, Value>) -> Result<MeetingOptions, String> {
    let flag = |option: MeetingOption| -> Result<Option<bool>, String> {
        let key = option.as_str();
        match object.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(format!("The meeting setting \"{key}\" must be true or false.")),
        }
    };
    let recording = match object.get(MeetingOption::Recording.as_str()) {
        None | Some(Value::Null) => None,
        Some(value) => {
            Some(Recording::ALL.into_iter().find(|r| value.as_str() == Some(r.as_str())).ok_or_else(|| {
                "The meeting setting \"recording\" must be \"none\", \"local\" or \"cloud\".".to_string()
            })?)
        }
    };
    Ok(MeetingOptions {
        waiting_room: flag(MeetingOption::WaitingRoom)?,
        recording,
        passcode: flag(MeetingOption::Passcode)?,
        mute_on_entry: flag(MeetingOption::MuteOnEntry)?,
    })
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
        let e = parse(&json!({"title": "x", "waiting_room": true, "lobby": true})).unwrap_err();
        assert!(e.contains("unknown keys (lobby)"), "{e}");
        assert!(e.contains("waiting_room, recording, passcode, mute_on_entry"), "the sentence lists the keys: {e}");
        let e = parse(&json!({"title": "{room}"})).unwrap_err();
        assert!(e.contains("{room}"), "{e}");
        assert!(parse(&json!({"title": "open {"})).is_err());
        assert!(parse(&json!({"title": 5})).unwrap_err().contains("must be text"));
        assert!(parse(&json!([1])).is_err());
    }

    #[test]
    fn options_are_typed_and_unset_by_default() {
        assert_eq!(parse(&json!({"title": "x"})).unwrap().options, MeetingOptions::default());
        assert!(MeetingOptions::default().set().is_empty());
        let all = json!({"waiting_room": true, "recording": "cloud", "passcode": false, "mute_on_entry": true});
        let o = parse(&all).unwrap().options;
        assert_eq!(
            o,
            MeetingOptions {
                waiting_room: Some(true),
                recording: Some(Recording::Cloud),
                passcode: Some(false),
                mute_on_entry: Some(true),
            }
        );
        assert_eq!(o.set(), MeetingOption::ALL.to_vec(), "false is set too: it overrides the account's default");
        for r in Recording::ALL {
            assert_eq!(parse(&json!({"recording": r.as_str()})).unwrap().options.recording, Some(r));
        }
        let null = parse(&json!({"waiting_room": null, "recording": null})).unwrap().options;
        assert!(null.set().is_empty(), "null leaves an option unset");
    }

    #[test]
    fn options_of_the_wrong_type_or_value_fail_naming_the_key() {
        for (key, value) in [
            ("waiting_room", json!("yes")),
            ("passcode", json!(1)),
            ("mute_on_entry", json!({})),
            ("recording", json!(true)),
            ("recording", json!("Cloud")),
            ("recording", json!("always")),
        ] {
            let e = parse(&json!({ key: value })).unwrap_err();
            assert!(e.starts_with(&format!("The meeting setting \"{key}\" must be")), "{key}={value}: {e}");
        }
        assert!(parse(&json!({"recording": "local"})).is_ok());
    }

    #[test]
    fn unsupported_options_are_those_set_but_not_honoured() {
        let o = MeetingOptions { waiting_room: Some(false), passcode: Some(true), ..MeetingOptions::default() };
        assert_eq!(o.unsupported(&[]), vec![MeetingOption::WaitingRoom, MeetingOption::Passcode]);
        assert_eq!(o.unsupported(&[MeetingOption::Passcode]), vec![MeetingOption::WaitingRoom]);
        assert!(o.unsupported(&MeetingOption::ALL).is_empty());
        let names: Vec<&str> = MeetingOption::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(names, ["waiting_room", "recording", "passcode", "mute_on_entry"]);
        assert!(names.iter().all(|n| KEYS.contains(n)), "every option is an accepted key");
    }
}
