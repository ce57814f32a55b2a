"""The daemon's membership of its consumer group: subscribe, the rebalance callbacks, and a rejoin when a rebalance
never delivers an assignment.

kafka-python 3 runs rebalance callbacks on its I/O thread while ``poll`` blocks the loop's thread, so they never race
with a batch. On revoke, the batch is already finished: flush, snapshot the revoked partitions, drop their streams,
commit. On assign, the new partitions are queued for the loop to restore (:mod:`streamrnn.runtime.partitions`).

Owns: the subscription, whether the group has answered (``joined``), since when an assignment is awaited. Must not
touch: snapshots, offsets or streams (it asks :class:`~streamrnn.runtime.partitions.Partitions`).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from streamrnn.config.settings import Settings
from streamrnn.runtime.delivery import BrokerContact, Delivery
from streamrnn.runtime.metrics import DaemonMetrics
from streamrnn.runtime.partitions import Partitions, names

log = logging.getLogger(__name__)


class Membership:
    def __init__(self, settings: Settings, consumer: Any, partitions: Partitions, delivery: Delivery,
                 metrics: DaemonMetrics, broker: BrokerContact, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.consumer = consumer
        self.partitions = partitions
        self.delivery = delivery
        self.metrics = metrics
        self.broker = broker
        self._clock = clock
        self.topics = list(settings.kafka.input_topics)
        self.joined = False
        # Since when a rebalance (or the first join) has been waiting for its assignment; None while assigned.
        self.awaiting_since: float | None = None
        self._listener: Any = None

    def subscribe(self) -> None:
        from kafka import AsyncConsumerRebalanceListener

        member = self

        class Listener(AsyncConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked: set[Any]) -> None:
                member.rebalance_started()
                offsets = member.partitions.release(revoked, save=True)
                if offsets:
                    member.delivery.commit_on_revoke(offsets)

            async def on_partitions_assigned(self, assigned: set[Any]) -> None:
                member.on_assigned(assigned)

            async def on_partitions_lost(self, lost: set[Any]) -> None:
                member.rebalance_started()
                member.partitions.release(lost, save=False, why="lost")

        topics = self.topics
        self._listener = Listener()
        self.rebalance_started()
        self.consumer.subscribe(topics=topics, listener=self._listener)
        # Load the topics' metadata after subscribing and before the first join. The group coordinator takes its
        # view of the subscribed topics from metadata that arrives after subscribe(); a first join that races it
        # assigns from an empty view, and the refresh that follows forces a second rebalance at once (assign,
        # revoke, rejoin within a second of start; CI runs saw that rejoin stall). docs/daemon.md has the numbers.
        try:
            known = self.consumer.topics()  # always a metadata round trip, unlike partitions_for_topic
        except Exception as error:  # the broker is not there yet: the join waits for it in poll()
            log.warning("cannot load the topics' metadata yet", extra={"fields": {"error": repr(error)}})
            known = set(topics)
        missing = [t for t in topics if t not in known]
        if missing:
            log.warning("input topics not found (yet); their partitions are assigned once they exist",
                        extra={"fields": {"topics": missing}})
        log.info("consuming", extra={"fields": {"topics": topics, "group": self.settings.kafka.group_id}})

    def rebalance_started(self) -> None:
        if self.awaiting_since is None:
            self.awaiting_since = self._clock()

    def on_assigned(self, assigned: set[Any]) -> None:
        """The group gave us partitions (a rebalance callback): queue the new ones for restoring."""
        self.joined = True
        self.broker.answering = True  # the join was an answer
        self.awaiting_since = None
        fresh = self.partitions.queue_restore(assigned)
        if fresh:
            self.metrics.rebalances.labels("assigned").inc()
            log.info("partitions assigned", extra={"fields": {"partitions": names(fresh)}})

    def rejoin_if_stuck(self, now: float) -> None:
        """Abandon a rebalance that never delivered an assignment within ``kafka.rejoin_after_s``: leave the group and
        subscribe again.

        kafka-python 3.0 (3.0.12 checked) runs a join as a task that a ``poll`` timeout leaves in flight. When the
        rebalance was started by a metadata change (partitions added, the first join racing the first metadata)
        and the task finishes while no ``poll`` awaits it, the next ``poll`` no longer sees a rejoin as needed and
        never applies the task's assignment: the member holds nothing, heartbeats stay disabled, and it stays so.
        Leaving and subscribing again starts a clean join (one extra rebalance for the group)."""
        since = self.awaiting_since
        if since is None or now - since <= self.settings.kafka.rejoin_after_s:
            return
        log.warning("rebalance gave no assignment in time; leaving the group and joining again",
                    extra={"fields": {"waited_s": round(now - since, 1), "group": self.settings.kafka.group_id}})
        self.metrics.group_rejoins.inc()
        self.partitions.release(set(self.partitions.next_offset) | self.partitions.pending, save=True, why="rejoin")
        self.awaiting_since = self._clock()
        try:
            self.consumer.unsubscribe()
        except Exception as error:  # leaving is a courtesy: the broker also drops a silent member
            log.info("leaving the group failed", extra={"fields": {"error": repr(error)}})
        self.consumer.subscribe(topics=self.topics, listener=self._listener)
