"""Local stand-ins for Salesforce, Amplitude and Kafka, for the demo and the tests.

They speak the real wire protocols on loopback ports and never import sfamp itself
(``pipeline``): sfamp reaches them only over HTTP, CometD and the Kafka protocol,
and its ``sandbox`` and ``demo`` commands import them lazily.
"""
