//! ecr-token-refresh: a Kubernetes operator that keeps Amazon ECR image-pull Secrets fresh.
//!
//! Data flows one way: a custom resource event reaches the [`controller`], which gets a
//! token from the [`ecr`] token source, renders the Secret with [`secret`], and writes
//! the status. Tokens never appear in logs, events, errors or `Debug` output.

pub mod access;
pub mod api;
pub mod config;
pub mod controller;
pub mod crd;
pub mod ecr;
pub mod heap;
pub mod intern;
pub mod leader;
pub mod metrics;
pub mod object_id;
pub mod once;
pub mod operator;
pub mod policy;
pub mod registry_check;
pub mod render;
pub mod secret;
pub mod secret_format;
pub mod server;
pub mod telemetry;
