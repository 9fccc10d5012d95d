"""The command line of an OpenAI-compatible endpoint: its flags and the client they make, defined once for every
script that talks to an endpoint (data_prep/gen_*.py, and the openai backend of inference.py and eval/*_review.py),
with one help text. Importing this module does not import the openai package (scripts that use a local model do
not pay for it); `client_from_args` does.
"""

from __future__ import annotations

from typing import Any, Optional

from ..common.cli import float_above, int_at_least


ENDPOINT_FLAGS = ("model", "base_url", "api_key_env", "concurrency", "max_attempts", "timeout")


def add_endpoint_arguments(group, *, model: Optional[str] = None, model_required: bool = False) -> None:
    """The flags of an OpenAI-compatible endpoint (ENDPOINT_FLAGS), defined once for data generation
    (data_prep/gen_*.py) and the openai backend of inference and review; `client_from_args` turns them into the
    ChatClient. model: the default --model (or model_required)."""
    group.add_argument("--model", default=model, required=model_required,
                       help="model name the endpoint serves, e.g. gpt-4-turbo (a vision model: requests carry images)"
                            + (f" (default {model})" if model else ""))
    group.add_argument("--base_url", default=None,
                       help="endpoint, e.g. http://localhost:8000/v1 (default: $OPENAI_BASE_URL, else OpenAI)")
    group.add_argument("--api_key_env", default="OPENAI_API_KEY",
                       help="name of the environment variable holding the API key (default OPENAI_API_KEY; never pass "
                            "the key itself)")
    group.add_argument("--concurrency", type=int_at_least(1), default=4, help="requests in flight (default 4)")
    group.add_argument("--max_attempts", type=int_at_least(1), default=5,
                       help="attempts per request, retrying 429/5xx/timeouts/malformed replies with backoff, before it "
                            "is reported failed (default 5)")
    group.add_argument("--timeout", type=float_above(0), default=120.0, help="seconds per attempt (default 120)")


def client_from_args(args: Any, **options: Any):
    """THE ChatClient of the endpoint flags (add_endpoint_arguments); options (prices, default_params, ...) go to
    ChatClient. ValueError for no model or no API key. Imports the openai package (only) here."""
    from .client import ChatClient

    return ChatClient(args.model, base_url=args.base_url, api_key_env=args.api_key_env, concurrency=args.concurrency,
                      max_attempts=args.max_attempts, timeout=args.timeout, **options)
