//! Decoding `authorizationToken`, the base64 of `<user>:<password>`, and the token of a
//! `GetAuthorizationToken` answer (ECR and ECR Public alike).

use aws_smithy_types::DateTime;
use base64::Engine as _;
use jiff::Timestamp;
use secrecy::SecretString;

use super::sdk_error::Failure;
use super::{AuthorizationToken, FailureKind};

/// The token of one `authorizationData` entry: its decoded `authorizationToken`, its
/// `expiresAt` and `proxyEndpoint` (ECR Public has none).
///
/// # Errors
/// [`FailureKind::InvalidResponse`] when the token or expiry is missing or malformed; the
/// message never contains the token.
pub(super) fn from_answer(
    encoded: Option<&str>,
    expires: Option<&DateTime>,
    proxy_endpoint: Option<&str>,
) -> Result<AuthorizationToken, Failure> {
    let invalid = |message: &str| Failure::new(FailureKind::InvalidResponse, message);
    let encoded = encoded.ok_or_else(|| invalid("the response has no authorizationToken"))?;
    let (username, password) = decode_authorization_token(encoded).map_err(|m| invalid(&m))?;
    let expires = expires.ok_or_else(|| invalid("the response has no expiresAt"))?;
    let expires_at = Timestamp::new(expires.secs(), expires.subsec_nanos() as i32)
        .map_err(|_| invalid("expiresAt is out of range"))?;
    Ok(AuthorizationToken {
        username,
        password,
        expires_at,
        proxy_endpoint: proxy_endpoint.map(str::to_string),
    })
}

/// Decodes an ECR `authorizationToken` into `(user, password)`, splitting on the
/// **first** colon only: the password may itself contain colons.
///
/// # Errors
/// A message (never containing the token) when the value is not base64 of UTF-8
/// `user:password` with a non-empty user and password.
pub fn decode_authorization_token(encoded: &str) -> Result<(String, SecretString), String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| "authorizationToken is not valid base64".to_string())?;
    let text = String::from_utf8(bytes)
        .map_err(|_| "authorizationToken does not decode to UTF-8 text".to_string())?;
    let Some((user, password)) = text.split_once(':') else {
        return Err("authorizationToken does not decode to user:password".to_string());
    };
    if user.is_empty() || password.is_empty() {
        return Err("authorizationToken has an empty user or password".to_string());
    }
    Ok((user.to_string(), SecretString::from(password.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn enc(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn splits_on_the_first_colon_only() {
        let (user, pw) = decode_authorization_token(&enc("AWS:pa:ss:word")).unwrap();
        assert_eq!(user, "AWS");
        assert_eq!(pw.expose_secret(), "pa:ss:word");
    }

    #[test]
    fn rejects_malformed_tokens_without_echoing_them() {
        for bad in [
            enc("nocolon-secretvalue"),
            enc(":secretvalue"),
            enc("AWS:"),
            "%%%secretvalue".into(),
        ] {
            let e = decode_authorization_token(&bad).unwrap_err();
            assert!(!e.contains("secretvalue"), "{e}");
        }
    }

    #[test]
    fn debug_does_not_show_the_password() {
        let (_, pw) = decode_authorization_token(&enc("AWS:hunter2-very-secret")).unwrap();
        assert!(!format!("{pw:?}").contains("hunter2"));
    }
}
