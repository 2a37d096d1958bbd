"""The HTTP app's routes, one router per area, over one shared `AppState` (index.routes.state):

- `ops`: /health, /ready, /metrics, /v1/snapshot;
- `search`: /v1/search, /v1/items/{id}/neighbors, /v1/search/media;
- `items`: GET and DELETE /v1/items/{id}, POST /v1/items;
- `coldstart`: /v1/coldstart, /v1/coldstart/media;
- `browse`: /v1/items/{id}/meta, /v1/items/{id}/image and the page at `/`.

Each module's `router(state, ...)` makes an APIRouter for one app; `index.server.create_app`
includes them all.
"""
