//! The deployment files say what the cluster code expects.

use std::path::Path;

/// SchemaStore's fly.toml schema, shared beside the repo (SPEC §4).
fn fly_schema() -> serde_json::Value {
    let path = std::env::var("ROOST_FLY_SCHEMA").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fly.schema.json").to_owned()
    });
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read the fly.toml schema at {path}: {e}"));
    serde_json::from_str(&text).expect("schema is JSON")
}

fn fly_toml() -> serde_json::Value {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fly.toml")).unwrap();
    let value: toml::Value = toml::from_str(&text).expect("fly.toml parses");
    serde_json::to_value(value).unwrap()
}

#[test]
fn fly_toml_is_valid_against_the_schema() {
    let validator = jsonschema::validator_for(&fly_schema()).expect("schema compiles");
    let config = fly_toml();
    let errors: Vec<String> = validator
        .iter_errors(&config)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn fly_toml_keeps_owners_up_checks_readiness_and_flushes_on_stop() {
    let config = fly_toml();
    let service = &config["http_service"];
    assert_eq!(service["auto_stop_machines"], "off");
    assert_eq!(service["internal_port"], 8080);
    assert_eq!(service["checks"][0]["path"], "/readyz");
    assert_eq!(config["kill_signal"], "SIGTERM");
    assert_eq!(
        config["mounts"][0]["destination"],
        config["env"]["ROOST_DATA_DIR"]
    );
    let kill_timeout: u64 = config["kill_timeout"]
        .as_str()
        .unwrap()
        .trim_end_matches('s')
        .parse()
        .unwrap();
    let drain_ms: u64 = config["env"]["ROOST_SHUTDOWN_TIMEOUT_MS"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        drain_ms < kill_timeout * 1000,
        "roost must finish before Fly kills it"
    );
    assert!(config["env"]["ROOST_LISTEN"]
        .as_str()
        .unwrap()
        .ends_with(":8080"));
}
