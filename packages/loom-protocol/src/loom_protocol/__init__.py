"""loom-protocol: the contracts shared by every Loom package and by services that talk to Loom.

Level 0: depends on pydantic and the standard library only; never imports another Loom package,
httpx, SQLAlchemy or any provider SDK. Pure data and pure functions, no I/O.
"""

from ._backend import Backend
from ._chat import ChatRequest, ChatResponse, ContentPart, ImagePart, Message, TextPart, Usage
from ._checks import (
    MAX_TIMEOUT,
    check_header,
    check_http_url,
    check_int,
    check_non_empty_string,
    check_non_negative_number,
    check_number,
    check_positive_number,
    is_int,
    is_number,
    shorten,
)
from ._errors import BackendError, Error, ErrorCode, LoomError, LoomUsageError, StoreError
from ._events import (
    BatchEndEvent,
    BatchErrorEvent,
    BatchStartEvent,
    StreamEvent,
    TaskResultEvent,
    parse_stream_event,
)
from ._fingerprint import (
    MAX_INPUT_DEPTH,
    canonical_fingerprint,
    canonical_json,
    canonicalize,
    fingerprint,
)
from ._prices import (
    BATCH_DISCOUNT,
    BUNDLED_PRICES,
    PRICES_DATE,
    UNPRICED_SNAPSHOTS,
    ModelPrice,
    PriceSource,
    check_prices,
    find_price,
    usage_cost,
)
from ._provider_batch import (
    ProviderBatchBackend,
    ProviderBatchCounts,
    ProviderBatchInfo,
    ProviderBatchItem,
    ProviderBatchLimits,
    ProviderBatchLine,
    ProviderBatchState,
)
from ._ratelimits import RateLimitInfo, RateLimitWindow
from ._records import data_column, record_columns
from ._redact import (
    MASK,
    is_secret_name,
    redact_headers,
    redact_text,
    redact_url,
    redact_value,
)
from ._results import BatchResult, BatchSummary, SummaryCounter, TaskResult
from ._version import PROTOCOL_VERSION

__version__ = "0.2.0"

__all__ = [
    "BATCH_DISCOUNT",
    "BUNDLED_PRICES",
    "MASK",
    "MAX_INPUT_DEPTH",
    "MAX_TIMEOUT",
    "PRICES_DATE",
    "PROTOCOL_VERSION",
    "UNPRICED_SNAPSHOTS",
    "Backend",
    "BackendError",
    "BatchEndEvent",
    "BatchErrorEvent",
    "BatchResult",
    "BatchStartEvent",
    "BatchSummary",
    "ChatRequest",
    "ChatResponse",
    "ContentPart",
    "Error",
    "ErrorCode",
    "ImagePart",
    "LoomError",
    "LoomUsageError",
    "Message",
    "ModelPrice",
    "PriceSource",
    "ProviderBatchBackend",
    "ProviderBatchCounts",
    "ProviderBatchInfo",
    "ProviderBatchItem",
    "ProviderBatchLimits",
    "ProviderBatchLine",
    "ProviderBatchState",
    "RateLimitInfo",
    "RateLimitWindow",
    "StoreError",
    "StreamEvent",
    "SummaryCounter",
    "TaskResult",
    "TaskResultEvent",
    "TextPart",
    "Usage",
    "canonical_fingerprint",
    "canonical_json",
    "canonicalize",
    "check_header",
    "check_http_url",
    "check_int",
    "check_non_empty_string",
    "check_non_negative_number",
    "check_number",
    "check_positive_number",
    "check_prices",
    "data_column",
    "find_price",
    "fingerprint",
    "is_int",
    "is_number",
    "is_secret_name",
    "parse_stream_event",
    "record_columns",
    "redact_headers",
    "redact_text",
    "redact_url",
    "redact_value",
    "shorten",
    "usage_cost",
]
