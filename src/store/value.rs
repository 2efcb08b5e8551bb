//! SQL values as JSON: `null`, integers (exact i64), floats, strings, and
//! blobs as `{"base64": "..."}`. Booleans become 0/1 as SQLite stores them.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use libsql::Value;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One SQL value, convertible to and from the JSON form of the API.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlValue(pub Value);

impl SqlValue {
    /// Converts a JSON value, rejecting forms that have no SQL meaning.
    pub fn from_json(json: serde_json::Value) -> Result<Self, String> {
        use serde_json::Value as J;
        let value = match json {
            J::Null => Value::Null,
            J::Bool(b) => Value::Integer(i64::from(b)),
            J::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Integer(i)
                } else if n.is_u64() {
                    return Err(format!("integer {n} does not fit in a signed 64-bit value"));
                } else {
                    Value::Real(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            J::String(s) => Value::Text(s),
            J::Object(mut map) => match (map.remove("base64"), map.is_empty()) {
                (Some(J::String(b64)), true) => Value::Blob(
                    BASE64
                        .decode(b64.as_bytes())
                        .map_err(|e| format!("invalid base64 blob: {e}"))?,
                ),
                _ => return Err("an object value must be {\"base64\": \"...\"}".into()),
            },
            J::Array(_) => return Err("arrays are not SQL values".into()),
        };
        Ok(SqlValue(value))
    }

    /// Approximate encoded size, used to bound result sets.
    pub fn encoded_len(&self) -> usize {
        match &self.0 {
            Value::Null | Value::Integer(_) | Value::Real(_) => 8,
            Value::Text(s) => s.len() + 2,
            Value::Blob(b) => b.len() * 4 / 3 + 16,
        }
    }
}

impl Serialize for SqlValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Value::Null => serializer.serialize_unit(),
            Value::Integer(i) => serializer.serialize_i64(*i),
            Value::Real(f) => serializer.serialize_f64(*f),
            Value::Text(s) => serializer.serialize_str(s),
            Value::Blob(b) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("base64", &BASE64.encode(b))?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for SqlValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let json = serde_json::Value::deserialize(deserializer)?;
        SqlValue::from_json(json).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(v: Value) -> Value {
        let json = serde_json::to_string(&SqlValue(v)).unwrap();
        serde_json::from_str::<SqlValue>(&json).unwrap().0
    }

    #[test]
    fn extreme_integers_stay_exact() {
        assert_eq!(
            round_trip(Value::Integer(i64::MAX)),
            Value::Integer(i64::MAX)
        );
        assert_eq!(
            round_trip(Value::Integer(i64::MIN)),
            Value::Integer(i64::MIN)
        );
    }

    #[test]
    fn unrepresentable_json_is_rejected() {
        for bad in [
            "18446744073709551615",
            "[1]",
            "{\"x\":1}",
            "{\"base64\":\"!!\"}",
        ] {
            assert!(serde_json::from_str::<SqlValue>(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn values_round_trip(i in any::<i64>(), s in "\\PC*", b in proptest::collection::vec(any::<u8>(), 0..64), f in -1e300f64..1e300) {
            prop_assert_eq!(round_trip(Value::Integer(i)), Value::Integer(i));
            prop_assert_eq!(round_trip(Value::Text(s.clone())), Value::Text(s));
            prop_assert_eq!(round_trip(Value::Blob(b.clone())), Value::Blob(b));
            prop_assert_eq!(round_trip(Value::Real(f)), Value::Real(f));
        }
    }
}
