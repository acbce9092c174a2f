"""sfamp: keep Amplitude group properties in step with Salesforce."""

__version__ = "0.1.0"
