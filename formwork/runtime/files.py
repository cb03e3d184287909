"""Uploaded files: content-addressed blobs under FILES_DIR plus one ``fw_file`` row per upload.

The blob is named by its sha256, so the same bytes uploaded twice are stored once; each upload still gets
its own random token (the handle attachment fields hold), name and owner. Downloads are allowed to the
uploader, to administrators and to anyone who can read a record whose attachment field holds the token.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import re
import secrets
import tempfile
import unicodedata
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Text, cast, insert, select
from sqlalchemy.engine import Connection

from formwork import db
from formwork.errors import NotFound, TooLarge
from formwork.metadata.catalog import Catalog
from formwork.metadata.fieldtypes.base import FILES
from formwork.runtime.permissions import Access

CHUNK = 64 * 1024
_MIME = re.compile(r"^[A-Za-z0-9][\w.+-]*/[\w.+-]+\Z")
_UNSAFE_NAME = re.compile(r'[\x00-\x1f\x7f-\x9f/\\:*?"<>|]')


def safe_name(name: str | None) -> str:
    """A file name fit for storage and Content-Disposition: no paths, control or shell-special characters."""
    text = unicodedata.normalize("NFC", name or "")
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    # format characters (bidi overrides, zero-width marks) and line separators: "invoice\u202egnp.exe"
    # must not show as "invoice.exe.png"
    text = "".join(ch for ch in text if unicodedata.category(ch) not in ("Cf", "Zl", "Zp"))
    text = _UNSAFE_NAME.sub("_", text).strip().lstrip(".")
    if len(text) > 200:
        stem, dot, ext = text.rpartition(".")
        text = (stem[: 190] + dot + ext[:9]) if dot and len(ext) <= 9 else text[:200]
    return text or "file"


def guess_mime(name: str, declared: str | None) -> str:
    """The type from the file name, else the client's claim if well-formed; served with nosniff anyway."""
    guessed = mimetypes.guess_type(name, strict=False)[0]
    if guessed:
        return guessed
    if declared and _MIME.match(declared) and len(declared) <= 120:
        return declared.lower()
    return "application/octet-stream"


def blob_path(files_dir: str | Path, sha: str) -> Path:
    return Path(files_dir) / "blobs" / sha[:2] / sha[2:4] / sha


def save_stream(stream: IO[bytes], files_dir: str | Path, max_size: int | None,
                created: list[Path] | None = None) -> tuple[str, int]:
    """Copy ``stream`` into the blob store chunk by chunk; returns (sha256, size). 413 past ``max_size``
    (nothing of it stays on disk). A blob this call wrote anew is appended to ``created``, so a caller whose
    transaction then fails can take it back (:func:`discard`)."""
    tmp_dir = Path(files_dir) / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd, tmp_name = tempfile.mkstemp(dir=tmp_dir)
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                if max_size is not None and size > max_size:
                    raise TooLarge(f"the file is larger than {max_size // (1024 * 1024) or 1} MB")
                digest.update(chunk)
                out.write(chunk)
        sha = digest.hexdigest()
        target = blob_path(files_dir, sha)
        if target.exists():
            os.unlink(tmp_name)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp_name, target)
            if created is not None:
                created.append(target)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    return sha, size


def store_upload(conn: Connection, stream: IO[bytes], name: str | None, declared_mime: str | None,
                 user_id: int | None, files_dir: str | Path, max_size: int | None,
                 created: list[Path] | None = None) -> dict[str, Any]:
    """Store one upload and register it; returns the API shape {"token","name","size","mime"}."""
    clean = safe_name(name)
    sha, size = save_stream(stream, files_dir, max_size, created)
    token = secrets.token_urlsafe(32)
    mime = guess_mime(clean, declared_mime)
    conn.execute(insert(db.files).values(token=token, name=clean, size=size, mime=mime, sha256=sha,
                                         user_id=user_id, created_at=db.utcnow()))
    return {"token": token, "name": clean, "size": size, "mime": mime}


def discard(conn: Connection, created: list[Path]) -> None:
    """Take back blobs written for an upload whose transaction was rolled back (a refused form): a blob no
    file row names any more is removed, so nothing half-uploaded remains on disk."""
    for path in created:
        if conn.execute(select(db.files.c.id).where(db.files.c.sha256 == path.name).limit(1)).first() is None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
    created.clear()


def type_allowed(mime: str, allowed: list[str] | None) -> bool:
    """Does ``mime`` match one of a field's allowed types (``image/*`` matches every image)?"""
    return not allowed or any(mime == m or (m.endswith("/*") and mime.startswith(m[:-1])) for m in allowed)


# images a browser shows inline safely (no SVG: it can carry script); PDFs open in the browser's viewer
PREVIEW_IMAGES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/avif"})


def preview_kind(mime: str) -> str | None:
    """"image" for a picture shown in the page's lightbox, "pdf" for a document opened in a new tab."""
    if mime in PREVIEW_IMAGES:
        return "image"
    if mime == "application/pdf":
        return "pdf"
    return None


THUMB_PX = 160  # the longest side of a thumbnail (record pages show them at 72 CSS px, sharp on 2x screens)
THUMB_MAX_PIXELS = 50_000_000  # a larger picture gets no thumbnail (decompression bombs), the page shows an icon


def thumbnail(files_dir: str | Path, sha: str, mime: str) -> tuple[Path, str] | None:
    """A small copy of a picture (JPEG, or PNG when it has transparency) and its type, made with Pillow the
    first time it is asked for and kept under ``thumbs/``; None when it can't be made (not a picture Pillow
    reads, too many pixels, a broken file): the page then shows the original scaled down, or an icon."""
    if mime not in PREVIEW_IMAGES:
        return None
    base = Path(files_dir) / "thumbs" / sha[:2]
    for ext, kind in (("jpg", "image/jpeg"), ("png", "image/png")):
        if (base / f"{sha}.{ext}").is_file():
            return base / f"{sha}.{ext}", kind
    src = blob_path(files_dir, sha)
    try:
        from PIL import Image, ImageOps
    except ImportError:  # pragma: no cover - Pillow is a dependency; a stripped install still serves originals
        return None
    try:
        with Image.open(src) as im:
            w, h = im.size
            if w * h > THUMB_MAX_PIXELS:
                return None
            im.draft("RGB", (THUMB_PX * 2, THUMB_PX * 2))  # JPEG: decode at a reduced size, much faster
            im.seek(0)
            small = ImageOps.exif_transpose(im)
            small.thumbnail((THUMB_PX, THUMB_PX))
            alpha = small.mode in ("RGBA", "LA", "PA") or (small.mode == "P" and "transparency" in small.info)
            small = small.convert("RGBA" if alpha else "RGB")
            ext, kind = ("png", "image/png") if alpha else ("jpg", "image/jpeg")
            base.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=base, suffix=f".{ext}")
            with os.fdopen(fd, "wb") as out:
                small.save(out, "PNG" if alpha else "JPEG", quality=82, optimize=True)
            os.replace(tmp, base / f"{sha}.{ext}")
            return base / f"{sha}.{ext}", kind
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError):
        return None


def _held_by_readable_record(conn: Connection, catalog: Catalog, access: Access, token: str) -> bool:
    """Is the token in an attachment field the caller can see, on a record the caller can read?"""
    from formwork.runtime.records import RecordReader

    reader = RecordReader(catalog, conn, access)
    for app in catalog.apps:
        for t in app.tables:
            fields = [f for f in t.fields if f.ftype.kind == FILES and f.stored]
            if not fields or not access.can_see_table(catalog, t):
                continue
            vis = access.field_visibility(catalog, t, t.sa)
            for f in fields:
                seen = vis.get(f.id, True)
                if seen is False:
                    continue
                conds = reader.base_conditions(t)
                conds.append(cast(t.sa.c[f.column_name], Text).contains(token, autoescape=True))
                if seen is not True:
                    conds.append(seen)
                if conn.execute(select(t.sa.c.id).where(*conds).limit(1)).first() is not None:
                    return True
    return False


def find_for_download(conn: Connection, catalog: Catalog, access: Access, files_dir: str | Path,
                      token: str) -> tuple[Any, Path]:
    """The file row and its blob path, or 404 when it doesn't exist or the caller may not see it."""
    if not token or len(token) > 64:
        raise NotFound("no such file")
    row = conn.execute(select(db.files).where(db.files.c.token == token)).first()
    if row is None:
        raise NotFound("no such file")
    allowed = access.is_admin or (row.user_id is not None and row.user_id == access.user_id) \
        or _held_by_readable_record(conn, catalog, access, token)
    if not allowed:
        raise NotFound("no such file")
    path = blob_path(files_dir, row.sha256)
    if not path.is_file():
        raise NotFound("the file's content is missing from storage")
    return row, path
