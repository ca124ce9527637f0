//! Unit tests of the access rules' semantics and validation (included by `access.rs`).

use super::*;

const A_HOST: &str = "111111111111.dkr.ecr.us-east-1.amazonaws.com";
const A_ROLE: &str = "arn:aws:iam::111111111111:role/team-a-ci";

fn rules(yaml: &str) -> AccessRules {
    let config: AccessConfig = serde_yaml::from_str(yaml).expect("access YAML");
    AccessRules::compile(&config).unwrap_or_else(|e| panic!("rules do not compile: {e:?}"))
}

fn problems(yaml: &str) -> Vec<String> {
    let config: AccessConfig = serde_yaml::from_str(yaml).expect("access YAML");
    AccessRules::compile(&config)
        .expect_err("rules should be refused")
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn regs(hosts: &[&str]) -> Vec<Registry> {
    hosts.iter().map(|h| parse_registry(h).unwrap()).collect()
}

fn role(arn: &str) -> Identity {
    Identity::Role {
        arn: arn.into(),
        external_id: Some("shared-external-id".into()),
        session_name: None,
    }
}

fn web(arn: &str) -> Identity {
    Identity::WebIdentity {
        namespace: "team-a-dev".into(),
        service_account: "puller".into(),
        role_arn: arn.into(),
        session_name: None,
    }
}

/// The README's locked-down multi-tenant setup.
const MULTI_TENANT: &str = r#"
rules:
  - namespaces: ["team-a-*"]
    registries: ["111111111111"]
    roles: ["arn:aws:iam::111111111111:role/team-a-*"]
  - namespaces: [platform]
    registries: ["*"]
    operator_identity: true
"#;

#[test]
fn without_rules_everything_is_allowed() {
    let open = AccessRules::compile(&AccessConfig::default()).unwrap();
    assert!(open.is_open() && open.is_empty());
    for identity in [Identity::Operator, role(A_ROLE), web(A_ROLE)] {
        open.check(
            "anything",
            &regs(&[
                A_HOST,
                "public.ecr.aws",
                "999999999999.dkr.ecr.cn-north-1.amazonaws.com.cn",
            ]),
            &identity,
        )
        .unwrap();
    }
}

#[test]
fn a_team_is_locked_to_its_account_and_roles() {
    let r = rules(MULTI_TENANT);
    assert!(!r.is_open());
    assert_eq!(r.len(), 2);
    // Allowed: its namespaces (by glob), its account, its roles, assumed or web identity.
    r.check("team-a-dev", &regs(&[A_HOST]), &role(A_ROLE))
        .unwrap();
    r.check("team-a-prod", &regs(&[A_HOST]), &web(A_ROLE))
        .unwrap();

    // Its own identity is not the operator's.
    let e = r
        .check("team-a-dev", &regs(&[A_HOST]), &Identity::Operator)
        .unwrap_err();
    assert!(matches!(e, Denial::Identity { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "namespace \"team-a-dev\" may not use the operator's own identity for registry {A_HOST} \
             (no access rule of the operator allows it)"
        )
    );

    // Another account's registry, or a role of another account or team.
    let other = "222222222222.dkr.ecr.us-east-1.amazonaws.com";
    let e = r
        .check("team-a-dev", &regs(&[other]), &role(A_ROLE))
        .unwrap_err();
    assert_eq!(
        e,
        Denial::Registry {
            namespace: "team-a-dev".into(),
            registry: other.into()
        }
    );
    for arn in [
        "arn:aws:iam::222222222222:role/team-a-ci",
        "arn:aws:iam::111111111111:role/team-b-ci",
    ] {
        let e = r
            .check("team-a-dev", &regs(&[A_HOST]), &role(arn))
            .unwrap_err();
        assert!(
            e.to_string().starts_with(&format!(
                "namespace \"team-a-dev\" may not use role {arn} for registry {A_HOST}"
            )),
            "{e}"
        );
    }

    // A namespace no rule names gets nothing, whatever it asks for.
    for identity in [Identity::Operator, role(A_ROLE)] {
        let e = r.check("team-b", &regs(&[A_HOST]), &identity).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "namespace \"team-b\" may not use registry {A_HOST} (no access rule of the operator allows it)"
            )
        );
    }
    // The glob is a glob over the whole name, not a prefix or substring match.
    assert!(r.check("team-a", &regs(&[A_HOST]), &role(A_ROLE)).is_err());
    assert!(
        r.check("x-team-a-dev", &regs(&[A_HOST]), &role(A_ROLE))
            .is_err()
    );

    // The platform namespace: any registry, own identity only.
    r.check(
        "platform",
        &regs(&[
            A_HOST,
            "public.ecr.aws",
            "333333333333.dkr.ecr-fips.us-gov-west-1.amazonaws.com",
        ]),
        &Identity::Operator,
    )
    .unwrap();
    assert!(matches!(
        r.check("platform", &regs(&[A_HOST]), &role(A_ROLE)),
        Err(Denial::Identity { .. })
    ));
}

#[test]
fn every_registry_of_the_secret_must_be_allowed() {
    let r = rules(MULTI_TENANT);
    let e = r
        .check(
            "team-a-dev",
            &regs(&[
                A_HOST,
                "111111111111.dkr.ecr.eu-west-1.amazonaws.com",
                "public.ecr.aws",
            ]),
            &role(A_ROLE),
        )
        .unwrap_err();
    assert_eq!(
        e,
        Denial::Registry {
            namespace: "team-a-dev".into(),
            registry: "public.ecr.aws".into()
        },
        "the account covers both regions, ECR Public is not in it"
    );
    let r = rules(&format!(
        "{MULTI_TENANT}  - namespaces: [team-a-dev]\n    registries: [public.ecr.aws]\n    roles: [\"{A_ROLE}\"]\n"
    ));
    r.check(
        "team-a-dev",
        &regs(&[A_HOST, "public.ecr.aws"]),
        &role(A_ROLE),
    )
    .unwrap();
    // Still not for the team's other namespaces.
    assert!(
        r.check(
            "team-a-prod",
            &regs(&[A_HOST, "public.ecr.aws"]),
            &role(A_ROLE)
        )
        .is_err()
    );
    // No registry at all needs nothing.
    r.check("nobody", &[], &Identity::Operator).unwrap();
}

#[test]
fn one_rule_must_allow_both_the_registry_and_the_identity() {
    // Registry A with the operator's identity, registry B with a role: never mixed.
    let b_host = "222222222222.dkr.ecr.us-east-1.amazonaws.com";
    let r = rules(&format!(
        r#"
rules:
  - namespaces: [apps]
    registries: ["111111111111"]
    operator_identity: true
  - namespaces: [apps]
    registries: ["222222222222"]
    roles: ["{A_ROLE}"]
"#
    ));
    r.check("apps", &regs(&[A_HOST]), &Identity::Operator)
        .unwrap();
    r.check("apps", &regs(&[b_host]), &role(A_ROLE)).unwrap();
    assert_eq!(
        r.check("apps", &regs(&[A_HOST, b_host]), &Identity::Operator),
        Err(Denial::Identity {
            namespace: "apps".into(),
            registry: b_host.into(),
            identity: "the operator's own identity".into()
        })
    );
    assert!(matches!(
        r.check("apps", &regs(&[A_HOST]), &role(A_ROLE)),
        Err(Denial::Identity { registry, .. }) if registry == A_HOST
    ));
}

#[test]
fn account_ids_cover_every_host_of_the_account_and_host_globs_match_whole_hosts() {
    let r = rules(
        r#"
rules:
  - namespaces: ["*"]
    registries: ["111111111111", "*.dkr.ecr.eu-west-1.amazonaws.com"]
    operator_identity: true
"#,
    );
    for host in [
        A_HOST,
        "111111111111.dkr.ecr-fips.us-gov-west-1.amazonaws.com",
        "111111111111.dkr.ecr.cn-north-1.amazonaws.com.cn",
        "444444444444.dkr.ecr.eu-west-1.amazonaws.com",
    ] {
        r.check("anywhere", &regs(&[host]), &Identity::Operator)
            .unwrap_or_else(|e| panic!("{host}: {e}"));
    }
    for host in [
        "444444444444.dkr.ecr.eu-west-2.amazonaws.com",
        "444444444444.dkr.ecr-fips.us-east-1.amazonaws.com",
        "public.ecr.aws",
    ] {
        assert!(
            r.check("anywhere", &regs(&[host]), &Identity::Operator)
                .is_err(),
            "{host} is allowed"
        );
    }
}

#[test]
fn role_globs_stay_within_a_path_segment_unless_doubled() {
    let r = rules(
        r#"
rules:
  - namespaces: [one]
    registries: ["111111111111"]
    roles: ["arn:aws:iam::111111111111:role/team-a-*"]
  - namespaces: [any]
    registries: ["111111111111"]
    roles: ["arn:aws:iam::111111111111:role/**"]
"#,
    );
    let nested = "arn:aws:iam::111111111111:role/team-a-x/admin";
    assert!(r.check("one", &regs(&[A_HOST]), &role(nested)).is_err());
    r.check("one", &regs(&[A_HOST]), &role(A_ROLE)).unwrap();
    r.check("any", &regs(&[A_HOST]), &role(nested)).unwrap();
    r.check("any", &regs(&[A_HOST]), &web(A_ROLE)).unwrap();
    // Case matters in ARNs.
    assert!(
        r.check(
            "one",
            &regs(&[A_HOST]),
            &role("arn:aws:iam::111111111111:role/Team-A-ci")
        )
        .is_err()
    );
}

#[test]
fn denials_name_roles_never_credentials() {
    let r = rules(MULTI_TENANT);
    let e = r
        .check(
            "team-b",
            &regs(&[A_HOST]),
            &Identity::WebIdentity {
                namespace: "team-b".into(),
                service_account: "puller".into(),
                role_arn: A_ROLE.into(),
                session_name: None,
            },
        )
        .unwrap_err();
    assert!(matches!(e, Denial::Registry { .. }));
    let r = rules(
        "rules:\n  - namespaces: [team-b]\n    registries: [\"111111111111\"]\n    operator_identity: true\n",
    );
    let e = r
        .check("team-b", &regs(&[A_HOST]), &role(A_ROLE))
        .unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(text.contains(A_ROLE), "{text}");
    assert!(!text.contains("shared-external-id"), "{text}");
}

#[test]
fn deny_all_allows_nothing() {
    let r = AccessRules::deny_all();
    assert!(!r.is_open());
    assert!(
        r.check("platform", &regs(&[A_HOST]), &Identity::Operator)
            .is_err()
    );
}

#[test]
fn bad_rules_name_each_key() {
    let found = problems(
        r#"
rules:
  - namespaces: []
    registries: []
  - namespaces: ["team-[", Team-A, "apps"]
    registries: ["11111111111", "https://111111111111.dkr.ecr.us-east-1.amazonaws.com", "docker.io", "*.DKR.ecr.*.amazonaws.com", "*.dkr.ecr.*.amazonaws.com"]
    roles: ["team-a-*", "arn:aws:iam::1:role/{a"]
"#,
    );
    let expect = [
        "access.rules.0.namespaces: must list at least one namespace",
        "access.rules.0.registries: must list at least one registry",
        "access.rules.0: allows no identity",
        "access.rules.1.namespaces.0: \"team-[\" is not a glob",
        "access.rules.1.namespaces.1: \"Team-A\" never matches",
        "access.rules.1.registries.0: \"11111111111\" is not an account ID (12 digits)",
        "access.rules.1.registries.1: \"https://111111111111.dkr.ecr.us-east-1.amazonaws.com\": write a registry host",
        "access.rules.1.registries.2: \"docker.io\" is neither a 12-digit account ID",
        "access.rules.1.registries.3: \"*.DKR.ecr.*.amazonaws.com\" never matches",
        "access.rules.1.roles.0: \"team-a-*\" is not a role ARN glob",
        "access.rules.1.roles.1: \"arn:aws:iam::1:role/{a\" is not a glob",
    ];
    for want in expect {
        assert!(
            found.iter().any(|f| f.starts_with(want)),
            "no {want:?} in {found:#?}"
        );
    }
    assert_eq!(found.len(), expect.len(), "{found:#?}");
    // Unknown keys are refused by the schema.
    assert!(
        serde_yaml::from_str::<AccessConfig>(
            "rules:\n  - namespaces: [a]\n    registries: [\"111111111111\"]\n    operatorIdentity: true\n"
        )
        .is_err()
    );
}

#[test]
fn the_description_says_what_the_rules_mean() {
    assert!(AccessConfig::default().describe().contains("no rules"));
    let config: AccessConfig = serde_yaml::from_str(MULTI_TENANT).unwrap();
    let line = config.describe();
    assert!(
        line.starts_with("# access: 2 rules;") && line.contains("NotPermitted"),
        "{line}"
    );
}

#[test]
fn the_readme_example_compiles_and_locks_teams_to_their_accounts() {
    let readme = include_str!("../README.md");
    let section = readme
        .split("## Access rules")
        .nth(1)
        .expect("README has an access rules section");
    let block = section
        .split("```yaml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a YAML example");
    let operator_config = block.split("\n---\n").next().unwrap();
    #[derive(serde::Deserialize)]
    struct Doc {
        access: AccessConfig,
    }
    let doc: Doc = serde_yaml::from_str(operator_config).expect("the example is YAML");
    let r = AccessRules::compile(&doc.access).expect("the example compiles");
    let a_pull = "arn:aws:iam::111111111111:role/team-a-pull";
    let a_hosts = regs(&[A_HOST, "111111111111.dkr.ecr.eu-west-1.amazonaws.com"]);
    r.check("team-a-payments", &a_hosts, &role(a_pull)).unwrap();
    assert!(
        r.check("team-a-payments", &a_hosts, &Identity::Operator)
            .is_err()
    );
    assert!(
        r.check(
            "team-a-payments",
            &regs(&["222222222222.dkr.ecr.us-east-1.amazonaws.com"]),
            &role(a_pull)
        )
        .is_err()
    );
    r.check(
        "team-b-web",
        &regs(&[
            "222222222222.dkr.ecr.us-east-1.amazonaws.com",
            "public.ecr.aws",
        ]),
        &web("arn:aws:iam::222222222222:role/team-b/ci/pull"),
    )
    .unwrap();
    r.check(
        "platform",
        &regs(&[A_HOST, "public.ecr.aws"]),
        &Identity::Operator,
    )
    .unwrap();
    assert!(
        r.check("default", &regs(&[A_HOST]), &Identity::Operator)
            .is_err()
    );
}
