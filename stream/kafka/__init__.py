"""The Kafka edge: the only package that imports aiokafka.

- ``options``: what every client is made with (address, SASL, TLS);
- ``connect``: starting a client, and one clear line when the broker is away or refuses us;
- ``protocols``: the consumer and producers as the engine sees them;
- ``clients``: those protocols over aiokafka; ``send``: batched, partitioned sending;
- ``errors``: aiokafka's exceptions turned into ``stream.errors``;
- ``admin``: topics, limits and a group's lag.
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
    admin_client,
    all_topics,
    create_topics,
    describe_topics,
    group_lag,
    record_limit,
    require_topics,
)
from stream.kafka.clients import KafkaClients, make_consumer, make_producer
from stream.kafka.connect import start_client
from stream.kafka.options import client_options, ssl_context
from stream.kafka.protocols import Sent, TopicPartition

__all__ = [
    "AuthenticationFailed",
    "BrokerUnavailable",
    "KafkaClients",
    "MissingTopics",
    "PartitionLag",
    "Sent",
    "TLSFailed",
    "TopicInfo",
    "TopicPartition",
    "admin_client",
    "all_topics",
    "client_options",
    "create_topics",
    "describe_topics",
    "group_lag",
    "make_consumer",
    "make_producer",
    "record_limit",
    "require_topics",
    "ssl_context",
    "start_client",
]
