"""Recommendation routes over a served ranker (index.recommend.RankerService), included by
create_app when the app layer hands it one (`coldstart serve --ranker ...`).

Reads: GET /v1/ranker, GET /v1/users (some known users), GET /v1/users/{id}/history (their
seen items), GET /v1/users/{id}/recommendations, POST /v1/recommendations (a user the
model never saw, by history). Writes (bearer token): POST /v1/ranker/items (an item from its
text, image, carousel (several images) and/or video, through the encoder as the embed job
embeds it (index.routes_search.embed_upload) and the method's cold-item path, with its media
type),
DELETE /v1/ranker/items/{id}, POST /v1/events (engagement moves an uploaded item's vector
towards the users who engaged with it; index.recommend). Bad input is a 4xx: unknown user 404, empty history or unknown
history ids 422, k outside 1..max_k 422, a trained item's id uploaded 409; bad media as on the
content routes (413 over a limit, 415 not an image / video, 422 corrupt or truncated).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator

from coldstart.data.schema import media_type_of
from coldstart.index.api import (
    _IMAGE_OR_TEXT,
    IMAGE_UPLOAD,
    FormBool,
    HTTPError,
    _int,
    _Strict,
    form_body,
    json_body,
)
from coldstart.index.app_state import AppState
from coldstart.index.backend import InvalidInput
from coldstart.index.batching import BatchQueue
from coldstart.index.recommend import SEGMENTS, Conflict, RankerService, UnknownUser
from coldstart.index.routes_search import ItemIdT, embed_upload

_F32_MAX = float(np.finfo(np.float32).max)
# A carousel: at most this many images in one upload (each within the image limits).
MAX_CAROUSEL_IMAGES = 10


class Recommendations(BaseModel):
    ids: list[ItemIdT] = Field(description="best first")
    scores: list[float] = Field(
        description="user . item inner products, unrounded (float32 values): equal scores are "
        "true ties"
    )
    segments: list[str] = Field(description="warm (trained item) or cold (cold-item path)")


class UserList(BaseModel):
    ids: list[ItemIdT] = Field(description="users the model knows, in the artifact's order")
    total: int = Field(description="how many users the model knows")
    offset: int


class UserHistory(BaseModel):
    user: ItemIdT
    items: list[ItemIdT] = Field(
        description="items the user is known to have engaged with (what exclude_seen masks), "
        "up to limit"
    )
    total: int = Field(description="length of the whole history")


class RankerInfo(BaseModel):
    method: str
    dim: int = Field(description="dimension of user and item vectors")
    content_dim: int = Field(description="content vector dimension read by the cold-item path")
    cold_item_path: bool = Field(description="whether items can be added from content")
    history_users: bool = Field(description="whether POST /v1/recommendations is available")
    warm_items: int
    cold_items: int


class ItemAdded(BaseModel):
    id: ItemIdT
    lsn: int = Field(description="sequence number of the durable write")


class ItemDeleted(BaseModel):
    deleted: ItemIdT
    lsn: int


class Event(_Strict):
    user: ItemIdT = Field(description="a user the model knows")
    item: ItemIdT = Field(description="a served item (events on trained items are ignored)")
    event: StrictStr = Field(min_length=1, max_length=64, description="e.g. click, view, rating")
    value: float = Field(
        1.0, ge=0, allow_inf_nan=False, description="weight of the event (0: recorded as none)"
    )


class EventsRequest(_Strict):
    events: list[Event] = Field(min_length=1, max_length=10_000)


class EventsApplied(BaseModel):
    lsn: int = Field(description="sequence number of the durable write to the item vectors")
    applied: int = Field(description="events that moved an uploaded (cold) item's vector")
    ignored: int = Field(description="events on trained items, or of weight 0")


class _HistoryRules(_Strict):
    @model_validator(mode="after")
    def _check(self) -> Any:
        if not self.items:  # type: ignore[attr-defined]
            raise ValueError("the history is empty: send at least one item id")
        return self


class _UploadRules(_Strict):
    model_config = ConfigDict(json_schema_extra=_IMAGE_OR_TEXT)  # image, video and/or text

    @model_validator(mode="after")
    def _check(self) -> Any:
        if all(getattr(self, f, None) in (None, []) for f in ("image", "video", "text")):
            raise ValueError("send an image (or several: a carousel), a video and/or text")
        return self


def _body(kind: str, max_k: int) -> type[BaseModel]:
    from pydantic import create_model

    k = (_int(1, max_k, form=kind == "form", description="items to return"), 20)
    if kind == "history":
        return create_model(
            "HistoryRecommendationRequest",
            __base__=_HistoryRules,
            items=(
                Annotated[
                    list[ItemIdT],
                    Field(
                        description="the new user's history: ids of served items", max_length=10_000
                    ),
                ],
                ...,
            ),
            k=k,
            segment=(StrictStr, Field("all", description=f"one of {SEGMENTS}")),
            exclude_history=(bool, Field(True, description="never return the history's items")),
        )
    return create_model(
        "RankerItemForm",
        __base__=_UploadRules,
        id=(StrictStr, Field(..., min_length=1, description="id of the new item")),
        text=(StrictStr | None, Field(None, min_length=1, description="title, description")),
        image=(
            list[bytes] | None,
            Field(
                None,
                max_length=MAX_CAROUSEL_IMAGES,
                description="an image (JPEG, PNG, WebP, GIF): a photo; send the field several "
                f"times (up to {MAX_CAROUSEL_IMAGES}) for a carousel, whose images are pooled "
                "into one image vector (the mean of their unit vectors)",
            ),
        ),
        video=(
            bytes | None,
            Field(
                None,
                description="a video (MP4, WebM): frames sampled uniformly in time through the "
                "image tower, mean-pooled; limits on bytes, duration and frame size, as on "
                "/v1/search/media. With a video the item's media type is video",
            ),
        ),
        replace=(FormBool, Field(True, description="replace an uploaded item of this id")),
    )


def _answer(ids: list, scores: list[float], segments: list[str]) -> dict[str, Any]:
    clipped = np.nan_to_num(np.asarray(scores, np.float64), nan=-_F32_MAX, posinf=_F32_MAX)
    return {"ids": ids, "scores": clipped.tolist(), "segments": segments}


@dataclass
class Upload:
    """One ranker upload: its id and media type (data.schema.MEDIA_TYPES), and either its
    content vector, already computed (a video or a carousel: embed_upload), or what the
    encoder makes it from (at most one decoded image, and texts)."""

    id: Any
    media: str
    images: list[Any]
    texts: list[str]
    content: np.ndarray | None = None  # (C,)


def upload_batch(service: RankerService, encode: Any, batch: list[Upload]) -> list[Any]:
    """Add N uploads: the content of those without one in one encoder call (`encode.many`
    when the encoder has it), then one durable write per run of distinct ids (a later upload
    of an id wins), each item through the cold-item path with its media type. Returns per
    upload its lsn, or the exception that upload alone raises."""
    many = getattr(encode, "many", None)
    todo = [r for r, u in enumerate(batch) if u.content is None]
    vectors: list[Any] = [u.content for u in batch]
    try:
        if many is None:
            raise RuntimeError("no batch encoder")
        if todo:
            content = np.asarray(many([(batch[r].images, batch[r].texts) for r in todo]))
            for r, row in zip(todo, content.astype(np.float32)):
                vectors[r] = row
    except Exception:  # each upload alone: its own error, the others still land
        for r in todo:
            try:
                got = encode(batch[r].images, batch[r].texts)
                vectors[r] = np.asarray(got, np.float32).reshape(-1)
            except Exception as err:
                vectors[r] = err
    results: list[Any] = [None] * len(batch)
    group: list[int] = []

    def write(rows: list[int]) -> None:
        try:
            lsn = service.add_items(
                [batch[r].id for r in rows],
                np.stack([vectors[r] for r in rows]),
                [batch[r].media for r in rows],  # what was uploaded: the item's media type
            )
            for r in rows:
                results[r] = lsn
        except Exception:
            if len(rows) == 1:
                raise
            for r in rows:  # attribute the failure to the upload(s) that cause it
                try:
                    write([r])
                except Exception as err:
                    results[r] = err

    def flush() -> None:
        if group:
            try:
                write(group)
            except Exception as err:
                results[group[0]] = err
            group.clear()

    for r, vector in enumerate(vectors):
        if isinstance(vector, BaseException):
            results[r] = vector
            continue
        if any(batch[g].id == batch[r].id for g in group):
            flush()
        group.append(r)
    flush()
    return results


def router(state: AppState, service: RankerService) -> APIRouter:
    """The routes of the module docstring over `service`."""
    api = APIRouter()
    docs, max_k = state.docs, state.config.max_k
    history_model, upload_model = _body("history", max_k), _body("form", max_k)
    # Concurrent uploads share one encoder call and one durable write (index.batching).
    uploads = None
    if state.config.batching and state.encode is not None:
        uploads = BatchQueue(
            partial(upload_batch, service, state.encode),
            state.config.max_batch_size,
            state.config.max_wait_ms,
            thread_name_prefix="ranker-upload",
        )
        state.closers.append(uploads.close)
    history_body = Depends(json_body(history_model))
    upload_form = Depends(form_body(upload_model, repeated={"image": MAX_CAROUSEL_IMAGES}))
    events_body = Depends(json_body(EventsRequest))
    tags = ["recommendations"]

    async def run(fn: Any, *args: Any) -> Any:
        return await mapped(run_in_threadpool(fn, *args))

    async def mapped(awaitable: Any) -> Any:
        try:
            return await awaitable
        except UnknownUser as err:
            raise HTTPError(404, str(err)) from None
        except Conflict as err:
            raise HTTPError(409, str(err)) from None
        except InvalidInput as err:
            raise HTTPError(422, str(err)) from None

    def upload_one(upload: Upload) -> int:
        result = upload_batch(service, state.encode, [upload])[0]
        if isinstance(result, BaseException):
            raise result
        return int(result)

    @api.get("/v1/ranker", tags=tags, dependencies=state.read, **docs(RankerInfo, auth="read"))
    async def ranker_info() -> JSONResponse:
        """The served method: its name, dimensions, paths and item counts per segment."""
        return JSONResponse(
            {
                "method": str(service.info.get("method", "")),
                "dim": service.dim,
                "content_dim": service.content_dim,
                "cold_item_path": service.cold_item is not None,
                "history_users": service.history_user is not None,
                "warm_items": int(await run_in_threadpool(service.warm.count)),
                "cold_items": int(await run_in_threadpool(service.cold.count)),
            }
        )

    @api.get("/v1/users", tags=tags, dependencies=state.read, **docs(UserList, 422, auth="read"))
    async def list_users(
        limit: int = Query(100, ge=1, le=1000, description="users to return"),
        offset: int = Query(0, ge=0, le=2**31 - 1, description="users to skip"),
    ) -> JSONResponse:
        """Some users the model knows (for picking one; read-only), in a stable order."""
        everyone = list(service.users()) if service.users is not None else []
        return JSONResponse(
            {"ids": everyone[offset : offset + limit], "total": len(everyone), "offset": offset}
        )

    @api.get(
        "/v1/users/{user_id}/history",
        tags=tags,
        dependencies=state.read,
        **docs(UserHistory, 404, 422, auth="read"),
    )
    async def user_history(
        user_id: str,
        limit: int = Query(100, ge=1, le=10_000, description="history items to return"),
    ) -> JSONResponse:
        """The items a known user engaged with (404 for a user the model does not know)."""

        def answer() -> dict[str, Any]:
            uid = service.user_id(user_id)
            service.vector_of_user(uid)  # UnknownUser -> 404
            seen = list(service.seen(uid))
            return {"user": uid, "items": seen[:limit], "total": len(seen)}

        return JSONResponse(await run(answer))

    @api.get(
        "/v1/users/{user_id}/recommendations",
        tags=tags,
        dependencies=state.read,
        **docs(Recommendations, 404, 422, auth="read"),
    )
    async def user_recommendations(
        user_id: str,
        k: int = Query(20, ge=1, le=max_k, description="items to return"),
        exclude_seen: bool = Query(
            True, description="never return items the user is known to have engaged with"
        ),
        segment: str = Query("all", description=f"one of {SEGMENTS}"),
    ) -> JSONResponse:
        """Top-k items for a user the model knows (404 otherwise), by the stored user vector."""

        def answer() -> dict[str, Any]:
            uid = service.user_id(user_id)
            vector = service.vector_of_user(uid)
            exclude = list(service.seen(uid)) if exclude_seen else []
            return _answer(*service.recommend(vector, k, exclude, segment))

        return JSONResponse(await run(answer))

    @api.post(
        "/v1/recommendations",
        tags=tags,
        dependencies=state.read,
        **docs(Recommendations, 422, auth="read", json=history_model),
    )
    async def history_recommendations(body: Any = history_body) -> JSONResponse:
        """Top-k items for a user the model never saw, from the ids of their history (422 on an
        empty history, unknown or deleted ids, or a method without a user path)."""

        def answer() -> dict[str, Any]:
            vector = service.history_vector(body.items)
            exclude = body.items if body.exclude_history else []
            return _answer(*service.recommend(vector, body.k, exclude, body.segment))

        return JSONResponse(await run(answer))

    @api.post(
        "/v1/ranker/items",
        tags=tags,
        dependencies=state.write,
        **docs(
            ItemAdded,
            409,
            422,
            501,
            503,
            auth="write",
            form=upload_model,
            encoding=IMAGE_UPLOAD,
        ),
    )
    async def add_item(request: Request, form: Any = upload_form) -> JSONResponse:
        """A new item from its content: text and/or media, one image (a photo), several
        (`image` sent up to 10 times: a carousel) or a video. The content vector is the one
        the embed job computes for such an item (a carousel's images and a video's K frames
        pooled, then fused with the text), the same as /v1/search/media; the method's
        cold-item path (the function its offline evaluation ran for cold items) then maps it,
        with the item's media type (video, carousel, photo or none) when the method reads it.
        Acknowledged once durable; recommendable on the next request. 409 for the id of a
        trained item; bad media as on /v1/search/media: 413 over the byte, duration or pixel
        limits, 415 not an image / MP4 / WebM, 422 truncated, corrupt or no decodable frame."""
        if state.encode is None:
            raise HTTPError(501, "no encoder configured: start the server with --encoder NAME")
        if not form.replace:
            present = await run_in_threadpool(service.cold.contains, [form.id])
            if present[0]:
                raise HTTPError(409, f"item {form.id!r} exists (send replace=true)")
        files = list(form.image or [])
        texts = [form.text] if form.text else []
        item = service.warm.schema.normalize_id(form.id)
        media = media_type_of(len(files), form.video is not None)
        if media in ("video", "carousel"):  # pooled parts: the embed job's vector, here
            content = await mapped(embed_upload(state, files, form.video, texts, None))
            upload = Upload(item, media, [], texts, content)
        else:  # a photo or text: one encoder call, micro-batched with other uploads
            images = [image for data in files for image in await state.images(data)]
            upload = Upload(item, media, images, texts)
        if uploads is not None:
            lsn = await mapped(uploads.submit(upload))
        else:
            lsn = await run(upload_one, upload)
        return JSONResponse({"id": item, "lsn": int(lsn)})

    @api.post(
        "/v1/events",
        tags=tags,
        dependencies=state.write,
        **docs(EventsApplied, 404, 422, 503, auth="write", json=EventsRequest),
    )
    async def events(body: Any = events_body) -> JSONResponse:
        """Engagement events (user, item, event, value). Each moves an uploaded item's vector
        from its content-derived value towards an ID row estimated from the users who engaged
        with it, gated by the event count n / (n + kappa). Acknowledged once durable; 404 for
        an unknown user, 422 for an unknown item (nothing is applied then)."""
        triples = [(e.user, e.item, e.value) for e in body.events]
        return JSONResponse(await run(service.record_events, triples))

    @api.delete(
        "/v1/ranker/items/{item_id}",
        tags=tags,
        dependencies=state.write,
        **docs(ItemDeleted, 404, 422, 503, auth="write"),
    )
    async def delete_item(item_id: str) -> JSONResponse:
        """Remove an item from the served ranker (warm or cold); 404 when no store has it."""
        removed, lsn = await run(service.delete_item, item_id)
        if not removed:
            raise HTTPError(404, f"unknown item {item_id!r}")
        norm = service.warm.schema.normalize_id(item_id)
        return JSONResponse({"deleted": norm, "lsn": int(lsn)})

    return api
