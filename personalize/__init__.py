"""personalize: nightly batch service that writes, verifies, renders and publishes new music per listener."""

__version__ = "0.1.0"
