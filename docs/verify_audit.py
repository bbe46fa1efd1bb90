#!/usr/bin/env python3
"""Independent verifier for the breakglass audit log (docs/audit-log.md).

Usage: python3 docs/verify_audit.py EXPORT.jsonl
       (EXPORT.jsonl from `breakglass audit export --format jsonl`)
Exits 0 and prints the size and head when the chain verifies; exits 1 naming the
first broken seq otherwise. Uses only the Python standard library, so it checks the
hash chain only: the WebAuthn evidence, the approvals table and the signed checkpoints
(docs/audit-log.md, "Approval evidence" and "Checkpoints kept in the database") need
ECDSA/RSA/Ed25519 and are checked by `breakglass audit verify`.
"""
import hashlib
import json
import struct
import sys

DOMAIN = b"breakglass/audit/v1"


def entry_hash(seq, prev_hash, at, actor, action, subject, details):
    h = hashlib.sha256()
    h.update(DOMAIN)
    h.update(struct.pack(">Q", seq))
    for field in (prev_hash, at.encode(), actor.encode(), action.encode(),
                  subject.encode(), details.encode()):
        h.update(struct.pack(">Q", len(field)))
        h.update(field)
    return h.digest()


def verify(lines):
    prev = bytes(32)
    expected = 1
    for line in lines:
        if not line.strip():
            continue
        e = json.loads(line)
        if e["seq"] != expected:
            return f"broken at seq {expected}: found seq {e['seq']}"
        if bytes.fromhex(e["prev_hash"]) != prev:
            return f"broken at seq {expected}: prev_hash mismatch"
        h = entry_hash(e["seq"], prev, e["at"], e["actor"], e["action"],
                       e["subject"], e["details"])
        if h.hex() != e["hash"]:
            return f"broken at seq {expected}: hash mismatch"
        prev = h
        expected += 1
    return (expected - 1, prev.hex())


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1] == "--vector":
        print(entry_hash(1, bytes(32), "2026-11-21T14:00:00.000Z", "host:cli",
                         "invite.created",
                         "invite:7d0f3c1e-0000-4000-8000-000000000001",
                         '{"expires_at":"2026-11-24T14:00:00Z","roles":["admin","custodian"]}').hex())
        sys.exit(0)
    with open(sys.argv[1], encoding="utf-8") as f:
        result = verify(f)
    if isinstance(result, str):
        print("audit log", result)
        sys.exit(1)
    print(f"ok: {result[0]} entries, head {result[1]}")
