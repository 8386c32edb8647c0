//! The users, cache-aside: reads go through `#[cached]` functions, writes go to
//! the database first and then invalidate what they made stale. This is the
//! part of the service that uses the framework; the HTTP layer only calls it.

use cache_runtime::cached;
use serde::Deserialize;

use super::db::{Db, User};
use super::error::AppError;

/// The longest accepted name or e-mail, in characters.
const MAX_FIELD_LEN: usize = 200;

/// Loads one user; `Ok(None)` if there is no user with this id.
///
/// Misses of unknown ids are cached too (`Ok(None)` is an `Ok`): otherwise
/// every request for an id that does not exist, say from a scanner, would
/// reach the database. The price is that creating a user must invalidate its
/// id's entry, which [`create_user`] does. Database errors are `Err` and are
/// never cached, so the next request retries.
#[cached(namespace = "users", ttl = "5m", skip(db))]
pub async fn get_user(db: &Db, id: i64) -> Result<Option<User>, AppError> {
    Ok(db.user(id).await?)
}

/// Loads every user, by id.
///
/// A real service would paginate; the page would then be a key argument.
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
/// names). `Ok(None)` if there is no user with this id.
pub async fn update_user(
    db: &Db,
    id: i64,
    input: UserInput,
) -> Result<Option<Written<User>>, AppError> {
    let input = input.validate()?;
    let Some(user) = db.update_user(id, input.name, input.email).await? else {
        return Ok(None);
    };
    // Database first, cache second: invalidating first would let a reader
    // cache the old row again before the update commits.
    let entry = get_user_invalidate(&id).await;
    let list = cache_runtime::invalidate_namespace(LIST_USERS_NAMESPACE).await;
    let invalidated = succeeded(entry, "the user's entry", id) & succeeded(list, "the list", id);
    Ok(Some(Written {
        value: user,
        invalidated,
    }))
}

/// Adds a user, then invalidates the list and the new id's entry (which may
/// hold a cached "no such user", see [`get_user`]).
pub async fn create_user(db: &Db, input: UserInput) -> Result<Written<User>, AppError> {
    let input = input.validate()?;
    let user = db.insert_user(input.name, input.email).await?;
    let list = cache_runtime::invalidate_namespace(LIST_USERS_NAMESPACE).await;
    let entry = get_user_invalidate(&user.id).await;
    let invalidated =
        succeeded(list, "the list", user.id) & succeeded(entry, "the user's entry", user.id);
    Ok(Written {
        value: user,
        invalidated,
    })
}

/// Logs a failed invalidation. The write itself stands, so the request does
/// not fail: answering 500 would invite a retry of a write that happened (a
/// second user for a POST). The cost is staleness: if the backend was only
/// unreachable from here, other instances may serve the old entry until its
/// TTL (5 minutes for a user, 1 for the list).
fn succeeded(result: Result<(), cache_runtime::Error>, what: &str, id: i64) -> bool {
    match result {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(
                %error,
                user = id,
                "wrote the database but could not invalidate {what}; it may be served stale until its TTL"
            );
            false
        }
    }
}
