#!/usr/bin/env python3
"""Independent verifier for the breakglass audit log (docs/audit-log.md).

Usage: python3 docs/verify_audit.py EXPORT.jsonl
       (EXPORT.jsonl from `breakglass audit export --format jsonl`)

Written from docs/audit-log.md alone, with the Python standard library only. It checks:

- the hash chain ("Verifying"): on a break it prints `audit log broken at seq N: ...`
  and exits 1;
- the replay of the evidence ("Approval evidence, verified offline" and "The story must
  follow from the evidence"): every rule that needs no public-key cryptography. That is
  who owns which credential, that each challenge is issued once and used at most once,
  for its checkout, person and purpose, clientDataJSON (type, challenge, crossOrigin,
  origin), the RP id hash and the UP and UV flags, per-credential signature counters,
  decisions that match their action, and the quorum and veto rules recorded with each
  request. Each problem is printed as `seq N: ...`, and the exit status is 1.

Not checked here: the signatures themselves (ECDSA, RSA), which the standard library
cannot verify, the `approvals` table and the checkpoints, which are not in the export.
`breakglass audit verify` checks all of those as well.
"""
import base64
import binascii
import hashlib
import json
import struct
import sys
from urllib.parse import urlsplit

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
    """The chain: (entries, head hex, parsed entries), or a string naming the break."""
    prev = bytes(32)
    expected = 1
    entries = []
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
        entries.append(e)
        prev = h
        expected += 1
    return (expected - 1, prev.hex(), entries)


def b64url(text):
    """Bytes of canonical unpadded base64url text, else None."""
    if not isinstance(text, str) or not text or "=" in text:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != text:
        return None
    return raw


def serialized_origin(url):
    """(scheme, host, port) of an origin, or None; `http://h:1/` equals `http://h:1`."""
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError:
        return None
    if u.scheme not in ("http", "https") or not u.hostname or u.path not in ("", "/"):
        return None
    if u.query or u.fragment or u.username or u.password:
        return None
    default = 443 if u.scheme == "https" else 80
    return (u.scheme, u.hostname.lower(), port or default)


class Track:
    """One open checkout, as far as the log has told its story."""

    def __init__(self, requester, d):
        self.requester = requester
        self.required = d.get("approvals_required")
        self.veto = d.get("veto")
        approvers = d.get("approvers")
        self.approvers = (None if approvers in (None, "all")
                          else {f"custodian:{i}" for i in approvers})
        self.task_policy = d.get("task_policy")
        self.decided = set()
        self.approved_by = set()
        self.denied_by = set()
        self.approved = False
        self.authorised_pending = 0


class Replay:
    PURPOSE = {"approval.challenge_issued": "approval", "release.challenge_issued": "release"}

    def __init__(self):
        self.owners = {}       # credential id -> custodian:<id>
        self.disabled = set()
        self.tracks = {}       # checkout id -> Track
        self.open_by_subject = {}
        self.challenges = {}   # challenge text -> dict
        self.counters = {}     # credential id -> (counter, seq)
        self.problems = []
        self.evidence_checked = 0

    def problem(self, seq, message):
        self.problems.append(f"seq {seq}: {message}")

    def end(self, checkout):
        if self.tracks.pop(checkout, None) is not None:
            self.open_by_subject = {s: c for s, c in self.open_by_subject.items() if c != checkout}

    def check_evidence(self, seq, checkout, actor, purpose, decision, ev):
        """Rules 1-6 and 8 of "An evidence record is valid": None, or what failed."""
        if not isinstance(ev, dict):
            return "no readable evidence"
        owner = self.owners.get(ev.get("credential_id"))
        if owner is None:
            return "its credential was not enrolled earlier in this log"
        if owner != actor:
            return f"it is signed with a credential of {owner}, not of {actor}"
        if checkout not in self.tracks:
            return f"checkout {checkout} is not open here"
        issued = self.challenges.get(ev.get("challenge"))
        if issued is None:
            return "its challenge was never issued"
        if issued["checkout"] != checkout:
            return f"its challenge was issued for checkout {issued['checkout']}, not for {checkout}"
        if issued["actor"] != actor:
            return f"its challenge was issued to {issued['actor']}, not to {actor}"
        if issued["purpose"] != purpose:
            return f"its challenge was issued for a {issued['purpose']}, not for a {purpose}"
        if issued["used_at"] is not None:
            return f"its challenge (issued at seq {issued['seq']}) was already used at seq {issued['used_at']}"
        if issued["decision"] is not None and decision is not None and issued["decision"] != decision:
            return f"its challenge was issued for the decision {issued['decision']}, not {decision}"
        cdj = b64url(ev.get("client_data_json"))
        try:
            client = json.loads(cdj) if cdj is not None else None
        except ValueError:
            client = None
        if not isinstance(client, dict):
            return "client_data_json is not a JSON object"
        if client.get("type") != "webauthn.get":
            return "client_data_json's type is not webauthn.get"
        if b64url(client.get("challenge")) is None or \
                b64url(client.get("challenge")) != b64url(ev.get("challenge")):
            return "client_data_json names another challenge"
        if client.get("crossOrigin") not in (None, False):
            return "client_data_json says crossOrigin"
        origin = serialized_origin(client.get("origin", ""))
        rp_id = issued["rp_id"] or ""
        if issued["origin"] is not None:
            if origin is None or origin != serialized_origin(issued["origin"]):
                return f"signed for origin {client.get('origin')!r}, not {issued['origin']!r}"
        elif origin is None or not (origin[1] == rp_id or origin[1].endswith("." + rp_id)) or \
                (origin[0] == "http" and origin[1] != "localhost"):
            return f"origin {client.get('origin')!r} does not fit the RP id {rp_id!r}"
        auth = b64url(ev.get("authenticator_data"))
        if auth is None or len(auth) < 37:
            return "authenticator_data is too short"
        if auth[:32] != hashlib.sha256(rp_id.encode()).digest():
            return "authenticator_data is for another RP id"
        if auth[32] & 0x05 != 0x05:
            return "the authenticator did not report both user presence and user verification"
        count = struct.unpack(">I", auth[33:37])[0]
        last = self.counters.get(ev["credential_id"])
        if last is not None and (count != 0 or last[0] != 0) and count <= last[0]:
            return (f"its signature counter {count} is not above {last[0]}, seen at seq {last[1]} "
                    "for the same credential")
        self.counters[ev["credential_id"]] = (count, seq)
        issued["used_at"] = seq
        return None

    def observe(self, e):
        seq, actor, action, subject = e["seq"], e["actor"], e["action"], e["subject"]
        try:
            d = json.loads(e["details"])
        except ValueError:
            self.problem(seq, "details is not JSON")
            return
        if not isinstance(d, dict):
            d = {}
        checkout = d.get("checkout")
        if action in ("custodian.enrolled", "credential.added"):
            cred = d.get("credential_id")
            if cred in self.owners:
                self.problem(seq, f"credential {cred} is enrolled a second time")
            elif cred:
                self.owners[cred] = subject
        elif action == "custodian.disabled":
            self.disabled.add(subject)
        elif action == "checkout.requested":
            old = self.open_by_subject.pop(subject, None)
            if old is not None:
                self.tracks.pop(old, None)
            self.tracks[checkout] = Track(actor, d)
            self.open_by_subject[subject] = checkout
        elif action in self.PURPOSE:
            text = d.get("challenge")
            if b64url(text) is None:
                self.problem(seq, "its challenge is not canonical base64url")
            elif text in self.challenges:
                self.problem(seq, f"this challenge was already issued at seq {self.challenges[text]['seq']}")
            else:
                self.challenges[text] = {
                    "seq": seq, "checkout": checkout, "actor": actor,
                    "purpose": self.PURPOSE[action], "decision": d.get("decision"),
                    "rp_id": d.get("rp_id"), "origin": d.get("origin"), "used_at": None,
                }
        elif action in ("checkout.approval_recorded", "checkout.denial_recorded"):
            decision = "approve" if action == "checkout.approval_recorded" else "deny"
            if d.get("decision") != decision:
                self.problem(seq, f"details.decision {d.get('decision')!r} disagrees with its action {action}")
            self.evidence_checked += 1
            why = self.check_evidence(seq, checkout, actor, "approval", decision, d.get("evidence"))
            if why is not None:
                self.problem(seq, f"{decision} evidence (checkout {checkout}): {why}")
            else:
                self.count_decision(seq, actor, checkout, decision)
        elif action == "checkout.approved":
            t = self.tracks.get(checkout)
            if t is None:
                self.problem(seq, f"checkout {checkout} was approved but is not open")
            else:
                t.approved = True
                if not isinstance(t.required, int) or t.required < 1 or len(t.approved_by) < t.required:
                    self.problem(seq, f"checkout {checkout} was approved with {len(t.approved_by)} "
                                      f"counted approval(s); {t.required} required")
        elif action == "checkout.denied":
            t = self.tracks.get(checkout)
            if t is None:
                self.problem(seq, f"checkout {checkout} was denied but is not open")
            elif not t.denied_by:
                self.problem(seq, f"checkout {checkout} was denied without a counted denial")
            elif t.veto is False:
                self.problem(seq, f"checkout {checkout} was denied although its policy has no veto")
            self.end(checkout)
        elif action == "checkout.cancelled":
            t = self.tracks.get(checkout)
            if t is not None and t.requester != actor:
                self.problem(seq, f"checkout {checkout} was cancelled by someone other than its requester")
            self.end(checkout)
        elif action in ("checkout.expired", "checkout.closed"):
            self.end(checkout)
        elif action == "checkout.released":
            t = self.tracks.get(checkout)
            if t is None or not t.approved:
                self.problem(seq, f"checkout {checkout} was released without being approved")
        elif action in ("checkout.root_task_issued", "checkout.root_task_failed"):
            t = self.tracks.get(checkout)
            if t is None or t.authorised_pending == 0 or t.task_policy != d.get("task_policy"):
                self.problem(seq, f"a root-task outcome on checkout {checkout} without its own authorisation")
            else:
                t.authorised_pending -= 1
        elif action in ("checkout.revealed", "account.reshared", "checkout.root_task_authorized"):
            t = self.tracks.get(checkout)
            if action == "checkout.root_task_authorized" and t is not None:
                if d.get("task_policy") is not None and d.get("task_policy") == t.task_policy:
                    t.authorised_pending += 1
                else:
                    self.problem(seq, f"a root-task authorisation on checkout {checkout} for another task policy")
            if t is None or not t.approved or t.requester != actor:
                self.problem(seq, f"a reveal on checkout {checkout} by someone other than its approved requester")
            self.evidence_checked += 1
            why = self.check_evidence(seq, checkout, actor, "release", None, d.get("evidence"))
            if why is not None:
                self.problem(seq, f"release evidence (checkout {checkout}): {why}")

    def count_decision(self, seq, actor, checkout, decision):
        t = self.tracks.get(checkout)
        if t is None:
            return
        if actor == t.requester:
            self.problem(seq, f"the requester decided on their own checkout {checkout}")
        elif actor in t.decided:
            self.problem(seq, f"{actor} decided twice on checkout {checkout}")
        elif t.approvers is not None and actor not in t.approvers:
            self.problem(seq, f"{actor} is not in the approver set recorded for checkout {checkout}")
        elif actor in self.disabled:
            self.problem(seq, f"{actor} decided on checkout {checkout} after being disabled")
        else:
            (t.approved_by if decision == "approve" else t.denied_by).add(actor)
        t.decided.add(actor)


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
    count, head, entries = result
    replay = Replay()
    for entry in entries:
        replay.observe(entry)
    for line in replay.problems:
        print(line)
    if replay.problems:
        sys.exit(1)
    print(f"ok: {count} entries, head {head}; {replay.evidence_checked} evidence records replayed "
          "(signatures not checked here)")
