"""GET /models and GET /models/<id or name> (names contain "/", hence the path route)."""

from __future__ import annotations

from urllib.parse import unquote

from sanic import Request, Sanic
from sanic.response import HTTPResponse, json

from inferd.apidoc import COMMON_ERRORS, describe
from inferd.replies import ModelDetail, ModelsReply


@describe("The configured models' names", "models", replies={200: ModelsReply})
async def list_models(request: Request) -> HTTPResponse:
    names = [model.name for model in request.app.ctx.registry.models]
    return json(ModelsReply(models=names).model_dump())


def name_in_path(model_id: str) -> str:
    """A model's name as a route's path gives it: Sanic hands path parameters over still
    percent-encoded ("org%2Fname"), and a trailing slash is never part of a name ("" for
    none at all)."""
    return unquote(model_id).rstrip("/")


@describe(
    "A model by id or name", "models", replies={200: ModelDetail}, errors=(404, *COMMON_ERRORS)
)
async def get_model(request: Request, model_id: str) -> HTTPResponse:
    registry = request.app.ctx.registry
    name = name_in_path(model_id)
    if not name:  # `/models/` is the list, as `/models` is
        return await list_models(request)
    model = registry.find(name)
    detail = ModelDetail(
        id=model.id,
        name=model.name,
        context_length=registry.context_length(model),
        quantization=registry.quantization(model),
        device=registry.placement(model, None),
        loaded_devices=registry.loaded_devices(model),
    )
    return json(detail.model_dump())


def register(app: Sanic) -> None:
    app.add_route(list_models, "/models", methods=["GET"], name="list_models", error_format="json")
    app.add_route(
        get_model, "/models/<model_id:path>", methods=["GET"], name="get_model", error_format="json"
    )
