//! Jitsi Meet: a room is just a URL, so no account and no API call.
//!
//! The room name carries 128 random bits, so a link cannot be guessed from a booking. A retried
//! create makes a new room, which is harmless: a room that nobody opened does not exist anywhere.

use uuid::Uuid;

use super::{Meeting, MeetingOption, MeetingProvider, MeetingRequest, Platform, ProviderError};

pub struct Jitsi {
    base_url: url::Url,
}

impl Jitsi {
    pub fn new(base_url: url::Url) -> Jitsi {
        Jitsi { base_url }
    }

    fn room_url(&self, room: &str) -> Result<String, ProviderError> {
        let mut url = self.base_url.clone();
        url.path_segments_mut()
            .map_err(|()| {
                ProviderError::Permanent(format!("jitsi.base_url {} cannot hold a room path", self.base_url))
            })?
            .pop_if_empty()
            .push(room);
        Ok(url.into())
    }
}

/// `meetingd-` and 32 lowercase hex digits: 128 bits from rand's cryptographically secure,
/// OS-seeded generator.
fn room_name() -> String {
    format!("meetingd-{:032x}", rand::random::<u128>())
}

#[async_trait::async_trait]
impl MeetingProvider for Jitsi {
    fn platform(&self) -> Platform {
        Platform::Jitsi
    }

    /// A room is a URL: there is nothing to set a waiting room, recording or passcode on.
    fn supported_options(&self) -> &'static [MeetingOption] {
        &[]
    }

    async fn create(&self, _req: &MeetingRequest) -> Result<Meeting, ProviderError> {
        let room = room_name();
        Ok(Meeting { join_url: self.room_url(&room)?, external_id: room, account: None })
    }

    async fn update(&self, existing: &Meeting, _req: &MeetingRequest) -> Result<Meeting, ProviderError> {
        // A room has no times: the same link serves the new slot.
        Ok(existing.clone())
    }

    async fn delete(&self, _existing: &Meeting, _provider: Uuid) -> Result<(), ProviderError> {
        Ok(())
    }

    fn keeps_meetings(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn req() -> MeetingRequest {
        MeetingRequest {
            booking_id: Uuid::new_v4(),
            generation: 1,
            provider_user_id: Uuid::new_v4(),
            title: "t".into(),
            description: None,
            customer_email: None,
            start: Utc::now(),
            end: Utc::now(),
            settings: serde_json::json!({}),
            options: Default::default(),
            expected_account: None,
        }
    }

    #[tokio::test]
    async fn rooms_are_unguessable_and_under_the_base_url() {
        let j = Jitsi::new("https://jitsi.example.org/rooms/".parse().unwrap());
        let a = j.create(&req()).await.unwrap();
        let b = j.create(&req()).await.unwrap();
        assert_ne!(a.external_id, b.external_id);
        assert!(a.join_url.starts_with("https://jitsi.example.org/rooms/meetingd-"), "{}", a.join_url);
        assert_eq!(a.join_url, format!("https://jitsi.example.org/rooms/{}", a.external_id));
        assert_eq!(a.external_id.len(), "meetingd-".len() + 32);
        let j = Jitsi::new("https://meet.jit.si".parse().unwrap());
        let c = j.create(&req()).await.unwrap();
        assert_eq!(c.join_url, format!("https://meet.jit.si/{}", c.external_id));
        assert_eq!(j.update(&c, &req()).await.unwrap(), c);
    }
}
