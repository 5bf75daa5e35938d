"""The OpenAI-compatible HTTP server: app factory, model provider and MLX worker.

Importing this package pulls in FastAPI; the CLI imports it only for ``serve``.
"""

from mlxk2.server.app import create_app
from mlxk2.server.config import ServerConfig, parse_duration
from mlxk2.server.provider import ModelProvider
from mlxk2.server.worker import Worker

__all__ = ["ModelProvider", "ServerConfig", "Worker", "create_app", "parse_duration"]
