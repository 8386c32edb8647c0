//! The users, cache-aside: reads go through `#[cached]` functions, writes go to
//! the database first and then invalidate what they made stale. This is the
//! part of the service that uses the framework; the HTTP layer only calls it.
//!
//! A failed invalidation (the cache backend down or frozen) does not fail the
//! request: the write stands, and answering 500 would invite a retry of a
//! write that happened (a second user for a POST). The answer says so
//! instead ([`Written::invalidated`], which the HTTP layer turns into
//! `x-cache-invalidation: failed`), the failure is logged at warn, and the
//! invalidation is retried in the background (see [`super::retry`]) until it
//! lands, logged at info, or until the entry's TTL has passed since the write
//! (5 minutes for a user, 1 for the list), when the stale entry has expired
//! anyway. Until it lands every instance may serve the old entry. The bound:
//! once the backend answers this process again, the retry lands within the
//! current backoff period (50 ms doubling to at most 2 s), plus the response
//! timeout of an attempt that was under way, plus the round trips of the
//! attempt itself. A shutdown abandons what is still pending (logged); that
//! is then stale until its TTL.

use std::fmt;
use std::time::Duration;

use cache_runtime::cached;
use serde::Deserialize;

use super::db::{Db, User};
use super::error::AppError;
use super::retry::Retries;

/// The longest accepted name or e-mail, in characters.
const MAX_FIELD_LEN: usize = 200;

/// The TTL of [`get_user`]'s entries.
const USER_TTL: Duration = Duration::from_secs(5 * 60);

/// The TTL of [`list_users`]'s entries.
const LIST_TTL: Duration = Duration::from_secs(60);

/// Loads one user; `Ok(None)` if there is no user with this id.
///
/// Misses of unknown ids are cached too (`Ok(None)` is an `Ok`): otherwise
/// every request for an id that does not exist, say from a scanner, would
/// reach the database. The price is that creating a user must invalidate its
/// id's entry, which [`create_user`] does. Database errors are `Err` and are
/// never cached, so the next request retries.
// The attribute takes a literal: keep it in step with `USER_TTL`.
#[cached(namespace = "users", ttl = "5m", skip(db))]
pub async fn get_user(db: &Db, id: i64) -> Result<Option<User>, AppError> {
    Ok(db.user(id).await?)
}

/// Loads every user, by id.
///
/// A real service would paginate; the page would then be a key argument.
// The attribute takes a literal: keep it in step with `LIST_TTL`.
#[cached(namespace = "users_list", ttl = "1m", skip(db))]
pub async fn list_users(db: &Db) -> Result<Vec<User>, AppError> {
    Ok(db.users().await?)
}

/// The body of `POST /users` and `PUT /users/{id}`.
#[derive(Debug, Clone, Deserialize)]
pub struct UserInput {
    /// The display name; not blank.
    pub name: String,
    /// The e-mail address; not blank.
    pub email: String,
}

impl UserInput {
    /// Trims the fields and checks them.
    pub fn validate(self) -> Result<UserInput, AppError> {
        let name = self.name.trim().to_owned();
        let email = self.email.trim().to_owned();
        for (field, value) in [("name", &name), ("email", &email)] {
            if value.is_empty() {
                return Err(AppError::BadRequest(format!("`{field}` must not be empty")));
            }
            if value.chars().count() > MAX_FIELD_LEN {
                return Err(AppError::BadRequest(format!(
                    "`{field}` must be at most {MAX_FIELD_LEN} characters"
                )));
            }
        }
        Ok(UserInput { name, email })
    }
}

/// What a write returns: the row as stored, and whether the cache entries the
/// write made stale were invalidated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written<T> {
    /// The value as stored in the database.
    pub value: T,
    /// False when an invalidation failed (the cache backend was unreachable).
    pub invalidated: bool,
}

/// Updates a user, then invalidates its entry and the list (which shows
/// names). `Ok(None)` if there is no user with this id. What fails to
/// invalidate is retried on `retries` (see the module docs).
pub async fn update_user(
    db: &Db,
    retries: &Retries,
    id: i64,
    input: UserInput,
) -> Result<Option<Written<User>>, AppError> {
    let input = input.validate()?;
    let Some(user) = db.update_user(id, input.name, input.email).await? else {
        return Ok(None);
    };
    // Database first, cache second: invalidating first would let a reader
    // cache the old row again before the update commits.
    let invalidated = invalidate(retries, id, [Stale::User(id), Stale::List]).await;
    Ok(Some(Written {
        value: user,
        invalidated,
    }))
}

/// Adds a user, then invalidates the list and the new id's entry (which may
/// hold a cached "no such user", see [`get_user`]). What fails to invalidate
/// is retried on `retries` (see the module docs).
pub async fn create_user(
    db: &Db,
    retries: &Retries,
    input: UserInput,
) -> Result<Written<User>, AppError> {
    let input = input.validate()?;
    let user = db.insert_user(input.name, input.email).await?;
    let invalidated = invalidate(retries, user.id, [Stale::List, Stale::User(user.id)]).await;
    Ok(Written {
        value: user,
        invalidated,
    })
}

/// A cache entry that a write made stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stale {
    /// The entry of [`get_user`] for this id.
    User(i64),
    /// Every entry of [`list_users`].
    List,
}

impl Stale {
    /// Invalidates it; `Err` if the cache backend could not be reached (or
    /// its circuit breaker is open).
    pub async fn invalidate(self) -> Result<(), cache_runtime::Error> {
        match self {
            Stale::User(id) => get_user_invalidate(&id).await,
            Stale::List => cache_runtime::invalidate_namespace(LIST_USERS_NAMESPACE).await,
        }
    }

    /// How long after a write the entry it made stale may still be served:
    /// the entry's TTL (it was stored before the write, so it has expired by
    /// then).
    pub fn ttl(self) -> Duration {
        match self {
            Stale::User(_) => USER_TTL,
            Stale::List => LIST_TTL,
        }
    }
}

impl fmt::Display for Stale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stale::User(id) => write!(f, "user {id}'s entry"),
            Stale::List => f.write_str("the list"),
        }
    }
}

/// Invalidates what the write of user `id` made stale; true if all of it
/// was invalidated now. What fails is logged and queued on `retries`: the
/// write stands either way (see the module docs).
async fn invalidate(retries: &Retries, id: i64, stale: [Stale; 2]) -> bool {
    let mut invalidated = true;
    for stale in stale {
        if let Err(error) = stale.invalidate().await {
            tracing::warn!(
                %error,
                user = id,
                "wrote the database but could not invalidate {stale}; retrying in the background, it may be served stale until then"
            );
            retries.push(stale);
            invalidated = false;
        }
    }
    invalidated
}
