// Quorum mode's browser side: the WebAuthn PRF output becomes an age X25519 identity
// (HKDF-SHA256 through WebCrypto, the same derivation as src/crypto/keys.rs), and a share
// encrypted to that identity is re-encrypted to the checkout's transit recipient.
// No hand-written crypto: HKDF and SHA-256 are WebCrypto, age and bech32 are the vendored
// age-encryption bundle (web/vendor-src). The PRF output and the identity never leave the
// browser; the share's plaintext is never parsed here. Wiping is best effort: our copies of
// the PRF output, the derived scalar and the decrypted share are zeroed, but strings (the
// `AGE-SECRET-KEY-1…` identity) and the library's internal chunk buffers cannot be, and
// stay in memory until the garbage collector reuses them.
//
// Shared test vector: tests/vectors/prf-share-key.json (checked by Rust and web/tests/).
import { Decrypter, Encrypter, bech32, identityToRecipient } from "./vendor/age-encryption.js";

const STD = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const B64URL = /^[A-Za-z0-9_-]*$/;

/** The HKDF info of the share key, as `LABEL_PRF_SHARE` in src/crypto/keys.rs. */
export const LABEL_PRF_SHARE = "breakglass/v1/prf-share-key";
/** What the PRF salt is the SHA-256 of, as `PRF_SALT_INPUT` in src/crypto/keys.rs. */
export const PRF_SALT_INPUT = "breakglass/prf/v1";
/** SHA-256("breakglass/prf/v1") in base64url without padding (the tests recompute it). */
export const PRF_SALT_B64URL = "UQBjUP5IMl1mtcWghtuDN6qj3LbemYfbMVgRmqR1Y7I";
/** The same 32 bytes. A copy: changing it changes nothing `withPrf` sends. */
export const PRF_SALT = fromBase64url(PRF_SALT_B64URL);

// ---- base64 and base64url (RFC 4648 §4 and §5) ----

function bytesOf(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError("expected an ArrayBuffer or a typed array");
}

/** Bytes (ArrayBuffer or view) → standard base64 with padding. */
export function toBase64(data) {
  const bytes = bytesOf(data);
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(bin);
}

/** Standard base64 with padding → Uint8Array; anything else throws. */
export function fromBase64(s) {
  if (typeof s !== "string" || s.length % 4 !== 0 || !STD.test(s)) {
    throw new TypeError("not standard base64 (RFC 4648 §4, padded)");
  }
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** Bytes → base64url without padding (WebAuthn's encoding). */
export function toBase64url(data) {
  return toBase64(data).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** base64url, padded or not → Uint8Array; anything else throws. */
export function fromBase64url(s) {
  if (typeof s !== "string") throw new TypeError("not base64url (RFC 4648 §5)");
  const bare = s.replace(/={0,2}$/, "");
  if (!B64URL.test(bare) || bare.length % 4 === 1) throw new TypeError("not base64url (RFC 4648 §5)");
  const std = bare.replace(/-/g, "+").replace(/_/g, "/");
  return fromBase64(std + "=".repeat((4 - (std.length % 4)) % 4));
}

// ---- PRF → age identity ----

/**
 * A copy of `publicKeyRequestOptions` (the `publicKey` member given to
 * `navigator.credentials.get`) that also asks for the PRF extension with our salt.
 * Other extensions are kept.
 */
export function withPrf(publicKeyRequestOptions) {
  if (publicKeyRequestOptions === null || typeof publicKeyRequestOptions !== "object") {
    throw new TypeError("withPrf expects PublicKeyCredentialRequestOptions");
  }
  if ("publicKey" in publicKeyRequestOptions) {
    throw new TypeError("withPrf expects the inner publicKey options, not { publicKey: … }");
  }
  return {
    ...publicKeyRequestOptions,
    extensions: {
      ...(publicKeyRequestOptions.extensions || {}),
      prf: { eval: { first: fromBase64url(PRF_SALT_B64URL) } },
    },
  };
}

/**
 * The age identity a PRF output stands for: HKDF-SHA256(ikm = prfFirst, salt = empty,
 * info = LABEL_PRF_SHARE, 32 bytes) is the X25519 secret, Bech32-encoded under
 * `age-secret-key-` and upper-cased, exactly as `derive_identity` in src/crypto/keys.rs.
 *
 * @param {ArrayBuffer|ArrayBufferView} prfFirst `clientExtensionResults.prf.results.first` (32 bytes)
 * @returns {Promise<{identity: string, recipient: string}>} `AGE-SECRET-KEY-1…` and `age1…`
 */
export async function shareIdentityFromPrf(prfFirst) {
  const view = bytesOf(prfFirst);
  if (view.length !== 32) throw new TypeError(`the PRF output must be 32 bytes, got ${view.length}`);
  const ikm = new Uint8Array(view); // our copy, wiped below; the caller's buffer is theirs
  let scalar;
  try {
    const key = await crypto.subtle.importKey("raw", ikm, "HKDF", false, ["deriveBits"]);
    const info = new TextEncoder().encode(LABEL_PRF_SHARE);
    scalar = new Uint8Array(
      await crypto.subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info }, key, 256),
    );
    const identity = bech32.encodeFromBytes("age-secret-key-", scalar).toUpperCase();
    const recipient = await identityToRecipient(identity);
    return { identity, recipient };
  } finally {
    ikm.fill(0);
    if (scalar) scalar.fill(0);
  }
}

// ---- contributing a share ----

const ARMOR_BEGIN = "-----BEGIN AGE ENCRYPTED FILE-----";

/** Is `s` a native X25519 recipient (`age1` + 32 bytes)? Shares go to nothing else. */
function isX25519Recipient(s) {
  if (typeof s !== "string" || s !== s.toLowerCase()) return false;
  try {
    const { prefix, bytes } = bech32.decodeToBytes(s);
    return prefix === "age" && bytes.length === 32;
  } catch {
    return false;
  }
}

/**
 * Decrypts a share (standard base64 of a binary age file, not armored) with `identity`
 * and encrypts the same bytes to `transitRecipient`; returns standard base64 of the new
 * binary age file. The plaintext is not looked at and is zeroed before returning.
 * Throws if the identity does not open the share.
 *
 * @param {string} shareCiphertextB64
 * @param {string} identity `AGE-SECRET-KEY-1…` from shareIdentityFromPrf
 * @param {string} transitRecipient `age1…` of the checkout
 * @returns {Promise<string>}
 */
export async function rewrapShare(shareCiphertextB64, identity, transitRecipient) {
  if (!isX25519Recipient(transitRecipient)) {
    throw new TypeError("the transit recipient is not an age X25519 recipient (age1…)");
  }
  const ciphertext = fromBase64(shareCiphertextB64);
  if (new TextDecoder().decode(ciphertext.subarray(0, ARMOR_BEGIN.length)) === ARMOR_BEGIN) {
    throw new TypeError("the share is an armored age file; expected the binary form");
  }
  const decrypter = new Decrypter();
  decrypter.addIdentity(identity);
  const plaintext = await decrypter.decrypt(ciphertext);
  try {
    const encrypter = new Encrypter();
    encrypter.addRecipient(transitRecipient);
    return toBase64(await encrypter.encrypt(plaintext));
  } finally {
    plaintext.fill(0);
  }
}
