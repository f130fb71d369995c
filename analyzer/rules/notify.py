"""MS1xx: the wire format of SA_RESOURCE_INFO and TS_MAX_QUEUE (RFC 9611 §5), and where they go."""

from __future__ import annotations

from collections.abc import Iterator

from dissectors.iana import ExchangeType, NotifyType, ProtocolId, name_of

from ..events import NotifySeen
from ..model import ExpertGroup, Level, Severity
from . import Hit, rule

SA_RESOURCE_INFO = NotifyType.SA_RESOURCE_INFO
TS_MAX_QUEUE = NotifyType.TS_MAX_QUEUE


def _where(e: NotifySeen) -> str:
    kind = "response" if e.msg.response else "request"
    return f"{name_of(ExchangeType, e.msg.exchange)} {kind}"


@rule(code="MS101", name="resource-info-protocol-id-nonzero",
      title="SA_RESOURCE_INFO with a Protocol ID other than 0",
      rfc="RFC 9611 §5.1", level=Level.MUST, group=ExpertGroup.PROTOCOL)
def resource_info_protocol_id_nonzero(e: NotifySeen) -> Iterator[Hit]:
    """## What it does
    Flags an SA_RESOURCE_INFO notify (16444) whose Protocol ID field is not 0.

    ## Why is this bad?
    RFC 9611 §5.1: "Protocol ID (1 octet) - MUST be 0. MUST be ignored if not 0." The notify
    describes the Child SA being negotiated, not an existing SA, so it names no protocol. A
    sender that fills it in (often with 3, ESP) shows it built the notify like REKEY_SA.

    ## Example
    Bad: `CREATE_CHILD_SA request: SA, Ni, KEi, TSi, TSr, N(SA_RESOURCE_INFO, protocol 3)`.
    Good: `... N(SA_RESOURCE_INFO, protocol 0, SPI size 0)`.
    """
    n = e.notify
    if n.notify_type == SA_RESOURCE_INFO and n.protocol_id != 0:
        yield Hit(f"SA_RESOURCE_INFO in {_where(e)} has Protocol ID {n.protocol_id} "
                  f"({name_of(ProtocolId, n.protocol_id)}); it must be 0",
                  offset=n.offset + 4)  # Protocol ID: after the generic payload header


@rule(code="MS102", name="resource-info-spi-present",
      title="SA_RESOURCE_INFO with an SPI Size other than 0 or an SPI",
      rfc="RFC 9611 §5.1", level=Level.MUST, group=ExpertGroup.PROTOCOL)
def resource_info_spi_present(e: NotifySeen) -> Iterator[Hit]:
    """## What it does
    Flags an SA_RESOURCE_INFO notify whose SPI Size is not 0, i.e. one that carries an SPI.

    ## Why is this bad?
    RFC 9611 §5.1: "SPI Size (1 octet) - MUST be 0." A receiver that honours a non-zero SPI
    Size takes the first octets of the resource identifier as an SPI, so sender and receiver
    no longer agree on the identifier.

    ## Example
    Bad: `N(SA_RESOURCE_INFO, SPI size 4, SPI c1f7e800, data 00000001)`.
    Good: `N(SA_RESOURCE_INFO, SPI size 0, data 00000001)`.
    """
    n = e.notify
    if n.notify_type == SA_RESOURCE_INFO and n.spi_size:
        yield Hit(f"SA_RESOURCE_INFO in {_where(e)} has SPI Size {n.spi_size} "
                  f"(SPI {n.spi.hex()}); it must be 0 with no SPI")


@rule(code="MS103", name="resource-info-critical",
      title="SA_RESOURCE_INFO with the critical bit set",
      rfc="RFC 9611 §5.1", level=Level.MUST, group=ExpertGroup.PROTOCOL)
def resource_info_critical(e: NotifySeen) -> Iterator[Hit]:
    """## What it does
    Flags an SA_RESOURCE_INFO notify with the C (critical) bit of its generic header set.

    ## Why is this bad?
    RFC 9611 §5.1: "(C)ritical flag - MUST be 0." RFC 7296 §2.5 ignores the bit for types it
    defines, but a peer that treats it literally rejects the whole message, turning a hint
    about resources into a failed Child SA.

    ## Example
    Bad: the Notify payload header reads `next 0, C=1, length 12`, type 16444.
    Good: `next 0, C=0, length 12`, type 16444.
    """
    if e.notify.notify_type == SA_RESOURCE_INFO and e.notify.critical:
        yield Hit(f"SA_RESOURCE_INFO in {_where(e)} has the critical bit set; it must be 0")


@rule(code="MS104", name="ts-max-queue-malformed",
      title="TS_MAX_QUEUE with data, a Protocol ID or an SPI",
      rfc="RFC 9611 §5.2", level=Level.MUST, group=ExpertGroup.PROTOCOL)
def ts_max_queue_malformed(e: NotifySeen) -> Iterator[Hit]:
    """## What it does
    Flags a TS_MAX_QUEUE notify (48) whose Protocol ID or SPI Size is not 0, or that carries
    notification data.

    ## Why is this bad?
    RFC 9611 §5.2: Protocol ID and SPI Size "MUST be 0", and "There is no data associated
    with this Notify type." Extra octets are a sign the sender reused another notify's
    layout; peers that check the length may drop the refusal and retry forever.

    ## Example
    Bad: `CREATE_CHILD_SA response: N(TS_MAX_QUEUE, protocol 3, SPI size 4, SPI c1f7e800)`.
    Good: `CREATE_CHILD_SA response: N(TS_MAX_QUEUE)` with nothing after the type.
    """
    n = e.notify
    if n.notify_type != TS_MAX_QUEUE:
        return
    problems = []
    if n.protocol_id:
        problems.append(f"Protocol ID {n.protocol_id}")
    if n.spi_size:
        problems.append(f"SPI Size {n.spi_size}")
    if n.data:
        problems.append(f"{len(n.data)} octets of data")
    if problems:
        yield Hit(f"TS_MAX_QUEUE in {_where(e)} has {', '.join(problems)}; "
                  "Protocol ID and SPI Size must be 0 and there is no data")


@rule(code="MS105", name="ts-max-queue-critical",
      title="TS_MAX_QUEUE with the critical bit set",
      rfc="RFC 9611 §5.2", level=Level.MUST, group=ExpertGroup.PROTOCOL)
def ts_max_queue_critical(e: NotifySeen) -> Iterator[Hit]:
    """## What it does
    Flags a TS_MAX_QUEUE notify with the C (critical) bit of its generic header set.

    ## Why is this bad?
    RFC 9611 §5.2: "(C)ritical flag - MUST be 0."

    ## Example
    Bad: the Notify payload header reads `C=1`, type 48.
    Good: `C=0`, type 48.
    """
    if e.notify.notify_type == TS_MAX_QUEUE and e.notify.critical:
        yield Hit(f"TS_MAX_QUEUE in {_where(e)} has the critical bit set; it must be 0")


@rule(code="MS106", name="resource-info-outside-child-exchange",
      title="SA_RESOURCE_INFO in an exchange that negotiates no Child SA",
      rfc="RFC 9611 §3", level=Level.SHOULD_NOT, group=ExpertGroup.PROTOCOL)
def resource_info_outside_child_exchange(e: NotifySeen) -> Iterator[Hit]:
    """## What it does
    Flags SA_RESOURCE_INFO in IKE_SA_INIT, IKE_INTERMEDIATE, INFORMATIONAL or a
    CREATE_CHILD_SA that rekeys the IKE SA: exchanges that negotiate no Child SA.

    ## Why is this bad?
    RFC 9611 §3 adds the notify "to the Exchange negotiating the Child SA (e.g., IKE_AUTH or
    CREATE_CHILD_SA)"; anywhere else it binds nothing to a resource and is ignored, so the
    sender's per-resource logic is attached to the wrong exchange. §3 states this without a
    BCP 14 keyword; the level is the analyzer's reading.

    ## Example
    Bad: `IKE_SA_INIT request: SA, KEi, Ni, N(SA_RESOURCE_INFO)`.
    Good: `IKE_AUTH request: IDi, AUTH, SA, TSi, TSr, N(SA_RESOURCE_INFO)`.
    """
    if e.notify.notify_type == SA_RESOURCE_INFO and e.negotiates_child is False:
        yield Hit(f"SA_RESOURCE_INFO in {_where(e)}, an exchange that negotiates no Child SA")


@rule(code="MS107", name="ts-max-queue-outside-child-exchange",
      title="TS_MAX_QUEUE in an exchange that negotiates no Child SA",
      rfc="RFC 9611 §6", level=Level.SHOULD_NOT, group=ExpertGroup.PROTOCOL)
def ts_max_queue_outside_child_exchange(e: NotifySeen) -> Iterator[Hit]:
    """## What it does
    Flags TS_MAX_QUEUE in IKE_SA_INIT, IKE_INTERMEDIATE, INFORMATIONAL or an IKE SA rekey.

    ## Why is this bad?
    TS_MAX_QUEUE refuses one more Child SA for a TSi/TSr pair (RFC 9611 §1, §6). In an
    exchange that creates no Child SA it refuses nothing, and a peer may read it as the
    failure of the exchange itself (an IKE SA that does not come up or is not rekeyed).

    ## Example
    Bad: `INFORMATIONAL response: N(TS_MAX_QUEUE)`.
    Good: `CREATE_CHILD_SA response: N(TS_MAX_QUEUE)` (no SA payload).
    """
    if e.notify.notify_type == TS_MAX_QUEUE and e.negotiates_child is False:
        yield Hit(f"TS_MAX_QUEUE in {_where(e)}, an exchange that negotiates no Child SA")


@rule(code="MS108", name="ts-max-queue-in-request",
      title="TS_MAX_QUEUE sent in a request",
      rfc="RFC 9611 §6", level=Level.MUST, group=ExpertGroup.PROTOCOL)
def ts_max_queue_in_request(e: NotifySeen) -> Iterator[Hit]:
    """## What it does
    Flags TS_MAX_QUEUE in a request (R flag clear).

    ## Why is this bad?
    TS_MAX_QUEUE is an error type: the responder that refuses an additional Child SA "MUST
    return TS_MAX_QUEUE" (RFC 9611 §6), i.e. in its response. In a request it refuses
    nothing, and error notifies in requests are at best ignored (RFC 7296 §3.10.1).

    ## Example
    Bad: `CREATE_CHILD_SA request: SA, Ni, TSi, TSr, N(TS_MAX_QUEUE)`.
    Good: `CREATE_CHILD_SA response: N(TS_MAX_QUEUE)`.
    """
    if e.notify.notify_type == TS_MAX_QUEUE and e.request:
        yield Hit(f"TS_MAX_QUEUE in {_where(e)}: an error notify belongs in a response")


DRAFT = "draft-pwouters-ipsecme-multi-sa-performance-02"


@rule(code="MS109", name="pre-rfc-per-cpu-notify",
      title="Pre-RFC per-CPU negotiation (CPU_QUEUES / CPU_QUEUE_INFO, private-use numbers)",
      rfc=DRAFT, level=Level.NONE, severity=Severity.WARNING, group=ExpertGroup.PROTOCOL)
def pre_rfc_per_cpu_notify(e: NotifySeen) -> Iterator[Hit]:
    """## What it does
    Reports every CPU_QUEUES (40970) and CPU_QUEUE_INFO (40971) notify: the per-CPU Child SA
    negotiation of draft-pwouters-ipsecme-multi-sa-performance-02, which strongSwan's proof of
    concept implemented with numbers from the private-use range (RFC 7296 §3.10.1). multisa
    rebuilds such groups as RFC 9611 ones (the fallback SA from CPU_QUEUES, its members with
    resource ids from CPU_QUEUE_INFO) and the other rules judge them where the draft says the same.

    ## Why is this bad?
    RFC 9611 replaced the draft's notifies with SA_RESOURCE_INFO (16444) and TS_MAX_QUEUE (48).
    Private-use numbers mean nothing to a standard peer: an RFC 9611 gateway ignores them, so
    each additional per-CPU SA looks like a duplicate of the fallback SA (and may replace it),
    and neither side learns the other's resources. Both peers must move to RFC 9611.

    ## Example
    Bad: `IKE_AUTH request: ..., SA, TSi, TSr, N(40970 CPU_QUEUES, 00000004)`, then
    `CREATE_CHILD_SA request: ..., N(40971 CPU_QUEUE_INFO)`.
    Good: `IKE_AUTH request: ..., N(SA_RESOURCE_INFO)`, then
    `CREATE_CHILD_SA request: ..., N(SA_RESOURCE_INFO, 9a3c51e7)`.
    """
    n = e.notify
    if n.notify_type == NotifyType.CPU_QUEUES:
        what = (f"CPU_QUEUES ({int.from_bytes(n.data, 'big')} additional per-CPU SAs)" if len(n.data) == 4
                else f"CPU_QUEUES with {len(n.data)} octets of data (the draft has 4)")
    elif n.notify_type == NotifyType.CPU_QUEUE_INFO:
        what = "CPU_QUEUE_INFO" + (f" {n.data.hex()}" if n.data else " (empty)")
    else:
        return
    yield Hit(f"{what} in {_where(e)}: the pre-RFC per-CPU negotiation of {DRAFT} with private-use "
              f"notify number {n.notify_type}; RFC 9611 replaced it with SA_RESOURCE_INFO (16444) and "
              "TS_MAX_QUEUE (48)")
