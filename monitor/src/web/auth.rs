//! HTTP basic auth against bcrypt hashes (`basic_auth_users`).
//!
//! bcrypt costs tens to hundreds of milliseconds per check by design, and
//! Prometheus sends the same credentials every scrape. So a password that
//! passed once is remembered, as a keyed hash, and later scrapes cost a
//! microsecond; bcrypt itself runs off the event loop, one at a time, so
//! wrong guesses cannot take more than one core.

use std::{
    collections::{BTreeMap, HashMap},
    str::FromStr as _,
    sync::{Arc, Mutex, PoisonError},
};

use anyhow::{Result, bail};
use axum::http::HeaderValue;
use base64::{Engine as _, engine::general_purpose::STANDARD};
use ring::{hmac, rand::SystemRandom};
use tokio::sync::Semaphore;

pub struct BasicAuth {
    /// user -> bcrypt hash
    users: HashMap<String, String>,
    /// Checked for unknown users so they take as long as known ones and
    /// timing does not tell which users exist.
    decoy: String,
    /// user -> HMAC of the password that last passed bcrypt.
    verified: Mutex<HashMap<String, hmac::Tag>>,
    /// Random per process: the remembered tags are useless elsewhere.
    key: hmac::Key,
    bcrypt_slot: Arc<Semaphore>,
}

impl BasicAuth {
    pub fn new(users: BTreeMap<String, String>) -> Result<BasicAuth> {
        for (user, hash) in &users {
            let Ok(parts) = bcrypt::HashParts::from_str(hash) else {
                bail!(
                    "the password of {user:?} is not a bcrypt hash: make one with \
                     `htpasswd -nBC 10 \"\" | tr -d ':\\n'`"
                );
            };
            // Each step doubles the time; by 14 a check outlasts a scrape
            // timeout on small machines.
            if parts.get_cost() > 13 {
                log::warn!(
                    "the bcrypt hash of {user:?} has cost {}: checks may take seconds; 10 is usual",
                    parts.get_cost()
                );
            }
        }
        let Some(decoy) = users.values().next().cloned() else {
            bail!("no users");
        };
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
            .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
        Ok(BasicAuth {
            users: users.into_iter().collect(),
            decoy,
            verified: Mutex::new(HashMap::new()),
            key,
            bcrypt_slot: Arc::new(Semaphore::new(1)),
        })
    }

    /// Whether an `Authorization` header names a user and its password.
    pub async fn allows(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = authorization.and_then(basic_credentials) else {
            return false;
        };
        if self.remembered(&user, &password) {
            return true;
        }
        let (known, hash) = match self.users.get(&user) {
            Some(hash) => (true, hash.clone()),
            None => (false, self.decoy.clone()),
        };
        let Ok(slot) = self.bcrypt_slot.clone().acquire_owned().await else {
            return false;
        };
        let checked = password.clone();
        // The slot goes with the check: a request that times out and drops
        // this future does not free it while bcrypt still runs.
        let matches = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            bcrypt::verify(checked.as_bytes(), &hash)
        })
        .await
        .is_ok_and(|verdict| verdict.unwrap_or(false));
        let allowed = known && matches;
        if allowed {
            let tag = hmac::sign(&self.key, password.as_bytes());
            self.cache().insert(user, tag);
        }
        allowed
    }

    fn remembered(&self, user: &str, password: &str) -> bool {
        self.cache()
            .get(user)
            .is_some_and(|tag| hmac::verify(&self.key, password.as_bytes(), tag.as_ref()).is_ok())
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, hmac::Tag>> {
        // Entries are whole values; a panic elsewhere cannot leave one torn.
        self.verified.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `Basic base64(user:password)` -> (user, password).
fn basic_credentials(value: &HeaderValue) -> Option<(String, String)> {
    let value = value.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> HeaderValue {
        let encoded = STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {encoded}")).unwrap()
    }

    fn auth() -> BasicAuth {
        let users = [
            ("alice".to_string(), bcrypt::hash("wonderland", 4).unwrap()),
            ("bob".to_string(), bcrypt::hash("builder", 4).unwrap()),
        ];
        BasicAuth::new(users.into_iter().collect()).unwrap()
    }

    #[tokio::test]
    async fn only_the_right_password_of_a_known_user_passes() {
        let auth = auth();
        assert!(auth.allows(Some(&header("alice", "wonderland"))).await);
        assert!(auth.allows(Some(&header("bob", "builder"))).await);
        assert!(!auth.allows(Some(&header("alice", "builder"))).await);
        assert!(!auth.allows(Some(&header("carol", "wonderland"))).await);
        assert!(!auth.allows(None).await);
        let bearer = HeaderValue::from_static("Bearer d29uZGVybGFuZA==");
        assert!(!auth.allows(Some(&bearer)).await);
        let junk = HeaderValue::from_static("Basic %%%");
        assert!(!auth.allows(Some(&junk)).await);
        // The scheme is case-insensitive (RFC 7617).
        let lower = header("alice", "wonderland")
            .to_str()
            .unwrap()
            .replace("Basic", "basic");
        assert!(
            auth.allows(Some(&HeaderValue::from_str(&lower).unwrap()))
                .await
        );
    }

    #[tokio::test]
    async fn a_password_that_passed_is_remembered_and_only_that_one() {
        let auth = auth();
        assert!(!auth.remembered("alice", "wonderland"));
        assert!(auth.allows(Some(&header("alice", "wonderland"))).await);
        assert!(auth.remembered("alice", "wonderland"));
        assert!(!auth.remembered("alice", "wonderlan"));
        assert!(!auth.remembered("bob", "wonderland"));
        // A failed attempt does not evict or replace the remembered one.
        assert!(!auth.allows(Some(&header("alice", "nope"))).await);
        assert!(auth.remembered("alice", "wonderland"));
    }

    #[test]
    fn hashes_must_be_bcrypt() {
        let users = [("alice".to_string(), "plaintext".to_string())];
        let err = BasicAuth::new(users.into_iter().collect())
            .err()
            .expect("accepted a plain text password");
        assert!(err.to_string().contains("htpasswd"), "{err}");
    }
}
