// web/static/quorum.js against the shared vector (tests/vectors/prf-share-key.json, also
// checked by src/crypto/keys.rs) and against the age reference CLI.
// Run: node --test web/tests/   (cargo test runs it too: tests/it/web_crypto.rs)
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import {
  LABEL_PRF_SHARE,
  PRF_SALT,
  PRF_SALT_B64URL,
  PRF_SALT_INPUT,
  fromBase64,
  fromBase64url,
  rewrapShare,
  shareIdentityFromPrf,
  toBase64,
  toBase64url,
  withPrf,
} from "../static/quorum.js";
import { Decrypter, Encrypter, generateX25519Identity, identityToRecipient } from "../static/vendor/age-encryption.js";

const vector = JSON.parse(readFileSync(new URL("../../tests/vectors/prf-share-key.json", import.meta.url), "utf8"));
const hex = (s) => Uint8Array.from(s.match(/../g) ?? [], (b) => parseInt(b, 16));
const utf8 = (s) => new TextEncoder().encode(s);

async function encryptTo(recipient, bytes) {
  const e = new Encrypter();
  e.addRecipient(recipient);
  return e.encrypt(bytes);
}

async function decryptWith(identity, bytes) {
  const d = new Decrypter();
  d.addIdentity(identity);
  return d.decrypt(bytes);
}

test("the PRF salt is SHA-256 of its documented input and matches the shared vector", async () => {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", utf8(PRF_SALT_INPUT)));
  assert.deepEqual(PRF_SALT, digest);
  assert.equal(PRF_SALT_B64URL, toBase64url(digest));
  assert.equal(PRF_SALT_B64URL, vector.prf_salt_b64url);
  assert.deepEqual(digest, hex(vector.prf_salt_hex));
  assert.equal(PRF_SALT_INPUT, vector.prf_salt_input);
  assert.equal(LABEL_PRF_SHARE, vector.label);
});

test("withPrf asks for PRF with the salt, keeps other extensions and leaves its argument alone", () => {
  const challenge = new Uint8Array([1, 2, 3]);
  const options = { challenge, rpId: "custody.example.com", extensions: { appid: "x" } };
  const out = withPrf(options);
  assert.equal(out.challenge, challenge);
  assert.equal(out.rpId, "custody.example.com");
  assert.equal(out.extensions.appid, "x");
  assert.deepEqual(out.extensions.prf.eval.first, PRF_SALT);
  assert.deepEqual(options.extensions, { appid: "x" }, "the caller's object is not modified");
  assert.deepEqual(withPrf({ challenge }).extensions, { prf: { eval: { first: PRF_SALT } } });
  // Changing the exported copy does not change what is sent.
  const saved = PRF_SALT[0];
  PRF_SALT[0] ^= 0xff;
  assert.equal(withPrf({ challenge }).extensions.prf.eval.first[0], saved);
  PRF_SALT[0] = saved;
  assert.throws(() => withPrf({ publicKey: options }), TypeError);
  assert.throws(() => withPrf(null), TypeError);
});

test("the share identity of every vector case is exactly the one Rust derives", async () => {
  assert.ok(vector.cases.length >= 3);
  for (const c of vector.cases) {
    const prf = hex(c.prf_output_hex);
    const fromBuffer = await shareIdentityFromPrf(prf.slice().buffer); // what WebAuthn hands over
    assert.deepEqual(fromBuffer, { identity: c.identity, recipient: c.recipient }, c.name);
    const fromView = await shareIdentityFromPrf(prf);
    assert.deepEqual(fromView, fromBuffer, `${c.name}: a Uint8Array works too`);
    assert.deepEqual(prf, hex(c.prf_output_hex), `${c.name}: the caller's bytes are not wiped or changed`);
  }
});

test("a PRF output that is not 32 bytes is refused", async () => {
  await assert.rejects(shareIdentityFromPrf(new Uint8Array(31)), TypeError);
  await assert.rejects(shareIdentityFromPrf(new Uint8Array(33)), TypeError);
  await assert.rejects(shareIdentityFromPrf("00".repeat(32)), TypeError);
});

test("rewrapShare moves a share from the holder's key to the transit key without changing a byte", async () => {
  const [holder] = vector.cases.filter((c) => c.name === "random");
  const { identity, recipient } = await shareIdentityFromPrf(hex(holder.prf_output_hex));
  const share = new Uint8Array(300).map((_, i) => (i * 7 + 3) & 0xff); // binary, not UTF-8
  const shareB64 = toBase64(await encryptTo(recipient, share));

  const transit = await generateX25519Identity();
  const rewrapped = await rewrapShare(shareB64, identity, await identityToRecipient(transit));

  const bytes = fromBase64(rewrapped);
  assert.equal(new TextDecoder().decode(bytes.subarray(0, 22)), "age-encryption.org/v1\n", "binary age, not armored");
  assert.deepEqual(await decryptWith(transit, bytes), share);
  // The holder's own key does not open the rewrapped file: it is for the transit key only.
  await assert.rejects(decryptWith(identity, bytes));
});

test("rewrapShare fails with another holder's identity, a bad transit recipient or an armored share", async () => {
  const [a, b] = vector.cases;
  const alice = await shareIdentityFromPrf(hex(a.prf_output_hex));
  const bob = await shareIdentityFromPrf(hex(b.prf_output_hex));
  const shareB64 = toBase64(await encryptTo(alice.recipient, utf8("share")));
  const transit = bob.recipient;

  await assert.rejects(rewrapShare(shareB64, bob.identity, transit), /no identity matched/i);
  for (const bad of ["", "age1", "AGE1" + transit.slice(4).toUpperCase(), transit.slice(0, -1) + "q", "age1pq1xyz"]) {
    await assert.rejects(rewrapShare(shareB64, alice.identity, bad), TypeError, JSON.stringify(bad));
  }
  await assert.rejects(rewrapShare("not base64!", alice.identity, transit), TypeError);
  const armored = toBase64(utf8("-----BEGIN AGE ENCRYPTED FILE-----\nYWdl\n-----END AGE ENCRYPTED FILE-----\n"));
  await assert.rejects(rewrapShare(armored, alice.identity, transit), /armored/);
  await assert.rejects(rewrapShare(toBase64(utf8("age-encryption.org/v1\n")), alice.identity, transit));
});

test("base64 helpers round-trip and refuse what is not base64", () => {
  for (let n = 0; n < 70; n++) {
    const bytes = Uint8Array.from({ length: n }, (_, i) => (i * 37 + n) & 0xff);
    assert.deepEqual(fromBase64(toBase64(bytes)), bytes);
    assert.deepEqual(fromBase64url(toBase64url(bytes)), bytes);
    assert.equal(toBase64(bytes), Buffer.from(bytes).toString("base64"));
    assert.equal(toBase64url(bytes), Buffer.from(bytes).toString("base64url"));
  }
  assert.deepEqual(fromBase64url("-_8"), Uint8Array.of(0xfb, 0xff));
  for (const bad of ["a", "ab=c", "abc", "a b=", "-_8="]) assert.throws(() => fromBase64(bad), TypeError, bad);
  for (const bad of ["a", "a+b", "ab c", "abcde"]) assert.throws(() => fromBase64url(bad), TypeError, bad);
});

test("the vendored bundle runs under the page's CSP: no eval, no Function constructor, no wasm", () => {
  const src = readFileSync(new URL("../static/vendor/age-encryption.js", import.meta.url), "utf8");
  for (const needle of ["eval(", "new Function", "Function(", "WebAssembly", "importScripts"]) {
    assert.ok(!src.includes(needle), `bundle contains ${needle}`);
  }
  const quorum = readFileSync(new URL("../static/quorum.js", import.meta.url), "utf8");
  assert.ok(!quorum.includes("eval(") && !quorum.includes("new Function"));
});

// The reference implementation must agree: a file JS encrypts to a derived recipient opens
// with `age -d -i`, and a file the CLI encrypts to it is rewrapped by JS.
test("the age CLI opens what JS encrypted to a derived recipient, and the reverse", async (t) => {
  const which = spawnSync("age", ["--version"], { encoding: "utf8" });
  assert.ok(!which.error && which.status === 0, "the `age` CLI is required for this test (Debian package `age`)");

  const dir = mkdtempSync(join(tmpdir(), "breakglass-quorum-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const c = vector.cases[1];
  const { identity, recipient } = await shareIdentityFromPrf(hex(c.prf_output_hex));
  const idFile = join(dir, "identity.txt");
  writeFileSync(idFile, identity + "\n", { mode: 0o600 });

  const payload = Uint8Array.from({ length: 1000 }, (_, i) => (i * 13) & 0xff);
  const out = execFileSync("age", ["-d", "-i", idFile], { input: await encryptTo(recipient, payload) });
  assert.deepEqual(new Uint8Array(out), payload);

  // A share made by the CLI (as the server's Rust age makes them) for the same recipient.
  const share = execFileSync("age", ["-r", recipient], { input: payload });
  const transit = await generateX25519Identity();
  const transitFile = join(dir, "transit.txt");
  writeFileSync(transitFile, transit + "\n", { mode: 0o600 });
  const transitRecipient = execFileSync("age-keygen", ["-y", transitFile], { encoding: "utf8" }).trim();
  const rewrapped = fromBase64(await rewrapShare(toBase64(share), identity, transitRecipient));
  const opened = execFileSync("age", ["-d", "-i", transitFile], { input: rewrapped });
  assert.deepEqual(new Uint8Array(opened), payload);
});
