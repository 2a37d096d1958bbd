"""The HTTP contract of the index server, shared by every module that adds routes.

- **One error model.** Every error body is `ErrorResponse`: `{"detail": str}`, plus `errors`
  (a list of `{loc, msg, type}`) for validation errors. `HTTPError(status, detail)` raises one;
  `install_errors(app)` maps FastAPI's and Starlette's own errors onto it (405s list every
  method of the path in `Allow`).
- **One table of statuses.** `ERRORS` says what each status means here; a route declares the
  statuses it can return with `RouteDocs.__call__` (`docs(200 model, *statuses, auth=...)`),
  which also adds the statuses its auth rule implies (401 / 403) and its security
  requirement, so the OpenAPI document lists every status a route returns.
- **Models built for the served index.** `Contract` holds what the document knows about the
  index (dimension, id type, normalization, limits); `build_models(contract)` makes the request
  models from it. The same objects validate requests and produce the schema, so a request the
  document calls valid is accepted and one it calls invalid is refused.
- **Bodies off the event loop.** `json_body(model)` and `form_body(model)` are dependencies
  that parse and validate a request body, in a worker thread when it is large.
- **Uploaded images.** `decode_upload` decodes through the one bomb-safe decoder
  (data.images) and answers its refusals in the error model (413 / 415 / 422).
- **The document.** `install_openapi(app, docs, contract)` adds the bearer security scheme, the request
  body schemas and the id schema of every `{item_id}` path parameter.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from PIL import Image
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from starlette.exceptions import HTTPException as StarletteHTTPException

from coldstart.data.images import CorruptImage, ImageRejected, NotAnImage, decode_image
from coldstart.data.video import (
    CorruptVideo,
    NotAVideo,
    VideoLimits,
    VideoRejected,
    decode_video,
)
from coldstart.index.backend import (
    MAX_ABS_UNNORMALIZED,
    MAX_ID_CHARS,
    StoreSchema,
    string_id_problem,
)

log = logging.getLogger(__name__)
# Bodies larger than this are parsed and validated in a worker thread (a thread hop costs
# ~50 us, parsing 64 KiB of JSON about as much; a multi-megabyte body would stall the loop).
OFFLOAD_BYTES = 64 * 1024
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
STRING_ID_PATTERN = "^[^\\x00-\\x1f\\x7f-\\x9f/]+$"


# ------------------------------------------------------------------------- the error model
class FieldError(BaseModel):
    loc: list[str] = Field(description="where: e.g. ['body', 'vectors', '0', '3']")
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """The body of every error response."""

    model_config = ConfigDict(extra="allow")
    detail: str = Field(description="what went wrong, for a human")
    errors: list[FieldError] | SkipJsonSchema[None] = Field(
        None, description="per-field problems (validation errors only)"
    )


class HTTPError(Exception):
    """An error response: `ErrorResponse(detail)` with `status` (and optional headers)."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers


ERRORS: dict[int, str] = {
    400: "malformed HTTP framing: a bad Content-Length, or multipart without a boundary",
    401: "missing or invalid bearer token",
    403: "writes are disabled: the server has no token configured",
    404: "unknown item",
    409: "the index is not trained yet (build it from data first)",
    413: "body over the server's size limit, or an image over the pixel limit",
    415: "unsupported media type: the body is not JSON / multipart, or the upload not an image",
    422: "invalid input; `detail` says what, `errors` where",
    501: "no encoder configured (start the server with --encoder)",
    503: "the index is still loading or failed to load, or the disk refused a write",
}


def error_responses(*statuses: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """FastAPI `responses=` entries for error statuses, from ERRORS (override a description
    with `s404="unknown item, or no image"`)."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in sorted(set(statuses)):
        text = descriptions.get(f"s{status}", ERRORS[status])
        out[status] = {"model": ErrorResponse, "description": text}
    return out


def error_json(
    status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    """An ErrorResponse (extra fields allowed, e.g. /ready's `ready` and `error`)."""
    return JSONResponse({"detail": detail, **extra}, status_code=status, headers=headers)


def _field_errors(errors: list[dict[str, Any]]) -> list[dict]:
    # Only where and what: echoing the input back could hold NaN/inf (not JSON) or secrets.
    return [
        {
            "loc": [str(p) for p in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in errors
    ]


def _validation_detail(errors: list[dict]) -> str:
    parts = [f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors[:5]]
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def validation_error(errors: list[dict[str, Any]]) -> JSONResponse:
    fields = _field_errors(errors)
    return error_json(422, _validation_detail(fields) or "invalid input", errors=fields)


def install_errors(app: FastAPI) -> None:
    """Route every error through ErrorResponse."""

    @app.exception_handler(HTTPError)
    async def _http_error(request: Request, err: HTTPError) -> JSONResponse:
        return error_json(err.status, err.detail, err.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, err: RequestValidationError) -> JSONResponse:
        return validation_error(list(err.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _starlette(request: Request, err: StarletteHTTPException) -> JSONResponse:
        headers = dict(err.headers or {})
        if err.status_code == 405:  # Allow: every method of every route of this path
            path = request.scope.get("path", "")
            methods: set[str] = set()
            for route in _flat_routes(app.router.routes):
                regex = getattr(route, "path_regex", None)
                if regex is not None and regex.match(path):
                    methods |= set(getattr(route, "methods", None) or ())
            if methods:
                headers["Allow"] = ", ".join(sorted(methods))
        return error_json(err.status_code, str(err.detail), headers or None)


def _flat_routes(routes: list[Any]) -> Iterator[Any]:
    """Every route, those of included routers too (recent FastAPI keeps an included router
    whole, as one entry that holds it as `original_router`; older ones copy its routes)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _flat_routes(inner.routes)
        else:
            yield route


# ------------------------------------------------------------------------- the contract
@dataclass(frozen=True)
class Contract:
    """What the document knows about the index it serves.

    dim / id_type None: not known when the app was made (the loader decides); vectors of any
    length and ids of either kind are then documented, and the index validates them.
    """

    dim: int | None = None
    id_type: Literal["int", "str"] | None = None
    normalize: bool = True
    max_k: int = 1000
    max_vectors: int = 1024

    @classmethod
    def from_schema(cls, schema: StoreSchema, **limits: int) -> Contract:
        """The contract of a store (index.backend.VectorStore.schema), FAISS or Milvus."""
        return cls(
            dim=int(schema.dim),
            id_type=schema.id_type,  # type: ignore[arg-type]
            normalize=bool(schema.normalize),
            **limits,
        )


def _integral(value: Any) -> Any:
    # JSON Schema counts 3.0 as an integer; pydantic's strict int would not.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


_NUMBER = re.compile(r"-?[0-9]{1,30}(\.[0-9]{0,30})?([eE][-+]?[0-9]{1,3})?")


def _form_int(value: Any) -> Any:
    # A form field is text: "7", and also "7.0" or "7e+3", the integers JSON Schema allows.
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        number = Decimal(value)
        if number == number.to_integral_value():
            return int(number)
    return value


def _form_bool(value: Any) -> Any:
    return {"true": True, "false": False}.get(value, value) if isinstance(value, str) else value


def _check_string_id(value: str) -> str:
    problem = string_id_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _not_null(value: Any) -> Any:
    if value is None:
        raise ValueError("must not be null (leave the field out instead)")
    return value


FormBool = Annotated[bool, BeforeValidator(_form_bool)]


def _int(lo: int, hi: int, form: bool = False, **extra: Any) -> Any:
    # Field before the validator, or pydantic documents (and checks) no bounds.
    return Annotated[
        int, Field(ge=lo, le=hi, **extra), BeforeValidator(_form_int if form else _integral)
    ]


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)  # "default": null where null is refused would mislead


_NOT_DOT = {"not": {"enum": [".", ".."]}}


def id_schema(contract: Contract) -> dict[str, Any]:
    """JSON Schema of an item id for the served index (also used for `{item_id}` in paths)."""
    int_schema = {"type": "integer", "minimum": I64_MIN, "maximum": I64_MAX}
    str_schema = {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_ID_CHARS,
        "pattern": STRING_ID_PATTERN,
        **_NOT_DOT,
    }
    if contract.id_type == "int":
        return int_schema
    if contract.id_type == "str":
        return str_schema
    return {"anyOf": [int_schema, str_schema]}


def _id_type(contract: Contract, form: bool = False) -> Any:
    int_t = _int(I64_MIN, I64_MAX, form=form)
    str_t = Annotated[
        str,
        Field(min_length=1, max_length=MAX_ID_CHARS, pattern=STRING_ID_PATTERN),
        AfterValidator(_check_string_id),
        Field(json_schema_extra=_NOT_DOT),
    ]
    if contract.id_type == "int":
        return int_t
    if contract.id_type == "str":
        return str_t
    return int_t | str_t


def _vector_type(contract: Contract) -> Any:
    if contract.normalize:
        component = Annotated[float, Field(allow_inf_nan=False)]
        # Normalizing needs a non-zero vector: at least one component that is not 0.
        extra: dict[str, Any] = {"contains": {"not": {"const": 0}}}
        check = AfterValidator(_nonzero)
    else:
        bound = MAX_ABS_UNNORMALIZED
        component = Annotated[float, Field(ge=-bound, le=bound, allow_inf_nan=False)]
        extra, check = {}, AfterValidator(lambda v: v)
    length = {"min_length": contract.dim, "max_length": contract.dim} if contract.dim else {}
    return Annotated[list[component], Field(json_schema_extra=extra, **length), check]


def _nonzero(vector: list[float]) -> list[float]:
    if not any(vector):
        raise ValueError("a zero vector cannot be normalized")
    return vector


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


@dataclass
class Models:
    """Request models for one served index (see build_models)."""

    search: type[BaseModel]
    upsert: type[BaseModel]
    cold_start: type[BaseModel]
    search_media: type[BaseModel]
    cold_start_media: type[BaseModel]
    item_id: Any = None


def _optional(kind: Any, description: str, **constraints: Any) -> tuple[Any, Any]:
    """A create_model field that may be left out but not sent as null (nor documented so)."""
    return (
        Annotated[kind | SkipJsonSchema[None], BeforeValidator(_not_null)],
        Field(None, json_schema_extra=_no_default, description=description, **constraints),
    )


def _no_encoder(value: Any) -> Any:
    raise ValueError("no encoder configured: start the server with --encoder NAME")


def build_models(contract: Contract, encoder: bool = True) -> Models:
    """Request models whose JSON Schema is exactly what the routes accept.

    encoder: whether the server can encode text and images; without one, cold start takes
    only vectors (`text` is refused with a 422 that says why, and left out of the document).
    """
    vector = _vector_type(contract)
    item_id = _id_type(contract)
    k = _int(1, contract.max_k, description="neighbours per query")
    many = {"min_length": 1, "max_length": contract.max_vectors}
    search = create_model(
        "SearchRequest",
        __base__=_Strict,
        vectors=(Annotated[list[vector], Field(description="(Q, D) query vectors", **many)], ...),
        k=(k, 10),
    )
    item = create_model("Item", __base__=_Strict, id=(item_id, ...), vector=(vector, ...))
    upsert = create_model(
        "UpsertRequest",
        __base__=_Strict,
        items=(
            Annotated[list[item], Field(description="same id twice: the later wins", **many)],
            ...,
        ),  # type: ignore[valid-type]
    )
    no_encoder = (SkipJsonSchema[Annotated[Any, BeforeValidator(_no_encoder)]], None)
    cold = create_model(
        "ColdStartRequest",
        __base__=_ColdStartRules,
        vector=_optional(vector, "content vector of the new item"),
        text=_optional(str, "text to encode (needs an encoder)", min_length=1)
        if encoder
        else no_encoder,
        k=(k, 10),
        item_id=_optional(item_id, "id of the new item (needed to insert)"),
        insert=(bool, Field(False, description="insert it so it is retrievable at once")),
    )
    media_fields: dict[str, Any] = {
        "image": _optional(bytes, "an image (JPEG, PNG, WebP, GIF)"),
        "video": _optional(
            bytes,
            "a video (MP4, WebM): frames sampled uniformly in time through the image "
            "tower, pooled; limits on bytes, duration and frame size",
        ),
        "text": _optional(str, "title, description or tags", min_length=1),
        "k": (_int(1, contract.max_k, form=True, description="neighbours"), 10),
    }
    media = create_model("SearchMediaForm", __base__=_SearchMediaRules, **media_fields)
    cold_media = create_model(
        "ColdStartMediaForm",
        __base__=_ColdStartMediaRules,
        **media_fields,
        item_id=_optional(_id_type(contract, form=True), "id of the new item (needed to insert)"),
        insert=(FormBool, Field(False, description="insert it (needs the write token)")),
    )
    return Models(search, upsert, cold, media, cold_media, item_id)


_ONE_OF_VECTOR_TEXT = {"oneOf": [{"required": ["vector"]}, {"required": ["text"]}]}
_IMAGE_OR_TEXT = {"anyOf": [{"required": [part]} for part in ("image", "video", "text")]}
_INSERT_NEEDS_ID = {
    "anyOf": [{"properties": {"insert": {"const": False}}}, {"required": ["item_id"]}]
}


def _rules(self: Any, media: bool) -> Any:
    vector, text = getattr(self, "vector", None), getattr(self, "text", None)
    if media and text is None and all(getattr(self, f, None) is None for f in ("image", "video")):
        raise ValueError("send an image, a video and/or text")
    if not media and (vector is None) == (text is None):
        raise ValueError("send exactly one of vector or text")
    if getattr(self, "insert", False) and getattr(self, "item_id", None) is None:
        raise ValueError("insert=true needs an item_id")
    return self


class _ColdStartRules(_Strict):
    model_config = ConfigDict(json_schema_extra={"allOf": [_ONE_OF_VECTOR_TEXT, _INSERT_NEEDS_ID]})

    @model_validator(mode="after")
    def _check(self) -> Any:
        return _rules(self, media=False)


class _SearchMediaRules(_Strict):
    model_config = ConfigDict(json_schema_extra=_IMAGE_OR_TEXT)

    @model_validator(mode="after")
    def _check(self) -> Any:
        return _rules(self, media=True)


# (image or text) and (insert=false or an item_id), spelt as one anyOf: schemathesis fills
# upload fields from their `encoding` media types only outside allOf.
_MEDIA_AND_ID = {
    "anyOf": [
        {"required": [part], **extra}
        for part in ("image", "video", "text")
        for extra in ({"properties": {"insert": {"const": False}}}, {"required": [part, "item_id"]})
    ]
}


class _ColdStartMediaRules(_Strict):
    model_config = ConfigDict(json_schema_extra=_MEDIA_AND_ID)

    @model_validator(mode="after")
    def _check(self) -> Any:
        return _rules(self, media=True)


# ------------------------------------------------------------------------- request bodies
def _is_json(content_type: str) -> bool:
    main = content_type.split(";", 1)[0].strip().lower()
    return main == "application/json" or (
        main.startswith("application/") and main.endswith("+json")
    )


def json_body(model: type[BaseModel]) -> Callable[[Request], Awaitable[BaseModel]]:
    """A dependency: the request body parsed and validated as `model` (415 unless JSON;
    422 with `errors` when invalid, including non-UTF-8 and malformed JSON)."""

    def parse(raw: bytes) -> BaseModel:
        return model.model_validate_json(raw)

    async def dependency(request: Request) -> BaseModel:
        content_type = request.headers.get("content-type")
        if content_type is not None and not _is_json(content_type):
            raise HTTPError(415, f"send application/json, not {content_type[:60]!r}")
        raw = await request.body()
        try:
            if len(raw) > OFFLOAD_BYTES:
                return await run_in_threadpool(parse, raw)
            return parse(raw)
        except ValidationError as err:
            raise _Invalid(err.errors(include_input=False), ("body",)) from None

    dependency.__name__ = f"json_body_{model.__name__}"
    dependency.body_model = model  # type: ignore[attr-defined]
    return dependency


def form_body(
    model: type[BaseModel],
    files: tuple[str, ...] = ("image", "video"),
    repeated: Mapping[str, int] | None = None,
) -> Callable[[Request], Awaitable[BaseModel]]:
    """A dependency: a multipart/form-data body validated as `model`; `files` are read as
    bytes (413 over the body limit comes from the middleware). URL-encoded forms without
    files (`curl -d`) are accepted too, though the document names multipart only.
    repeated: file fields that may be sent several times (name -> at most how many), handed
    to the model as a list in the order sent (e.g. a carousel's images); others once."""
    repeated = dict(repeated or {})
    max_files = len(files) + sum(max(n - 1, 0) for n in repeated.values())

    async def dependency(request: Request) -> BaseModel:
        content_type = request.headers.get("content-type", "")
        main = content_type.split(";", 1)[0].strip().lower()
        if main not in ("multipart/form-data", "application/x-www-form-urlencoded"):
            raise HTTPError(415, f"send multipart/form-data, not {content_type[:60]!r}")
        if main == "multipart/form-data" and "boundary=" not in content_type:
            raise HTTPError(400, "multipart/form-data without a boundary")
        try:
            form = await request.form(max_files=max_files, max_fields=32)
        except StarletteHTTPException as err:
            if repeated and "Too many files" in str(err.detail):  # e.g. a long carousel
                limits = ", ".join(f"{k}: at most {n}" for k, n in repeated.items())
                raise HTTPError(422, f"{err.detail} ({limits})") from None
            raise HTTPError(400, f"malformed form body: {err.detail}") from None
        except Exception as err:  # a parser error on a malformed body
            raise HTTPError(400, f"malformed form body: {err}") from None
        values: dict[str, Any] = {}
        try:
            for key, value in form.multi_items():
                if key in values and key not in repeated:
                    raise _Invalid([_err((key,), "send this field once", "duplicate")], ("body",))
                if key in files:
                    value = await value.read() if hasattr(value, "read") else value.encode()
                    if not value:
                        continue  # an empty file part is no file
                if key in repeated:
                    values.setdefault(key, []).append(value)
                    continue
                values[key] = value
        finally:
            await form.close()
        try:
            parts = [b for v in values.values() for b in (v if isinstance(v, list) else [v])]
            if sum(len(b) for b in parts if isinstance(b, bytes)) > OFFLOAD_BYTES:
                return await run_in_threadpool(model.model_validate, values)
            return model.model_validate(values)
        except ValidationError as err:
            raise _Invalid(err.errors(include_input=False), ("body",)) from None

    dependency.__name__ = f"form_body_{model.__name__}"
    dependency.form_model = model  # type: ignore[attr-defined]
    return dependency


def _err(loc: tuple[str, ...], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": kind}


class _Invalid(RequestValidationError):
    def __init__(self, errors: Any, prefix: tuple[str, ...]) -> None:
        super().__init__(
            [{**e, "loc": (*prefix, *e.get("loc", ()))} for e in errors]  # type: ignore[arg-type]
        )


# What an image upload may be: the formats the one decoder reads (data.images).
IMAGE_UPLOAD = {
    "image": {"contentType": "image/png, image/jpeg, image/webp, image/gif"},
    "video": {"contentType": "video/mp4, video/webm"},
}
# Uploads may decode JPEGs at a reduced scale down to this side (PIL draft): encoders resize
# to a few hundred pixels anyway.
DRAFT_SIDE = 4096


def decode_upload(data: bytes, max_pixels: int, draft_side: int = DRAFT_SIDE) -> Image.Image:
    """A PIL RGB image from uploaded (or stored) bytes, through the one bomb-safe decoder
    (data.images.decode_image), whose refusals become errors of the error model: 413 over the
    pixel limit or a decompression bomb, 415 not an image, 422 empty, corrupt or truncated."""
    try:
        return decode_image(data, max_pixels=max_pixels, draft_side=draft_side)
    except NotAnImage as err:
        raise HTTPError(415, f"upload is {err}") from err
    except CorruptImage as err:
        raise HTTPError(422, str(err)) from err
    except ImageRejected as err:  # DecompressionBomb, OversizedImage
        raise HTTPError(413, str(err)) from err


def decode_video_upload(data: bytes, limits: VideoLimits, frames: int) -> list[Image.Image]:
    """K RGB frames sampled uniformly from an uploaded video, through the one bomb-safe video
    decoder (data.video.decode_video), whose refusals become errors of the error model: 413
    over the byte or duration limit (the duration read from the container, nothing decoded) or
    a frame over the pixel limit, 415 not an MP4 / WebM, 422 truncated, corrupt or without a
    decodable frame."""
    try:
        return decode_video(data, frames, limits)[0]
    except NotAVideo as err:
        raise HTTPError(415, f"upload is {err}") from err
    except CorruptVideo as err:
        raise HTTPError(422, str(err)) from err
    except VideoRejected as err:  # OversizedVideo, VideoTooLong, FrameBomb
        raise HTTPError(413, str(err)) from err
    except Exception as err:  # FFmpeg raising something unforeseen on hostile bytes: a 422
        log.warning("video upload refused: %s: %s", type(err).__name__, err)
        raise HTTPError(422, f"undecodable video: {type(err).__name__}") from err


# ------------------------------------------------------------------------- route docs
Auth = Literal["none", "read", "write", "optional"]


@dataclass
class RouteDocs:
    """Makes the `responses=` / `openapi_extra=` of a route from its statuses and auth rule.

    token: a bearer token is configured; auth_reads: reads need it too; insecure_writes:
    writes are allowed without any token. `auth="optional"` is a read that needs the write
    token for some requests (cold start with insert=true).
    """

    token: bool
    auth_reads: bool = False
    insecure_writes: bool = False
    bodies: dict[str, type[BaseModel]] = field(default_factory=dict)

    def auth_statuses(self, auth: Auth) -> tuple[int, ...]:
        read = (401,) if self.auth_reads and self.token else ()
        write = (401,) if self.token else () if self.insecure_writes else (403,)
        return {"none": (), "read": read, "write": write, "optional": read + write}[auth]

    def security(self, auth: Auth) -> list[dict[str, list]] | None:
        bearer: dict[str, list] = {"bearerAuth": []}
        needs_read = self.auth_reads and self.token
        if auth == "read":
            return [bearer] if needs_read else []
        if auth == "write":
            return [bearer] if self.token else []
        if auth == "optional":
            return [bearer] if needs_read else ([{}, bearer] if self.token else [])
        return None

    def __call__(
        self,
        ok: Any,
        *statuses: int,
        auth: Auth = "none",
        json: type[BaseModel] | None = None,
        form: type[BaseModel] | None = None,
        encoding: dict[str, Any] | None = None,
        **descriptions: str,
    ) -> dict[str, Any]:
        """Decorator kwargs: `@app.post(path, **docs(OkModel, 404, 422, auth="read"))`.

        ok: the 200 model, or a full OpenAPI response dict. json / form: the request body
        model (read by json_body / form_body); adds 400/413/415/422 for bodies. encoding: the
        OpenAPI `encoding` of form fields (e.g. the media types an upload must be).
        """
        every = set(statuses) | set(self.auth_statuses(auth))
        extra: dict[str, Any] = {}
        if json is not None or form is not None:
            every |= {400, 413, 415, 422}
            model = json or form
            assert model is not None
            self.bodies[model.__name__] = model
            media = "application/json" if json is not None else "multipart/form-data"
            ref = {"$ref": f"#/components/schemas/{model.__name__}"}
            content: dict[str, Any] = {"schema": ref}
            if encoding:
                content["encoding"] = encoding
            extra["requestBody"] = {"required": True, "content": {media: content}}
        security = self.security(auth)
        if security is not None:
            extra["security"] = security
        responses: dict[int | str, Any] = (
            {200: {"model": ok}} if isinstance(ok, type) else {200: ok}
        )
        responses.update(error_responses(*every, **descriptions))
        return {"responses": responses, "openapi_extra": extra or None}


def install_openapi(app: FastAPI, docs: RouteDocs, contract: Contract) -> None:
    """The app's OpenAPI document: FastAPI's, plus the bearer scheme, the request body schemas
    of json_body/form_body routes and the id schema of every `{item_id}` path parameter."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
            tags=app.openapi_tags,
        )
        components = doc.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        for name, model in docs.bodies.items():
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[name] = schema
        if docs.token:
            components["securitySchemes"] = {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the server's token (COLDSTART_API_TOKEN or --token-file)",
                }
            }
        ident = id_schema(contract)
        for operations in doc.get("paths", {}).values():
            for operation in operations.values():
                for param in operation.get("parameters", []):
                    if param.get("in") == "path" and param.get("name") == "item_id":
                        param["schema"] = {**ident, "title": "Item Id"}
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


__all__ = [
    "Contract",
    "ERRORS",
    "ErrorResponse",
    "HTTPError",
    "Models",
    "RouteDocs",
    "build_models",
    "decode_upload",
    "error_responses",
    "form_body",
    "id_schema",
    "install_errors",
    "install_openapi",
    "json_body",
]
