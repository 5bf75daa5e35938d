"""A local Hugging Face Hub look-alike for tests; run it by hand with ``python -m tests.hub``."""

from .server import DEFAULT_TOKEN, Hub, HubServer

__all__ = ["DEFAULT_TOKEN", "Hub", "HubServer"]
