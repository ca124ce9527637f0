//! `ecr-token-refresh plugin test`: run a plugin's hooks on a YAML case.
