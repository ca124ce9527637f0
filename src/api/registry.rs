//! Amazon ECR private registry hosts.
//!
//! A private registry is addressed as `<account>.dkr.ecr.<region>.amazonaws.com`
//! (see the [ECR user guide, "Private registry concepts"](https://docs.aws.amazon.com/AmazonECR/latest/userguide/Registries.html)),
//! with the FIPS variant `dkr.ecr-fips.` and the China partition's `.amazonaws.com.cn`
//! suffix. The account ID is the registry ID that `GetAuthorizationToken` takes.

use std::fmt;

/// The AWS partition a registry lives in, derived from its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partition {
    /// Commercial regions (`aws`).
    Aws,
    /// China regions (`aws-cn`), hosts ending in `.amazonaws.com.cn`.
    AwsCn,
    /// AWS GovCloud (US) regions (`aws-us-gov`), `us-gov-*`.
    AwsUsGov,
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Partition::Aws => "aws",
            Partition::AwsCn => "aws-cn",
            Partition::AwsUsGov => "aws-us-gov",
        })
    }
}

/// A parsed ECR private registry host such as `123456789012.dkr.ecr.us-east-1.amazonaws.com`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryHost {
    /// The host exactly as written in the spec; it is the key under `auths` in the Secret.
    pub host: String,
    /// The 12-digit AWS account ID, which is also the ECR registry ID.
    pub account_id: String,
    /// The AWS region, e.g. `us-east-1`.
    pub region: String,
    /// Whether the host is the FIPS endpoint (`dkr.ecr-fips.`).
    pub fips: bool,
    /// The partition implied by the host and region.
    pub partition: Partition,
}

/// Why a registry host was rejected. The message is meant for a status condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{host:?} is not an ECR private registry host ({why}); expected <12-digit account>.dkr.ecr.<region>.amazonaws.com"
)]
pub struct RegistryError {
    /// The value as written.
    pub host: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// The regular expression the CRD schema uses to reject bad hosts at admission.
/// [`parse_registry_host`] applies the same rule and gives a precise message.
pub const REGISTRY_HOST_PATTERN: &str =
    r"^[0-9]{12}\.dkr\.ecr(-fips)?\.[a-z]{2}(-[a-z]+)+-[0-9]+\.amazonaws\.com(\.cn)?$";

/// Parses an ECR private registry host.
///
/// # Errors
/// [`RegistryError`] naming what is wrong: a scheme or path, the account ID, the
/// `dkr.ecr` label, the region, the domain, or a partition that does not match the
/// region (`.amazonaws.com.cn` only with `cn-*` regions and the reverse).
pub fn parse_registry_host(host: &str) -> Result<RegistryHost, RegistryError> {
    let err = |why| RegistryError {
        host: host.to_string(),
        why,
    };
    if host.contains("://") {
        return Err(err("write the host only, without a scheme"));
    }
    if host.contains('/') {
        return Err(err("write the host only, without a path"));
    }
    let (rest, china) = if let Some(r) = host.strip_suffix(".amazonaws.com.cn") {
        (r, true)
    } else if let Some(r) = host.strip_suffix(".amazonaws.com") {
        (r, false)
    } else {
        return Err(err("the domain must be amazonaws.com or amazonaws.com.cn"));
    };
    let mut labels = rest.split('.');
    let account_id = labels.next().unwrap_or_default();
    if account_id.len() != 12 || !account_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err("the first label must be the 12-digit account ID"));
    }
    if labels.next() != Some("dkr") {
        return Err(err("the second label must be dkr"));
    }
    let fips = match labels.next() {
        Some("ecr") => false,
        Some("ecr-fips") => true,
        _ => return Err(err("the third label must be ecr or ecr-fips")),
    };
    let region = labels.next().unwrap_or_default();
    if labels.next().is_some() || !is_region(region) {
        return Err(err("the fourth label must be a region such as us-east-1"));
    }
    let partition = if region.starts_with("cn-") {
        Partition::AwsCn
    } else if region.starts_with("us-gov-") {
        Partition::AwsUsGov
    } else {
        Partition::Aws
    };
    if china != (partition == Partition::AwsCn) {
        return Err(err(
            "China regions (cn-*) use amazonaws.com.cn and other regions amazonaws.com",
        ));
    }
    Ok(RegistryHost {
        host: host.to_string(),
        account_id: account_id.to_string(),
        region: region.to_string(),
        fips,
        partition,
    })
}

/// The host of ECR Public ([ECR Public registries](https://docs.aws.amazon.com/AmazonECR/latest/public/public-registries.html)):
/// tokens for it come from the `ecr-public` API in `us-east-1`.
pub const PUBLIC_HOST: &str = "public.ecr.aws";

/// The schema pattern of an entry of `additionalRegistries`: a private registry host or
/// [`PUBLIC_HOST`].
pub const ANY_REGISTRY_PATTERN: &str = r"^([0-9]{12}\.dkr\.ecr(-fips)?\.[a-z]{2}(-[a-z]+)+-[0-9]+\.amazonaws\.com(\.cn)?|public\.ecr\.aws)$";

/// A registry a Secret holds an entry for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registry {
    /// A private registry.
    Private(RegistryHost),
    /// ECR Public, [`PUBLIC_HOST`].
    Public,
}

impl Registry {
    /// The host, the key under `auths`.
    pub fn host(&self) -> &str {
        match self {
            Registry::Private(r) => &r.host,
            Registry::Public => PUBLIC_HOST,
        }
    }

    /// The partition the registry lives in (ECR Public: `aws`).
    pub fn partition(&self) -> Partition {
        match self {
            Registry::Private(r) => r.partition,
            Registry::Public => Partition::Aws,
        }
    }
}

/// Parses a private registry host or [`PUBLIC_HOST`].
///
/// # Errors
/// [`RegistryError`] as [`parse_registry_host`] gives it.
pub fn parse_registry(host: &str) -> Result<Registry, RegistryError> {
    if host == PUBLIC_HOST {
        return Ok(Registry::Public);
    }
    parse_registry_host(host).map(Registry::Private)
}

/// `us-east-1`, `ap-southeast-3`, `us-gov-west-1`, `cn-northwest-1`: two letters, one
/// or more lowercase words, a number, separated by dashes.
pub(crate) fn is_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[0].bytes().all(|b| b.is_ascii_lowercase())
        && parts[1..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts
            .last()
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commercial_fips_china_and_govcloud_hosts() {
        let r = parse_registry_host("123456789012.dkr.ecr.us-east-1.amazonaws.com").unwrap();
        assert_eq!(
            (r.account_id.as_str(), r.region.as_str()),
            ("123456789012", "us-east-1")
        );
        assert_eq!((r.fips, r.partition), (false, Partition::Aws));

        let r = parse_registry_host("123456789012.dkr.ecr-fips.us-west-2.amazonaws.com").unwrap();
        assert_eq!((r.region.as_str(), r.fips), ("us-west-2", true));

        let r = parse_registry_host("210987654321.dkr.ecr.cn-north-1.amazonaws.com.cn").unwrap();
        assert_eq!(
            (r.account_id.as_str(), r.partition),
            ("210987654321", Partition::AwsCn)
        );

        let r = parse_registry_host("123456789012.dkr.ecr.us-gov-west-1.amazonaws.com").unwrap();
        assert_eq!(r.partition, Partition::AwsUsGov);
        assert_eq!(r.partition.to_string(), "aws-us-gov");

        let r =
            parse_registry_host("123456789012.dkr.ecr-fips.us-gov-east-1.amazonaws.com").unwrap();
        assert!(r.fips);
    }

    #[test]
    fn rejects_with_a_reason() {
        let cases = [
            (
                "https://123456789012.dkr.ecr.us-east-1.amazonaws.com",
                "scheme",
            ),
            ("123456789012.dkr.ecr.us-east-1.amazonaws.com/repo", "path"),
            ("12345678901.dkr.ecr.us-east-1.amazonaws.com", "12-digit"),
            ("12345678901a.dkr.ecr.us-east-1.amazonaws.com", "12-digit"),
            ("123456789012.ecr.us-east-1.amazonaws.com", "dkr"),
            (
                "123456789012.dkr.ecs.us-east-1.amazonaws.com",
                "ecr or ecr-fips",
            ),
            ("123456789012.dkr.ecr.useast1.amazonaws.com", "region"),
            ("123456789012.dkr.ecr.us-east-1.example.com", "domain"),
            ("123456789012.dkr.ecr.cn-north-1.amazonaws.com", "China"),
            ("123456789012.dkr.ecr.us-east-1.amazonaws.com.cn", "China"),
            ("docker.io", "domain"),
            ("", "domain"),
        ];
        for (host, why) in cases {
            let e = parse_registry_host(host).unwrap_err();
            assert!(e.to_string().contains(why), "{host}: {e}");
        }
    }

    #[test]
    fn ecr_public_is_a_registry_too() {
        assert_eq!(parse_registry("public.ecr.aws"), Ok(Registry::Public));
        assert_eq!(Registry::Public.host(), "public.ecr.aws");
        assert!(matches!(
            parse_registry("123456789012.dkr.ecr.us-east-1.amazonaws.com"),
            Ok(Registry::Private(_))
        ));
        assert!(parse_registry("public.ecr.aws/team").is_err());
        let re = regex::Regex::new(ANY_REGISTRY_PATTERN).unwrap();
        assert!(re.is_match("public.ecr.aws"));
        assert!(re.is_match("123456789012.dkr.ecr.eu-west-1.amazonaws.com"));
        assert!(!re.is_match("public.ecr.aws.example.com"));
    }

    #[test]
    fn schema_pattern_agrees_with_the_parser() {
        let re = regex::Regex::new(REGISTRY_HOST_PATTERN).unwrap();
        for host in [
            "123456789012.dkr.ecr.us-east-1.amazonaws.com",
            "123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com",
            "123456789012.dkr.ecr.cn-northwest-1.amazonaws.com.cn",
            "123456789012.dkr.ecr.ap-southeast-3.amazonaws.com",
            "12345678901.dkr.ecr.us-east-1.amazonaws.com",
            "123456789012.dkr.ecr.useast1.amazonaws.com",
            "https://123456789012.dkr.ecr.us-east-1.amazonaws.com",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/x",
        ] {
            // Admission may let through what the controller then rejects (partition
            // mismatch), never the reverse.
            if parse_registry_host(host).is_ok() {
                assert!(
                    re.is_match(host),
                    "{host} parses but fails the schema pattern"
                );
            } else if re.is_match(host) {
                assert!(host.ends_with(".cn") || host.contains("cn-"), "{host}");
            }
        }
    }
}
