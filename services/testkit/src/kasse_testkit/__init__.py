"""Kasse's test harness: real infrastructure, namespaces, Kafka readers and writers, app runners."""

from kasse_testkit.apps import ServiceProcess, free_port, running_app, served
from kasse_testkit.infrastructure import Infrastructure
from kasse_testkit.kafka import ReadRecord, TestPublisher, TopicReader
from kasse_testkit.plugin import Namespace
from kasse_testkit.waiting import wait_until

__all__ = [
    "Infrastructure",
    "Namespace",
    "ReadRecord",
    "ServiceProcess",
    "TestPublisher",
    "TopicReader",
    "free_port",
    "running_app",
    "served",
    "wait_until",
]
