"""MS9xx: what the analyzer could not see (no key, failed integrity check, malformed input).

These enforce no RFC 9611 requirement; they say where the analysis is blind, as Wireshark's
``PI_DECRYPTION``/``PI_CHECKSUM``/``PI_MALFORMED`` expert items do.
"""

from __future__ import annotations

from collections.abc import Iterator

from dissectors.ikev2.payloads import SkPayload

from ..events import MessageSeen
from ..model import ExpertGroup, Level, Severity
from . import Hit, rule


def sk_problems(e: MessageSeen) -> list[str]:
    return [p.error for p in e.msg.payloads if isinstance(p, SkPayload) and p.error]


def is_integrity_error(error: str) -> bool:
    return "integrity" in error.lower()


@rule(code="MS901", name="cannot-decrypt",
      title="Encrypted IKE message that could not be decrypted (no key)",
      rfc="RFC 7296 §3.14", level=Level.NONE, severity=Severity.WARNING,
      group=ExpertGroup.DECRYPTION)
def cannot_decrypt(e: MessageSeen) -> Iterator[Hit]:
    """## What it does
    Reports the first encrypted (SK/SKF) message of each IKE SA that could not be decrypted
    because no key was given for its SPIs; the rest of that IKE SA is not reported again.

    ## Why is this bad?
    Child SAs, resource identifiers and refusals travel inside SK payloads: without keys
    every RFC 9611 rule is blind for that IKE SA, and a clean report means nothing. Pass the
    `ikev2_decryption_table` strongSwan's save-keys plugin writes with `--keys`.

    ## Example
    Bad: `multisa lint capture.pcap` with no `--keys`.
    Good: `multisa lint capture.pcap --keys ikev2_decryption_table`.
    """
    errors = [x for x in sk_problems(e) if not is_integrity_error(x)]
    if errors and (e.ike is None or e.ike.undecrypted == 1):
        more = "" if e.ike is None else "; later messages of this IKE SA are not reported again"
        yield Hit(f"{errors[0]}{more}")


@rule(code="MS902", name="integrity-check-failed",
      title="Encrypted IKE message whose integrity check failed (wrong key?)",
      rfc="RFC 7296 §3.14", level=Level.NONE, severity=Severity.ERROR,
      group=ExpertGroup.CHECKSUM)
def integrity_check_failed(e: MessageSeen) -> Iterator[Hit]:
    """## What it does
    Reports the first message of each IKE SA whose SK/SKF integrity check value did not
    verify with the supplied keys.

    ## Why is this bad?
    Either the key table does not belong to this capture (a stale save-keys file) or the
    message was altered. The message is not parsed, so the analysis of that IKE SA is blind.

    ## Example
    Bad: keys from yesterday's run for today's capture with reused SPIs.
    Good: the key table written for this capture.
    """
    errors = [x for x in sk_problems(e) if is_integrity_error(x)]
    if errors and (e.ike is None or e.ike.integrity_failures == 1):
        yield Hit(errors[0])


@rule(code="MS903", name="malformed-payload",
      title="IKE message or payload that could not be decoded",
      rfc="RFC 7296 §3", level=Level.NONE, severity=Severity.ERROR,
      group=ExpertGroup.MALFORMED)
def malformed_payload(e: MessageSeen) -> Iterator[Hit]:
    """## What it does
    Reports an IKE message whose header or payload chain, or one of whose payloads, could not
    be decoded, naming the field and its byte offset in the message.

    ## Why is this bad?
    What follows the damage is unknown to the analyzer; the peer that receives it must reject
    it (RFC 7296 §2.21, INVALID_SYNTAX).

    ## Example
    Bad: a Notify payload whose Payload Length runs past the end of the message.
    Good: every length consistent with the bytes that follow.
    """
    if e.retransmission:
        return
    problems = [e.msg.malformed] if e.msg.malformed else []
    problems += [p.malformed for p in e.msg.all_payloads() if p.malformed and p.malformed not in problems]
    for m in problems:
        yield Hit(f"malformed IKE message: {m}")
