"""The kit's connection security in librdkafka's names (a confluent-kafka client) matches aiokafka's."""

from __future__ import annotations

import pytest

from kasse_common.messaging import aiokafka_security, confluent_security
from kasse_common.settings import ServiceSettings

pytestmark = pytest.mark.unit


def test_plaintext_by_default() -> None:
    settings = ServiceSettings(profile="development")
    assert confluent_security(settings) == {"security.protocol": "PLAINTEXT"}
    assert aiokafka_security(settings)["security_protocol"] == "PLAINTEXT"


def test_sasl_over_tls_with_the_clusters_ca() -> None:
    settings = ServiceSettings(
        profile="development",
        kafka_security_protocol="sasl_ssl",
        kafka_sasl_mechanism="scram-sha-512",
        kafka_sasl_username="metrics",
        kafka_sasl_password="s3cret",  # type: ignore[arg-type]
        kafka_ssl_cafile="/etc/kafka/ca.pem",
    )
    assert confluent_security(settings) == {
        "security.protocol": "SASL_SSL",
        "ssl.ca.location": "/etc/kafka/ca.pem",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "metrics",
        "sasl.password": "s3cret",
    }
    # the CA file is for TLS only: a plaintext SASL connection does not name it
    plain = ServiceSettings(profile="development", kafka_security_protocol="SASL_PLAINTEXT", kafka_ssl_cafile="/x.pem")
    assert "ssl.ca.location" not in confluent_security(plain)
