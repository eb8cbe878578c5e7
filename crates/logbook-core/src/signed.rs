//! Tamper-evident tokens made by the server for itself (pagination cursors, viewer tokens).
//!
//! Layout: base64url(`payload ‖ MAC`), MAC being the first 16 bytes of SHA-256(secret ‖ payload). The secret
//! is per deployment, so a token from another deployment, or one with a changed byte, does not open.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

const MAC_BYTES: usize = 16;

fn mac(secret: &[u8], payload: &[u8]) -> [u8; MAC_BYTES] {
    let digest = Sha256::new()
        .chain_update(secret)
        .chain_update(payload)
        .finalize();
    let mut out = [0; MAC_BYTES];
    out.copy_from_slice(&digest[..MAC_BYTES]);
    out
}

/// Seals `payload` with the secret.
pub fn seal(secret: &[u8], payload: &[u8]) -> String {
    let mut bytes = payload.to_vec();
    bytes.extend_from_slice(&mac(secret, payload));
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The payload of a sealed text, or `None` if it is malformed or its MAC does not check.
pub fn open(secret: &[u8], text: &str) -> Option<Vec<u8>> {
    let mut bytes = URL_SAFE_NO_PAD.decode(text.trim()).ok()?;
    if bytes.len() <= MAC_BYTES {
        return None;
    }
    let received = bytes.split_off(bytes.len() - MAC_BYTES);
    (mac(secret, &bytes)[..] == received[..]).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_only_with_the_same_secret_and_bytes() {
        let sealed = seal(b"secret", b"payload");
        assert_eq!(open(b"secret", &sealed).as_deref(), Some(&b"payload"[..]));
        assert_eq!(open(b"other", &sealed), None);
        let mut changed = sealed.clone();
        let last = changed.pop().unwrap();
        changed.push(if last == 'A' { 'B' } else { 'A' });
        assert_eq!(open(b"secret", &changed), None);
        assert_eq!(open(b"secret", ""), None);
        assert_eq!(open(b"secret", "!!!"), None);
    }
}
