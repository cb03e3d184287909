"""Keys made from labels: a person names a thing ("客户", "Close date") and the key is derived.

A key is what the API, formulas and filters use (``[a-z][a-z0-9_]{0,62}``). People should not have to
invent one, so every definition (app, table, field, view, dashboard, automation) can be created from its
label alone: ``derive_key`` turns a Latin-script label into a readable slug (``Close date`` → ``close_date``,
``Café`` → ``cafe``) and gives any other label a short generated key (``f_3k9q2x``) rather than a
transliteration (pinyin keys read badly and guess wrong on polyphones). The key stays editable.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from collections.abc import Callable, Collection
from typing import Any

KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
MAX_SLUG = 40
# prefixes of generated keys by kind of definition
PREFIXES = {"app": "a", "table": "t", "field": "f", "view": "v", "dashboard": "d", "automation": "r",
            "role": "role", "widget": "w", "choice": "c"}
_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"  # no 0/o, 1/l: readable when typed from a screen


def label_candidates(label: Any) -> list[str]:
    """The texts of a label to slug, English first (a key is ASCII, so English reads best)."""
    if isinstance(label, dict):
        first = [label.get("en")] if isinstance(label.get("en"), str) else []
        return [x for x in [*first, *(v for k, v in label.items() if k != "en")] if isinstance(x, str) and x.strip()]
    if isinstance(label, str) and label.strip():
        return [label]
    return []


def slugify(text: str) -> str | None:
    """A readable key from a mostly Latin-script text; None when the text is mostly other scripts."""
    folded = unicodedata.normalize("NFKD", text)
    letters = [c for c in folded if c.isalnum() and not unicodedata.combining(c)]
    if not letters:
        return None
    ascii_letters = [c for c in letters if c.isascii()]
    if len(ascii_letters) * 2 < len(letters) or not any(c.isalpha() for c in ascii_letters):
        return None  # "客户 A" is a Chinese label: "a" would not say what it is
    out = re.sub(r"[^a-z0-9]+", "_", folded.encode("ascii", "ignore").decode().lower()).strip("_")
    out = out[:MAX_SLUG].rstrip("_")
    if not out:
        return None
    if not out[0].isalpha():
        out = f"n_{out}"[:MAX_SLUG]
    return out if KEY_RE.match(out) else None


def generated_key(prefix: str) -> str:
    return f"{prefix}_" + "".join(secrets.choice(_ALPHABET) for _ in range(6))


def derive_key(label: Any, taken: Collection[str] | Callable[[str], bool], kind: str = "field") -> str:
    """A free key for a definition labelled ``label``: a slug of the label when it is readable, else a
    generated one; ``taken`` is the keys already used beside it (or a predicate saying so)."""
    used: Callable[[str], bool] = taken if callable(taken) else (lambda k: k in taken)
    prefix = PREFIXES.get(kind, kind[:1] or "k")
    for text in label_candidates(label):
        slug = slugify(text)
        if slug is None:
            continue
        key, n = slug, 2
        while used(key):
            key, n = f"{slug}_{n}", n + 1
        return key
    while True:
        key = generated_key(prefix)
        if not used(key):
            return key
