"""The API's image routes: an inspection's archived images, and each image's bytes (role reader).

An image retention deleted answers 410 Gone saying when, so a client can tell "deleted by policy" from
"never there" (404); the bytes come through the API from the archive, folder or bucket, with their sha256."""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time.

from typing import Any

from fastapi import APIRouter, HTTPException, Path, Response
from sqlalchemy import Engine, select

from lineguard.config.seams import ARCHIVES, ArchiveSettings
from lineguard.services.results.api.filters import INSPECTION_ID
from lineguard.services.results.api.models import ImageOut
from lineguard.services.results.api.queries import images_of
from lineguard.services.results.archive import ImageGone, ImageStore, open_store
from lineguard.services.results.schema import Inspection, InspectionImage
from lineguard.timestamps import utc_iso


def image_routes(engine: Engine, archive: ArchiveSettings | None) -> APIRouter:
    router = APIRouter()
    stores: dict[str, ImageStore] = {}

    def store() -> ImageStore:
        # Opened on first use: an API whose archive is S3 needs boto3 only when an image is asked for.
        if "store" not in stores:
            # Without the line's settings: the URIs the results service wrote, read as they are (file:// only).
            stores["store"] = open_store(archive or ARCHIVES.settings_class("folder").model_validate({"path": "/"}))
        return stores["store"]

    @router.get("/v1/inspections/{inspection_id}/images", response_model=list[ImageOut], responses={404: {}, 422: {}})
    def inspection_images(inspection_id: str = Path(pattern=INSPECTION_ID)) -> list[dict[str, Any]]:
        """The images kept of one inspection, deleted ones too (deleted_at says when; no href)."""
        with engine.connect() as conn:
            if (
                conn.execute(select(Inspection.inspection_id).where(Inspection.inspection_id == inspection_id)).first()
                is None
            ):
                raise HTTPException(404, f"inspection_id: no inspection {inspection_id}")
            return [image for images in images_of(conn, [inspection_id]).values() for image in images]

    @router.get(
        "/v1/images/{image_id}",
        response_class=Response,
        responses={200: {"content": {"image/*": {}}}, 404: {}, 410: {"description": "deleted by retention"}},
    )
    def image(image_id: int = Path(ge=1, le=2**63 - 1)) -> Response:
        """The image's stored bytes (its content type, ETag its sha256); 410 Gone when retention deleted it."""
        with engine.connect() as conn:
            table = InspectionImage.__table__
            row = conn.execute(select(table).where(table.c.id == image_id)).first()
        if row is None:
            raise HTTPException(404, f"image_id: no image {image_id}")
        if row.deleted_at is not None:
            raise HTTPException(
                410,
                f"image {image_id} ({row.kind} of inspection {row.inspection_id}) was deleted by retention at "
                f"{utc_iso(row.deleted_at)}",
            )
        try:
            data = store().get(row.uri)
        except ImageGone:
            raise HTTPException(404, f"image {image_id}: its file {row.uri} is missing from the archive") from None
        return Response(data, media_type=row.content_type, headers={"ETag": f'"{row.sha256}"'})

    return router
