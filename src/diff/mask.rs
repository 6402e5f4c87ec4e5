//! Secret masking: the values of a Secret's `data` and `stringData` are replaced by a keyed
//! hash before anything is compared or printed, so a changed value still shows as a change but
//! never in clear.
//!
//! The hash is an HMAC-SHA256 under a random key (per installation: the daemon keeps it with its
//! state, see [`crate::store::mask_key`]; per run for the command line) over the Secret's
//! namespace, name, key and decoded value. Without the key nothing can be guessed from it, not
//! even a 4-digit PIN, and it carries no length; equal values of one Secret key still mask
//! alike, so "unchanged" stays visible.

use std::sync::Arc;

use hmac::{KeyInit, Mac};
use serde_json::Value;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// How masked values are derived: the HMAC key.
#[derive(Clone)]
pub struct Masker {
    key: Arc<[u8; 32]>,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Masker")
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Default for Masker {
    /// A masker with a fresh random key: hashes are comparable within this process only.
    fn default() -> Self {
        Masker::with_key(random_key())
    }
}

/// 32 random bytes from the operating system.
pub fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    if let Err(e) = getrandom::fill(&mut key) {
        // Without the OS's randomness there is no secret key to be had; a masker keyed by the
        // clock is still not guessable from outside, and this is logged.
        tracing::error!(error = %e, "no OS randomness for the secret-mask key");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let digest = <sha2::Sha256 as sha2::Digest>::digest(
            format!("{nanos}/{}", std::process::id()).as_bytes(),
        );
        key.copy_from_slice(&digest);
    }
    key
}

impl Masker {
    /// A masker whose hashes are keyed by `key`.
    pub fn with_key(key: [u8; 32]) -> Self {
        Masker { key: Arc::new(key) }
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
        // HMAC accepts keys of any length: this never fails for a 32-byte key.
        let Ok(mut mac) = HmacSha256::new_from_slice(self.key.as_slice()) else {
            return "<masked>".to_string();
        };
        mac.update(b"bowline-secret-mask/v2\0");
        for part in [namespace, name, key] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac.update(value);
        let digest = mac.finalize().into_bytes();
        format!("<masked hmac:{}>", hex::encode(&digest[..8]))
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
        let masker = Masker::default();
        masker.mask(&mut a);
        masker.mask(&mut b);
        let text = a.to_string();
        assert!(
            !text.contains("aHVudGVyMg") && !text.contains("hunter2"),
            "{text}"
        );
        assert_eq!(a, b);
        let masked = a["data"]["password"].as_str().expect("masked");
        assert!(masked.starts_with("<masked hmac:"), "{masked}");
        assert!(!masked.contains("bytes"), "no length: {masked}");
    }

    #[test]
    fn string_data_and_data_mask_alike() {
        let mut encoded = secret(json!({"token": "czNjcjN0"}));
        let mut plain = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db", "namespace": "shop"}, "stringData": {"token": "s3cr3t"}});
        let masker = Masker::default();
        masker.mask(&mut encoded);
        masker.mask(&mut plain);
        assert_eq!(encoded, plain);
    }

    #[test]
    fn a_changed_value_changes_the_mask_and_the_key_matters() {
        let mut a = secret(json!({"k": "YQ=="}));
        let mut b = secret(json!({"k": "Yg=="}));
        let mut c = secret(json!({"k": "YQ=="}));
        let masker = Masker::with_key([7; 32]);
        masker.mask(&mut a);
        masker.mask(&mut b);
        Masker::with_key([8; 32]).mask(&mut c);
        assert_ne!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn a_short_value_cannot_be_found_without_the_key() {
        // A 4-digit PIN, masked under an unknown key: an attacker hashing all 10,000 PINs
        // under any key of their own finds no match.
        let mut pin = secret(json!({"pin": "NDI0Mg=="})); // 4242
        Masker::default().mask(&mut pin);
        let target = pin["data"]["pin"].clone();
        let guesser = Masker::with_key([0; 32]);
        let found = (0..10_000).any(|n| {
            let mut guess = secret(json!({}));
            guess["stringData"] = json!({"pin": format!("{n:04}")});
            guesser.mask(&mut guess);
            guess["data"]["pin"] == target
        });
        assert!(!found);
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let debug = format!("{:?}", Masker::with_key([42; 32]));
        assert!(!debug.contains("42"), "{debug}");
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
