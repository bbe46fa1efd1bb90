// The only entry point of web/static/vendor/age-encryption.js: exactly what
// web/static/quorum.js (and its tests) use, so everything else is tree-shaken away.
export { Encrypter, Decrypter, identityToRecipient, generateX25519Identity } from "age-encryption";
export { bech32 } from "@scure/base";
