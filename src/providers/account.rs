//! Acting in a connected account, for every platform that needs one: whose account an operation
//! acts in ([`Who`]), a usable access token for it ([`Access::token`]), and one call retried once
//! with a fresh token after the platform said the token is no good ([`Access::authorized`]).
//!
//! The tokens themselves come from `tokens.rs`; nothing here knows a wire format or touches the
//! database directly.

use secrecy::SecretString;
use uuid::Uuid;

use super::{Account, Meeting, MeetingRequest, Platform, ProviderError};
use crate::oauth::{OAuthClient, OAuthError};
use crate::tokens::{TokenError, TokenStore, Whose};

/// Whose account one operation acts in: pinned to the meeting's account when it has one, else
/// to the provider's account as the first token read finds it.
pub(crate) struct Who {
    user: Uuid,
    account: std::sync::OnceLock<Account>,
    /// Acting on an existing meeting: an account that cannot be used leaves it unreachable.
    existing: bool,
    /// A new meeting's account as the worker decided it (see `MeetingRequest::expected_account`).
    expected: Option<(Platform, Account)>,
}

impl Who {
    /// A new meeting, in the provider's current account.
    pub(crate) fn provider(user: Uuid) -> Who {
        Who { user, account: std::sync::OnceLock::new(), existing: false, expected: None }
    }

    /// A new meeting for `req`, in the provider's current account, which must still be the one
    /// the worker decided on.
    pub(crate) fn creating(req: &MeetingRequest) -> Who {
        Who { expected: req.expected_account.clone(), ..Who::provider(req.provider_user_id) }
    }

    /// An existing meeting, in the account it was made in (the provider's, for meetings recorded
    /// before accounts were).
    pub(crate) fn of(meeting: &Meeting, provider: Uuid) -> Who {
        let account = std::sync::OnceLock::new();
        if let Some(a) = &meeting.account {
            let _ = account.set(a.clone());
        }
        Who { user: meeting.account.as_ref().map_or(provider, |a| a.user_id), account, existing: true, expected: None }
    }

    /// The provider whose account the operation acts in.
    pub(crate) fn user(&self) -> Uuid {
        self.user
    }

    /// The account the operation acts in, once a token was read for it.
    pub(crate) fn account(&self) -> Option<Account> {
        self.account.get().cloned()
    }
}

/// A platform call's failure as [`Access::authorized`] needs to see it.
pub(crate) trait CallFailure: Sized {
    /// The platform refused the access token (a 401).
    fn is_unauthorized(&self) -> bool;
    /// A failure that is not the call's own (no token could be had).
    fn from_provider(error: ProviderError) -> Self;
}

/// One platform's way into its connected accounts.
pub(crate) struct Access<'a> {
    pub tokens: &'a TokenStore,
    pub oauth: &'a OAuthClient,
    pub platform: Platform,
    /// Who runs the OAuth client, as messages name it ("Google").
    pub vendor: &'static str,
    /// The configuration section of its OAuth client ("google").
    pub section: &'static str,
}

impl Access<'_> {
    /// A usable access token for `who`'s account (refreshed if due, or if `refused` is the token
    /// the platform just refused); pins the operation to that account.
    pub(crate) async fn token(&self, who: &Who, refused: Option<&SecretString>) -> Result<SecretString, ProviderError> {
        let whose = who.account.get().map_or(Whose::Provider(who.user), Whose::Account);
        let (token, account) =
            self.tokens.access_token(whose, self.platform, self.oauth, refused).await.map_err(|e| match e {
                TokenError::NotConnected(_) | TokenError::Revoked(_) if who.existing => {
                    ProviderError::AccountGone(e.to_string())
                }
                TokenError::NotConnected(_) | TokenError::Revoked(_) => ProviderError::Revoked,
                TokenError::AccountGone(_) => ProviderError::AccountGone(e.to_string()),
                TokenError::Unreadable(_, _) => ProviderError::AccountUnusable(e.to_string()),
                TokenError::OAuth(OAuthError::Client(m)) => ProviderError::Permanent(format!(
                    "{} refused meetingd's OAuth client ({m}); an administrator must check {}.client_id and the client secret",
                    self.vendor, self.section
                )),
                TokenError::OAuth(e) => ProviderError::Transient(e.to_string()),
                TokenError::Changed(_) => ProviderError::Transient(e.to_string()),
                TokenError::Db(e) => ProviderError::Transient(e.to_string()),
            })?;
        if let Some((platform, expected)) = &who.expected
            && *platform == self.platform
            && !same_account(expected, &account)
        {
            return Err(ProviderError::Transient(format!(
                "the provider connected another {} account while the meeting was being made; it is made again in the account connected now",
                self.platform.display_name()
            )));
        }
        // Every later call of this operation acts in the same account.
        let _ = who.account.set(account);
        Ok(token)
    }

    /// Runs `call` with a valid token of `who`'s account; when the platform refuses the token,
    /// the token store re-reads the row (another daemon may have refreshed) or refreshes, once,
    /// and `call` runs again.
    pub(crate) async fn authorized<T, E, F, Fut>(&self, who: &Who, call: F) -> Result<T, E>
    where
        E: CallFailure,
        F: Fn(SecretString) -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let token = self.token(who, None).await.map_err(E::from_provider)?;
        match call(token.clone()).await {
            Err(e) if e.is_unauthorized() => {
                let fresh = self.token(who, Some(&token)).await.map_err(E::from_provider)?;
                match call(fresh).await {
                    Err(e) if e.is_unauthorized() => Err(E::from_provider(ProviderError::Unauthorized)),
                    other => other,
                }
            }
            other => other,
        }
    }
}

/// The same account: the same integration row, connected to the same platform identity (an
/// unknown identity on either side does not count as another).
fn same_account(a: &Account, b: &Account) -> bool {
    a.integration_id == b.integration_id && (a.identity.is_none() || b.identity.is_none() || a.identity == b.identity)
}
