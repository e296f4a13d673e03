"""Kept for imports written before the client moved: it lives in [`~trl_distill.core.http_client`], shared by the
judges, the pool builder and served teachers."""

from ..core.http_client import ChatCompletionsClient, EndpointError


__all__ = ["ChatCompletionsClient", "EndpointError"]
