"""The server's endpoints, one module each, registered by :func:`mlxk2.server.app.create_app`.

A generating endpoint is a thin adapter over :func:`mlxk2.server._runs.respond`:
it turns its request body into a prompt builder and renders the core's events
in its own wire format. A new endpoint is a new module with a ``router``, added
to :data:`ROUTERS`.
"""

from fastapi import APIRouter

from mlxk2.server.endpoints import chat, completions, messages, models, responses, status

#: Every endpoint module's router, in registration order.
ROUTERS: tuple[APIRouter, ...] = (status.router, models.router, chat.router, completions.router,
                                  responses.router, messages.router)
