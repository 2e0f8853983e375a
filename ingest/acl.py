"""Who may do what on Kafka: the line's principals and their ACLs, in one place.

Kafka authenticates every client with SASL/SCRAM-SHA-512 and authorizes it with these ACLs; what is
not granted is denied (``allow.everyone.if.no.acl.found=false``). The clustered local stack
(``deploy/local/cluster.py``) creates the SCRAM credentials and applies these grants; Kubernetes
gets them as Strimzi ``KafkaUser`` resources rendered from here (``deploy/render.py``), so the two
can never drift apart.

* **camera** writes frames to the live frames topic and nothing else: it cannot write a verdict,
  a dead letter or a replay, and cannot read anything.
* **ingress** (the Serve app's replicas) reads the live and replay frames topics in its consumer
  groups, reads the rejects topic (the delivered-reject lookup) and writes verdicts (rejects) and
  dead letters; a transactional id prefix is granted for the transactional checkpoint.
* **station** (the reject actuator) reads the rejects topic in its own group.
* **replayer** (``grdline replay``) writes the replay topic only: a replay can never land on the
  live topic under this principal.
* **admin** creates topics and ACLs: a super user, used by operators and the stack's setup.

Passwords are never here: each principal's password comes from the environment of the process
that uses it (``GRDLINE_KAFKA_SASL_PASSWORD``; one secret per principal).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ingest.topics import DLQ, FRAMES, FRAMES_REPLAY, REJECTS

#: The SASL mechanism of every client listener.
SASL_MECHANISM = "SCRAM-SHA-512"

CAMERA = "grdline-camera"
INGRESS = "grdline-ingress"
STATION = "grdline-station"
REPLAYER = "grdline-replayer"
ADMIN = "grdline-admin"

#: Consumer groups. The live ingress group is inference.config.IngressSettings.group_id's default;
#: replay apps use their own (design: "replays are decided by their own app and group").
INGRESS_GROUP = "grdline-inference"
REPLAY_GROUP = "grdline-replay"
STATION_GROUP = "grdline-station"
#: Transactional ids of the ingress' producers start with this.
INGRESS_TRANSACTIONAL_PREFIX = "grdline-ingress-"

Resource = Literal["topic", "group", "transactionalId", "cluster"]
Operation = Literal["Read", "Write", "Describe", "DescribeConfigs", "Create", "Alter", "All"]


@dataclass(frozen=True)
class Grant:
    """Allow ``operations`` on one resource (``prefix``: every name starting with ``name``)."""

    resource: Resource
    name: str
    operations: tuple[Operation, ...]
    prefix: bool = False


@dataclass(frozen=True)
class Principal:
    """A SASL user (``User:<name>``) and what it may do; ``super_user`` bypasses ACLs."""

    name: str
    grants: tuple[Grant, ...] = ()
    super_user: bool = False


def _write(topic: str) -> Grant:
    # DescribeConfigs: a publisher reads the topic's max.message.bytes (ingest.producer)
    return Grant("topic", topic, ("Write", "Describe", "DescribeConfigs"))


def _read(topic: str) -> Grant:
    return Grant("topic", topic, ("Read", "Describe"))


def principals(frames: str = FRAMES, replay: str = FRAMES_REPLAY, rejects: str = REJECTS,
               dlq: str = DLQ) -> tuple[Principal, ...]:
    """Every principal of the line with its grants, on the given topic names."""
    return (
        Principal(CAMERA, (_write(frames),)),
        Principal(INGRESS, (
            _read(frames), _read(replay), _read(rejects), _write(rejects), _write(dlq),
            Grant("group", INGRESS_GROUP, ("Read", "Describe")),
            Grant("group", REPLAY_GROUP, ("Read", "Describe")),
            Grant("transactionalId", INGRESS_TRANSACTIONAL_PREFIX, ("Write", "Describe"), prefix=True),
        )),
        Principal(STATION, (_read(rejects), Grant("group", STATION_GROUP, ("Read", "Describe")))),
        Principal(REPLAYER, (_write(replay),)),
        Principal(ADMIN, super_user=True),
    )


def by_name(name: str) -> Principal:
    """The principal called ``name`` (on the default topic names)."""
    for p in principals():
        if p.name == name:
            return p
    raise KeyError(f"no Kafka principal {name!r}; known: {[p.name for p in principals()]}")


def kafka_acls(p: Principal) -> list:
    """``p``'s grants as kafka-python ``ACL`` objects (ALLOW, any host)."""
    from kafka.admin import (
        ACL,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePattern,
        ResourceType,
    )

    types = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP,
             "transactionalId": ResourceType.TRANSACTIONAL_ID, "cluster": ResourceType.CLUSTER}
    ops = {"Read": ACLOperation.READ, "Write": ACLOperation.WRITE, "Describe": ACLOperation.DESCRIBE,
           "DescribeConfigs": ACLOperation.DESCRIBE_CONFIGS, "Create": ACLOperation.CREATE, "Alter": ACLOperation.ALTER, "All": ACLOperation.ALL}
    out = []
    for g in p.grants:
        pattern = ResourcePattern(types[g.resource], g.name,
                                  ACLResourcePatternType.PREFIXED if g.prefix else ACLResourcePatternType.LITERAL)
        out += [ACL(f"User:{p.name}", "*", ops[op], ACLPermissionType.ALLOW, pattern) for op in g.operations]
    return out


def apply_acls(admin, of: tuple[Principal, ...] | None = None) -> int:
    """Create the ACLs of every principal (``of``; default :func:`principals`) with a kafka-python
    ``KafkaAdminClient`` authenticated as a super user; idempotent (Kafka keeps one copy of an
    ACL). Returns how many were sent; raises ``RuntimeError`` naming each one Kafka refused."""
    acls = [a for p in (of or principals()) for a in kafka_acls(p)]
    result = admin.create_acls(acls)
    failed = result.get("failed", [])
    if failed:
        raise RuntimeError(f"Kafka refused {len(failed)} ACL(s): {failed}")
    return len(acls)
