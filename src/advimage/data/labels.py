"""Which label each class folder of an image tree gets.

A folder tree names its classes by folder; a model numbers them. When the model has class
names, folders map to the model's indices **by name** (case-insensitive exact match) and a
folder the model does not know is an error, unless an explicit class map says where it goes.
Without model names, folders take their position in the sorted list of *all* class folders
(empty ones included, so an empty folder never shifts the labels of the others). The result
records how each label was obtained (``source``: ``"name"``, ``"class-map"``,
``"class-map+name"`` or ``"position"``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from advimage.errors import UserInputError

__all__ = ["LabelPlan", "parse_class_map", "resolve_labels"]

_SHOWN = 20  # class names listed in an error (the count is always given)

ClassMap = Mapping[str, "int | str"]


@dataclass(frozen=True)
class LabelPlan:
    """``classes[k]`` names label ``k``; ``mapping`` sends each used folder to its label."""

    classes: list[str]
    mapping: dict[str, int]
    source: str


def parse_class_map(text: str) -> dict[str, int | str]:
    """``"cat=3,dog=5"`` or ``"kitty=cat,puppy=dog"`` -> ``{folder: index or class name}``.

    Each comma-separated item is ``FOLDER=CLASS``, CLASS being a class index (0-based) or one
    of the model's class names.
    """
    out: dict[str, int | str] = {}
    for item in (t.strip() for t in str(text).split(",")):
        if not item:
            continue
        folder, sep, target = (s.strip() for s in item.partition("="))
        if not sep or not folder or not target:
            raise UserInputError(f"class map item {item!r} must be FOLDER=CLASS (a class index "
                                 "or name), e.g. cat=3,dog=5")
        if folder in out:
            raise UserInputError(f"class map names folder {folder!r} twice")
        out[folder] = int(target) if target.lstrip("-").isdigit() else target
    if not out:
        raise UserInputError("class map is empty; give FOLDER=CLASS items, e.g. cat=3,dog=5")
    return out


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return f"{shown}, ... ({len(names)} in all)" if len(names) > _SHOWN else shown


def _target(folder: str, value: int | str, classes: Sequence[str] | None,
            by_name: Mapping[str, list[int]]) -> int:
    """The label ``value`` (an index or a class name) of a class-map entry."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise UserInputError(f"class map: {folder}={value!r} must map to a class index or name")
    if isinstance(value, int):
        if value < 0 or (classes is not None and value >= len(classes)):
            top = f" (the model has {len(classes)} classes)" if classes is not None else ""
            raise UserInputError(f"class map: {folder}={value} is not a valid class index{top}")
        return value
    if classes is None:
        raise UserInputError(f"class map: {folder}={value} names a class, but the model has no "
                             "class names; map it to an index")
    hits = by_name.get(value.lower(), [])
    if len(hits) != 1:
        why = "is ambiguous among" if hits else "is not one of"
        raise UserInputError(f"class map: {folder}={value}: {value!r} {why} the model's "
                             f"classes ({_listing(list(classes))})")
    return hits[0]


def resolve_labels(
    folders: Sequence[str], used: Sequence[str], where: str, *,
    classes: Sequence[str] | None = None, class_map: ClassMap | None = None,
) -> LabelPlan:
    """Map the class folders of ``where`` to labels.

    Args:
        folders: every class folder, sorted (empty ones included).
        used: the folders that hold images; only these need a label.
        where: the folder shown in messages.
        classes: the model's class names (``None`` or empty: the model has none).
        class_map: explicit ``{folder: index or class name}``; wins over names.

    Raises:
        UserInputError: a used folder the model's names lack (and the map does not cover), a
            class-map key that is not a folder, or a bad class-map target.
    """
    classes = [str(c) for c in classes] if classes else None
    class_map = dict(class_map or {})
    unknown = sorted(set(class_map) - set(folders))
    if unknown:
        raise UserInputError(f"class map names folder(s) {', '.join(unknown)} that {where} "
                             f"does not have (its class folders: {_listing(list(folders))})")
    by_name: dict[str, list[int]] = {}
    for k, name in enumerate(classes or []):
        by_name.setdefault(name.lower(), []).append(k)
    if classes is None and not class_map:
        return LabelPlan(list(folders), {f: folders.index(f) for f in used}, "position")
    mapping: dict[str, int] = {}
    missing: list[str] = []
    sources: set[str] = set()
    for folder in used:
        if folder in class_map:
            mapping[folder] = _target(folder, class_map[folder], classes, by_name)
            sources.add("class-map")
        elif classes is not None and len(by_name.get(folder.lower(), [])) == 1:
            mapping[folder] = by_name[folder.lower()][0]
            sources.add("name")
        else:
            missing.append(folder)
    if missing:
        if classes is None:
            raise UserInputError(f"the class map does not cover folder(s) {', '.join(missing)} "
                                 f"of {where} (the model has no class names: map every folder)")
        raise UserInputError(
            f"folder(s) {', '.join(missing)} of {where} match none of the model's classes "
            f"({_listing(classes)}); rename them or map them with --class-map FOLDER=CLASS")
    if classes is None:  # indices only: name each label after its folder(s)
        size = max(mapping.values()) + 1
        names = [[f for f, k in mapping.items() if k == i] for i in range(size)]
        classes = [n[0] if len(n) == 1 else str(i) for i, n in enumerate(names)]
    source = "+".join(s for s in ("class-map", "name") if s in sources)
    return LabelPlan(list(classes), mapping, source)
