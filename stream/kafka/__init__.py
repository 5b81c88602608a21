"""The Kafka edge: the only package that imports aiokafka.

- ``options``: what every client is made with (address, SASL, TLS);
- ``connect``: starting a client, and one clear line when the broker is away or refuses us;
- ``protocols``: the consumer and producers as the engine sees them;
- ``clients``: those protocols over aiokafka; ``send``: batched, partitioned sending;
- ``errors``: aiokafka's exceptions turned into ``stream.errors``;
- ``admin``: topics, limits and a group's lag;
- ``reading``: reading a topic outside any group (end offsets, committed records).
"""

from stream.errors import (
    AuthenticationFailed,
    BrokerUnavailable,
    MissingTopics,
    TLSFailed,
)
from stream.kafka.admin import (
    PartitionLag,
    TopicInfo,
    add_topics,
    admin_client,
    all_topics,
    create_topics,
    delete_topics,
    describe_topics,
    group_lag,
    partition_ids,
    record_limit,
    require_topics,
)
from stream.kafka.clients import KafkaClients, make_consumer, make_producer
from stream.kafka.connect import start_client
from stream.kafka.options import client_options, ssl_context
from stream.kafka.protocols import Sent, TopicPartition
from stream.kafka.reading import CommittedReader, end_offsets

__all__ = [
    "AuthenticationFailed",
    "BrokerUnavailable",
    "CommittedReader",
    "KafkaClients",
    "MissingTopics",
    "PartitionLag",
    "Sent",
    "TLSFailed",
    "TopicInfo",
    "TopicPartition",
    "add_topics",
    "admin_client",
    "all_topics",
    "client_options",
    "create_topics",
    "delete_topics",
    "describe_topics",
    "end_offsets",
    "group_lag",
    "make_consumer",
    "make_producer",
    "partition_ids",
    "record_limit",
    "require_topics",
    "ssl_context",
    "start_client",
]
