//! What this deployment offers, per platform meetingd knows: whether meetings are made on it here
//! (its provider is configured, and for a platform with accounts, its OAuth client too), the
//! meeting options and values it honours, where an account is connected, and whether it is the
//! fallback.
//!
//! One source for `GET /api/platforms` and for what the daemon publishes in
//! `meetingd.platforms` (`db::platforms`), where the rules of a service's meeting platform
//! (`meetingd.check_service_meeting`, which `PUT /api/services/{id}/meeting` calls) read it. The
//! facts come from the providers themselves (`MeetingProvider::ignored_options`), so a platform
//! that honours an option only for some values (Teams records to the cloud only) is published as
//! such. Pure: no I/O.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

use super::auth::{self, Connectors};
use super::{MeetingOption, MeetingOptions, MeetingProvider, Platform, Providers, Recording};
use crate::config::Fallback;

/// The provider of `platform` when this deployment offers it: meetings are made on it, and a
/// platform with accounts can have them connected here.
pub fn offered<'a>(
    providers: &'a Providers,
    connectors: &Connectors,
    platform: Platform,
) -> Option<&'a Arc<dyn MeetingProvider>> {
    providers.get(platform).filter(|_| !platform.needs_account() || connectors.get(platform).is_some())
}

/// One platform as published in `meetingd.platforms` (field for column).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlatformOffer {
    pub platform: &'static str,
    pub display_name: &'static str,
    pub needs_account: bool,
    pub offered: bool,
    /// The options it honours (`MeetingProvider::supported_options`), as `GET /api/platforms`.
    pub options: Vec<&'static str>,
    /// Every option it honours with the values it honours: `{"recording": ["none", "cloud"]}`.
    pub option_values: Value,
    /// `POST` here to connect an account (platforms with accounts).
    pub connect_path: Option<String>,
    pub fallback: bool,
}

/// Every platform meetingd knows ([`Platform::ALL`], in that order), offered or not.
pub fn offering(providers: &Providers, connectors: &Connectors, fallback: Fallback) -> Vec<PlatformOffer> {
    Platform::ALL
        .into_iter()
        .map(|platform| {
            let provider = offered(providers, connectors, platform);
            PlatformOffer {
                platform: platform.as_str(),
                display_name: platform.display_name(),
                needs_account: platform.needs_account(),
                offered: provider.is_some(),
                options: provider.map_or_else(Vec::new, |p| p.supported_options().iter().map(|o| o.as_str()).collect()),
                option_values: provider.map_or_else(|| Value::Object(Map::new()), |p| honoured_values(p.as_ref())),
                connect_path: auth::spec(platform).map(|s| format!("/api/auth/{}/connect", s.path_segment)),
                fallback: fallback == Fallback::Platform(platform),
            }
        })
        .collect()
}

/// Each value an option can take in `services.meeting_settings` (`settings.rs`).
fn values(option: MeetingOption) -> Vec<(Value, MeetingOptions)> {
    let flag = |set: fn(&mut MeetingOptions, bool)| {
        [true, false]
            .into_iter()
            .map(|b| {
                let mut o = MeetingOptions::default();
                set(&mut o, b);
                (Value::Bool(b), o)
            })
            .collect()
    };
    match option {
        MeetingOption::WaitingRoom => flag(|o, b| o.waiting_room = Some(b)),
        MeetingOption::Passcode => flag(|o, b| o.passcode = Some(b)),
        MeetingOption::MuteOnEntry => flag(|o, b| o.mute_on_entry = Some(b)),
        MeetingOption::Recording => Recording::ALL
            .into_iter()
            .map(|r| (Value::from(r.as_str()), MeetingOptions { recording: Some(r), ..MeetingOptions::default() }))
            .collect(),
    }
}

/// The options `provider` honours, each with the values it honours: an option set alone to such a
/// value is not among its `ignored_options`.
pub fn honoured_values(provider: &dyn MeetingProvider) -> Value {
    let mut map = Map::new();
    for option in MeetingOption::ALL {
        let honoured: Vec<Value> = values(option)
            .into_iter()
            .filter(|(_, options)| !provider.ignored_options(options).contains(&option))
            .map(|(value, _)| value)
            .collect();
        if !honoured.is_empty() {
            map.insert(option.as_str().to_string(), Value::Array(honoured));
        }
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use serde_json::json;

    #[test]
    fn every_value_of_every_option_is_enumerated() {
        for option in MeetingOption::ALL {
            for (value, options) in values(option) {
                assert_eq!(options.set(), vec![option], "{value}");
                let parsed = crate::settings::parse(&json!({ option.as_str(): value })).unwrap();
                assert_eq!(parsed.options, options, "{value} parses to the options it stands for");
            }
        }
    }

    #[test]
    fn jitsi_alone_is_offered_without_oauth_clients_and_honours_nothing() {
        let config = Config::defaults();
        let providers = Providers::from_config(&config);
        let offer = offering(&providers, &Connectors::default(), Fallback::Platform(Platform::Jitsi));
        let names: Vec<&str> = offer.iter().map(|p| p.platform).collect();
        assert_eq!(names, ["google_meet", "zoom", "teams", "jitsi"]);
        let jitsi = offer.iter().find(|p| p.platform == "jitsi").unwrap();
        assert!(jitsi.offered && jitsi.fallback && !jitsi.needs_account);
        assert_eq!((jitsi.option_values.clone(), jitsi.connect_path.clone()), (json!({}), None));
        let zoom = offer.iter().find(|p| p.platform == "zoom").unwrap();
        assert!(!zoom.offered && zoom.needs_account && !zoom.fallback);
        assert_eq!(zoom.connect_path.as_deref(), Some("/api/auth/zoom/connect"));
    }
}
