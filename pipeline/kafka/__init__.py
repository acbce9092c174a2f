"""Kafka adapter: topic names, connection options, admin, producer/consumer wrappers."""
