//! Secret masking: the values of a Secret's `data` and `stringData` are replaced by a stable
//! hash before anything is compared or printed, so a changed value still shows as a change but
//! never in clear.
//!
//! The hash covers the Secret's namespace, name and key as well as the decoded value, so equal
//! values in different Secrets do not look equal. A salt (e.g. `BOWLINE_SECRET_MASK_SALT`)
//! makes guessing short values from the hash impractical for anyone who does not hold it.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// How masked values are derived.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    salt: Vec<u8>,
}

impl Masker {
    /// A masker whose hashes also depend on `salt` (empty: no salt).
    pub fn with_salt(salt: impl Into<Vec<u8>>) -> Self {
        Masker { salt: salt.into() }
    }

    /// Masks `object` in place when it is a core/v1 Secret; other objects are unchanged.
    /// `stringData` is folded into `data` first (as the API server does), so a value written
    /// either way masks to the same text.
    pub fn mask(&self, object: &mut Value) {
        if !is_secret(object) {
            return;
        }
        let namespace = pointer_str(object, "/metadata/namespace").to_string();
        let name = pointer_str(object, "/metadata/name").to_string();
        let Some(map) = object.as_object_mut() else {
            return;
        };
        let mut values: Vec<(String, Vec<u8>)> = Vec::new();
        if let Some(Value::Object(data)) = map.remove("data") {
            for (key, value) in data {
                let bytes = value
                    .as_str()
                    .map(|s| decode_base64(s).unwrap_or_else(|| s.as_bytes().to_vec()))
                    .unwrap_or_else(|| value.to_string().into_bytes());
                values.push((key, bytes));
            }
        }
        if let Some(Value::Object(string_data)) = map.remove("stringData") {
            for (key, value) in string_data {
                let bytes = match value {
                    Value::String(s) => s.into_bytes(),
                    other => other.to_string().into_bytes(),
                };
                values.retain(|(k, _)| *k != key);
                values.push((key, bytes));
            }
        }
        if values.is_empty() {
            return;
        }
        let masked: serde_json::Map<String, Value> = values
            .into_iter()
            .map(|(key, bytes)| {
                let text = self.hash(&namespace, &name, &key, &bytes);
                (key, Value::String(text))
            })
            .collect();
        map.insert("data".to_string(), Value::Object(masked));
    }

    fn hash(&self, namespace: &str, name: &str, key: &str, value: &[u8]) -> String {
        let mut hasher = Sha256::new();
        hasher.update(b"bowline-secret-mask/v1\0");
        hasher.update(&self.salt);
        for part in [namespace, name, key] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        hasher.update(value);
        let digest = hasher.finalize();
        format!(
            "<masked sha256:{} {} bytes>",
            hex::encode(&digest[..6]),
            value.len()
        )
    }
}

/// True for a core/v1 `Secret`.
pub fn is_secret(object: &Value) -> bool {
    object.get("kind").and_then(Value::as_str) == Some("Secret")
        && object.get("apiVersion").and_then(Value::as_str) == Some("v1")
}

fn pointer_str<'v>(object: &'v Value, pointer: &str) -> &'v str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Standard base64 (with or without padding); `None` when `text` is not base64.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    STANDARD
        .decode(text)
        .or_else(|_| STANDARD_NO_PAD.decode(text))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secret(data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "db", "namespace": "shop"}, "data": data})
    }

    #[test]
    fn values_never_survive_and_hashes_are_stable() {
        let mut a = secret(json!({"password": "aHVudGVyMg=="})); // hunter2
        let mut b = a.clone();
        Masker::default().mask(&mut a);
        Masker::default().mask(&mut b);
        let text = a.to_string();
        assert!(
            !text.contains("aHVudGVyMg") && !text.contains("hunter2"),
            "{text}"
        );
        assert_eq!(a, b);
        assert!(
            a["data"]["password"]
                .as_str()
                .is_some_and(|s| s.starts_with("<masked sha256:") && s.ends_with(" 7 bytes>"))
        );
    }

    #[test]
    fn string_data_and_data_mask_alike() {
        let mut encoded = secret(json!({"token": "czNjcjN0"}));
        let mut plain = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db", "namespace": "shop"}, "stringData": {"token": "s3cr3t"}});
        Masker::default().mask(&mut encoded);
        Masker::default().mask(&mut plain);
        assert_eq!(encoded, plain);
    }

    #[test]
    fn a_changed_value_changes_the_mask_and_salt_matters() {
        let mut a = secret(json!({"k": "YQ=="}));
        let mut b = secret(json!({"k": "Yg=="}));
        let mut c = secret(json!({"k": "YQ=="}));
        Masker::default().mask(&mut a);
        Masker::default().mask(&mut b);
        Masker::with_salt("pepper").mask(&mut c);
        assert_ne!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn other_kinds_are_untouched() {
        let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "v"}});
        let before = cm.clone();
        Masker::default().mask(&mut cm);
        assert_eq!(cm, before);
    }

    #[test]
    fn base64_decoding() {
        assert_eq!(decode_base64("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
        assert_eq!(decode_base64("aGVsbG8").as_deref(), Some(&b"hello"[..]));
        assert_eq!(decode_base64("").as_deref(), Some(&b""[..]));
        assert_eq!(decode_base64("not base64!"), None);
    }
}
