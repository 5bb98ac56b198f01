"""A Python client for the ainfinity API, typed with the API's own schemas.

    from ainfinity.client import Client

    with Client() as client:  # AINFINITY_URL / AINFINITY_API_KEY, or the local server's key
        job = client.create_job({"model": "tiny-random-llama", "dataset": "samples/tiny_sft.jsonl"})
        for line in client.follow_logs(job.name):
            print(line)
        model = client.get_job(job.name).fine_tuned_model  # "ft:tiny-random-llama:<job>"
        for piece in client.chat_stream(model, [{"role": "user", "content": "Hi!"}]):
            print(piece, end="", flush=True)

`AsyncClient` offers the same calls to asyncio code.
"""

from ainfinity.client.aio import AsyncClient
from ainfinity.client.errors import (
    AinfinityClientError,
    ApiError,
    BadRequest,
    Conflict,
    ConnectionFailed,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    StreamFailed,
    Unauthorized,
    ValidationFailed,
)
from ainfinity.client.sync import Client

__all__ = [
    "AinfinityClientError",
    "ApiError",
    "AsyncClient",
    "BadRequest",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "ServerError",
    "StreamFailed",
    "Unauthorized",
    "ValidationFailed",
]
