#!/usr/bin/env python3
"""Writes prf-share-key.json: PRF output -> share identity -> recipient, computed here
independently of both implementations under test (src/crypto/keys.rs, web/static/quorum.js):
HKDF-SHA256 from Python's hmac/hashlib (RFC 5869), Bech32 from the BIP-173 reference
algorithm, and the recipient from the age reference CLI (`age-keygen -y`, which also
rejects a bad Bech32 checksum). Run from anywhere: python3 tests/vectors/gen-prf-share-key.py
"""
import base64, hashlib, hmac, json, os, subprocess

LABEL_PRF_SHARE = b"breakglass/v1/prf-share-key"
PRF_SALT_INPUT = b"breakglass/prf/v1"
INPUTS = [
    ("all zero", bytes(32)),
    ("ramp 0x01..0x20", bytes(range(1, 33))),
    # Drawn once from os.urandom and fixed here.
    ("random", bytes.fromhex("9682c5817939cfd1b524d8428c56c753776370be6dfb802a9b8f86eec9bd7e8f")),
]


def hkdf_sha256(ikm: bytes, info: bytes, length: int) -> bytes:
    prk = hmac.new(b"\x00" * 32, ikm, hashlib.sha256).digest()  # no salt = HashLen zeros
    okm, t, i = b"", b"", 1
    while len(okm) < length:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        okm, i = okm + t, i + 1
    return okm[:length]


CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def bech32_polymod(values):
    gen = [0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3]
    chk = 1
    for v in values:
        b = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= gen[i] if ((b >> i) & 1) else 0
    return chk


def bech32_encode(hrp: str, data: bytes) -> str:
    acc, bits, words = 0, 0, []
    for b in data:
        acc, bits = (acc << 8) | b, bits + 8
        while bits >= 5:
            bits -= 5
            words.append((acc >> bits) & 31)
    if bits:
        words.append((acc << (5 - bits)) & 31)
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    pm = bech32_polymod(expanded + words + [0] * 6) ^ 1
    checksum = [(pm >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(CHARSET[w] for w in words + checksum)


cases = []
for name, prf in INPUTS:
    scalar = hkdf_sha256(prf, LABEL_PRF_SHARE, 32)
    identity = bech32_encode("age-secret-key-", scalar).upper()
    recipient = subprocess.run(
        ["age-keygen", "-y"], input=identity + "\n", capture_output=True, text=True, check=True
    ).stdout.strip()
    cases.append({"name": name, "prf_output_hex": prf.hex(), "identity": identity, "recipient": recipient})

salt = hashlib.sha256(PRF_SALT_INPUT).digest()
doc = {
    "description": "WebAuthn PRF output (prf.results.first) -> age X25519 share identity: "
    "HKDF-SHA256(ikm = PRF output, salt = none/empty, info = label, L = 32) is the X25519 secret, "
    "Bech32 under 'age-secret-key-', upper-cased. Produced by gen-prf-share-key.py.",
    "label": LABEL_PRF_SHARE.decode(),
    "prf_salt_input": PRF_SALT_INPUT.decode(),
    "prf_salt_hex": salt.hex(),
    "prf_salt_b64url": base64.urlsafe_b64encode(salt).rstrip(b"=").decode(),
    "cases": cases,
}
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "prf-share-key.json")
with open(out, "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
print(f"wrote {out}")
