//! Lenient reading of what the operator wrote itself (the status): a field that does not
//! fit its type reads as absent instead of failing the whole object — and with it every
//! list of resources the object is in, which would stop the controller for all of them.
//! Someone with access to the status subresource may write anything the schema admits.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// Deserializes a `T`, or `T::default()` when the value does not fit.
///
/// # Errors
/// Only when the input is not JSON at all.
pub fn or_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned + Default,
{
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).unwrap_or_default())
}
