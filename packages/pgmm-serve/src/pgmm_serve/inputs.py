"""Everything a request brings, checked before it reaches the model: fields, limits, images.

A request body is JSON (the image as base64, optionally a ``data:`` URL) or ``multipart/form-data``
(the image as a file part named ``image``, the other fields as form fields; ``history`` as a JSON
string). Either way it is validated by the same pydantic models, which forbid unknown fields, and
the generation options are held to the server's :class:`Limits`. Every problem becomes an
:class:`ApiError` whose message names the field (or the image) and says what is wrong; the API turns
it into a 4xx JSON answer.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import warnings
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pgmm_core.config.sections import GenerationSection
from pgmm_core.images import to_rgb


class ApiError(Exception):
    """A request the server refuses: HTTP ``status``, a stable ``code``, a message naming the problem."""

    def __init__(self, status: int, code: str, message: str, fields: list[str] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields or []
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.fields:
            error["fields"] = self.fields
        return {"error": error}


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; set on the command line (``serve --help``)."""

    max_upload_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 25_000_000  # 5000 x 5000; a larger header is refused before decoding
    max_new_tokens: int = 64
    max_num_beams: int = 8
    max_return_sequences: int = 4
    max_text_chars: int = 2000  # question, prompt, each history turn
    max_history_turns: int = 16


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: str


class GenerationOptions(BaseModel):
    """Decoding settings a client may set (``eval.generation`` fields); left out: the run's own."""

    model_config = ConfigDict(extra="forbid", strict=True)

    num_beams: int | None = Field(None, ge=1, description="Beam width (at most the server's limit).")
    max_new_tokens: int | None = Field(None, ge=1,
                                       description="Longest answer, in tokens (at most the server's limit).")
    min_new_tokens: int | None = Field(None, ge=0)
    do_sample: bool | None = Field(None, description="Nucleus sampling instead of beam search.")
    top_p: float | None = Field(None, gt=0, le=1)
    temperature: float | None = Field(None, gt=0)
    repetition_penalty: float | None = Field(None, gt=0)
    length_penalty: float | None = None
    num_return_sequences: int | None = Field(None, ge=1, description="Captions per image (caption only).")


class CaptionRequest(GenerationOptions):
    image: str | None = Field(None, description="The image as base64 (a data: URL is accepted); in a multipart "
                              "request, a file part named 'image' instead.")
    prompt: str | None = Field(None, description="Text before the caption (default: the run's model.prompt).")
    stream: bool = Field(False, description="Answer as server-sent events (text/event-stream).")


class AskRequest(CaptionRequest):
    question: str = Field(..., min_length=1, description="The question about the image.")
    history: list[Turn] | None = Field(None, description="Earlier turns: [{role: user|assistant, content}].")


GENERATION_FIELDS = tuple(GenerationOptions.model_fields)


def parse_request(model: type[CaptionRequest], data: dict[str, Any], *, from_form: bool) -> CaptionRequest:
    """Validate a body; form fields are strings, so they are converted (lax mode), JSON is strict."""
    try:
        return model.model_validate(data, strict=False if from_form else None)
    except ValidationError as exc:
        raise _validation_error(exc) from None


def _validation_error(exc: ValidationError) -> ApiError:
    unknown = [str(e["loc"][0]) for e in exc.errors() if e["type"] == "extra_forbidden" and e["loc"]]
    if unknown:
        allowed = ", ".join(_fields_of(exc.title))
        return ApiError(422, "unknown_field", f"unknown field(s): {', '.join(unknown)} (accepted: {allowed})", unknown)
    problems, fields = [], []
    for error in exc.errors(include_url=False):
        name = ".".join(str(p) for p in error["loc"]) or "body"
        fields.append(name)
        if error["type"] == "missing":
            problems.append(f"{name}: required")
        else:
            problems.append(f"{name}: {error['msg']} (got {error.get('input')!r:.80})")
    return ApiError(422, "invalid_field", "; ".join(problems), fields)


def _fields_of(title: str) -> list[str]:
    model = {"CaptionRequest": CaptionRequest, "AskRequest": AskRequest}.get(title, CaptionRequest)
    return list(model.model_fields)


def check_text(request: CaptionRequest, limits: Limits) -> None:
    texts = {"prompt": request.prompt}
    if isinstance(request, AskRequest):
        texts["question"] = request.question
        if request.history and len(request.history) > limits.max_history_turns:
            raise ApiError(422, "limit_exceeded", f"history: {len(request.history)} turns, more than this "
                           f"server's limit {limits.max_history_turns}", ["history"])
        for i, turn in enumerate(request.history or ()):
            texts[f"history.{i}.content"] = turn.content
    for name, text in texts.items():
        if text is not None and len(text) > limits.max_text_chars:
            raise ApiError(422, "limit_exceeded", f"{name}: {len(text)} characters, more than this server's "
                           f"limit {limits.max_text_chars}", [name])


def generation_settings(request: CaptionRequest, defaults: GenerationSection, limits: Limits) -> dict[str, Any]:
    """The options the client set, held to the limits and checked together with the run's defaults
    (``min_new_tokens`` above ``max_new_tokens`` is refused here, not inside the model)."""
    given = {name: getattr(request, name) for name in GENERATION_FIELDS if getattr(request, name) is not None}
    caps = {"max_new_tokens": limits.max_new_tokens, "num_beams": limits.max_num_beams,
            "num_return_sequences": limits.max_return_sequences}
    for name, cap in caps.items():
        if given.get(name, 0) > cap:
            raise ApiError(422, "limit_exceeded", f"{name}: {given[name]} is more than this server's limit {cap}",
                           [name])
    merged = {**defaults.model_dump(), **given}
    for name, cap in caps.items():  # a run's own default may be above the server's cap
        merged[name] = min(merged[name], cap)
    try:
        GenerationSection.model_validate(merged)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or 'generation options'}: {e['msg']}"
                    for e in exc.errors(include_url=False)]
        raise ApiError(422, "invalid_generation", "; ".join(problems), sorted(given)) from None
    settings = dict(given)
    for name, cap in caps.items():
        if name not in given and getattr(defaults, name) > cap:
            settings[name] = cap
    return settings


# --- images -----------------------------------------------------------------------------------------


def image_bytes_from_base64(text: str) -> bytes:
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "bad_image", "image: not valid base64", ["image"]) from None


def decode_image(data: bytes, limits: Limits) -> Any:
    """An RGB PIL image, decoded completely, or an :class:`ApiError` saying why not. The pixel limit is
    checked on the header, before anything is decoded (decompression bombs)."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ApiError(400, "bad_image", "image: empty", ["image"])
    if len(data) > limits.max_upload_bytes:
        raise ApiError(413, "too_large", f"image: {len(data):,} bytes, more than this server's limit "
                       f"{limits.max_upload_bytes:,}", ["image"])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > limits.max_image_pixels:
            raise ApiError(413, "too_large", f"image: {width}x{height} = {width * height:,} pixels, more than this "
                           f"server's limit {limits.max_image_pixels:,} (decompression bomb?)", ["image"])
        image.load()
        return to_rgb(image)
    except ApiError:
        raise
    except Image.DecompressionBombError as exc:
        raise ApiError(413, "too_large", f"image: refused as a decompression bomb: {exc}", ["image"]) from None
    except UnidentifiedImageError:
        raise ApiError(400, "bad_image", "image: not an image file (PNG, JPEG, WebP, GIF, BMP, TIFF ...)",
                       ["image"]) from None
    except (OSError, ValueError, SyntaxError, EOFError, TypeError, IndexError, MemoryError) as exc:
        raise ApiError(400, "bad_image", f"image: cannot decode ({type(exc).__name__}: {exc})", ["image"]) from None


def form_to_dict(form: Any) -> tuple[dict[str, Any], bytes | None]:
    """Multipart fields as a dict (one value per name; ``history`` parsed as JSON) and the image file."""
    data: dict[str, Any] = {}
    image: bytes | None = None
    for name, value in form.multi_items():
        if name in data or (name == "image" and image is not None):
            raise ApiError(422, "invalid_field", f"{name}: given more than once", [name])
        if hasattr(value, "read"):  # an uploaded file
            if name != "image":
                raise ApiError(422, "unknown_field", f"unknown file part {name!r} (the image goes in 'image')", [name])
            image = value.file.read()
        elif name == "history":
            try:
                data[name] = json.loads(value)
            except json.JSONDecodeError:
                raise ApiError(422, "invalid_field", "history: not valid JSON", ["history"]) from None
        else:
            data[name] = value
    return data, image
