//! Named policies from configuration: `--ratelimit-policy api=100/60s`
//! (repeatable, or comma-separated in `ROOST_RATELIMIT_POLICY`), so clients
//! can say `{"policy": "api"}` instead of repeating numbers.

use super::gcra::Policy;
use std::collections::HashMap;
use std::str::FromStr;

/// One `name=limit/window` flag value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPolicy {
    pub name: String,
    pub policy: Policy,
}

impl FromStr for NamedPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let shape =
            || format!("rate-limit policy {text:?} is not name=limit/window (e.g. api=100/60s)");
        let (name, rule) = text.split_once('=').ok_or_else(shape)?;
        let (limit, window) = rule.split_once('/').ok_or_else(shape)?;
        let name = name.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!(
                "rate-limit policy name {name:?} must be letters, digits, '-', '_' or '.'"
            ));
        }
        let limit: u64 = limit.trim().parse().map_err(|_| {
            format!("rate-limit policy {name:?}: limit {limit:?} is not a whole number")
        })?;
        let window_ms = parse_window(window.trim())
            .ok_or_else(|| format!("rate-limit policy {name:?}: window {window:?} needs a number and a unit: ms, s, m, h or d (e.g. 60s)"))?;
        let policy = Policy::new(limit, window_ms)
            .map_err(|e| format!("rate-limit policy {name:?}: {e}"))?;
        Ok(NamedPolicy {
            name: name.to_owned(),
            policy,
        })
    }
}

fn parse_window(text: &str) -> Option<u64> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let unit_ms = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(unit_ms)
}

/// The configured policies by name.
#[derive(Debug, Clone, Default)]
pub struct NamedPolicies(HashMap<String, Policy>);

impl NamedPolicies {
    /// Later flags win over earlier ones with the same name.
    pub fn new(policies: impl IntoIterator<Item = NamedPolicy>) -> Self {
        NamedPolicies(policies.into_iter().map(|p| (p.name, p.policy)).collect())
    }

    pub fn get(&self, name: &str) -> Option<Policy> {
        self.0.get(name).copied()
    }

    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<_> = self.0.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_values_parse_with_units() {
        let api: NamedPolicy = "api=100/60s".parse().unwrap();
        assert_eq!(
            api.policy,
            Policy {
                limit: 100,
                window_ms: 60_000
            }
        );
        let login: NamedPolicy = " login = 5 / 15m ".parse().unwrap();
        assert_eq!(login.name, "login");
        assert_eq!(login.policy.window_ms, 900_000);
        assert_eq!(
            "burst=10/250ms"
                .parse::<NamedPolicy>()
                .unwrap()
                .policy
                .window_ms,
            250
        );
    }

    #[test]
    fn bad_flag_values_say_what_is_wrong() {
        for bad in [
            "api",
            "api=100",
            "api=x/1s",
            "api=100/60",
            "api=100/1y",
            "=1/1s",
            "a b=1/1s",
            "api=0/1s",
            "api=1/0s",
        ] {
            let err = bad.parse::<NamedPolicy>().unwrap_err();
            assert!(err.contains("rate-limit policy"), "{bad}: {err}");
        }
        let policies = NamedPolicies::new(["a=1/1s".parse().unwrap(), "a=2/1s".parse().unwrap()]);
        assert_eq!(policies.get("a").unwrap().limit, 2);
        assert_eq!(policies.names(), ["a"]);
    }
}
