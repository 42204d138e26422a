"""Records as tensorflow-datasets datasets in array_record files, read back with random access.

Layout on disk (one tfds dataset per `name`)::

    <data_dir>/<name>/1.0.0/
        <name>-<split>.array_record-00000-of-00001   one file per split
        dataset_info.json, features.json             tfds metadata
        metadata.json                                {"kind": "trajectories", "schema_version": 1}

`load_dataset` returns a `RecordSource`: ``len()``, ``source[i]`` and slices decode straight from the
array_record file via `builder.as_data_source(split)`, with no TensorFlow and no tf.data pipeline,
which is what a Grain-style loader or a host-side SFT/RL loop needs.

Why each example is one JSON string (feature ``record``, plus the ``id`` for tools that inspect the
files): the records are nested and partly free-form (a trajectory's messages hold optional tool calls
with arbitrary JSON arguments; ``meta`` is any JSON object). A typed `tfds.features.FeaturesDict`
would need fixed nesting (`Sequence` of dicts with optional keys cannot be expressed), turns empty
dicts and nulls into errors, and decodes ragged sequences into numpy arrays that do not round-trip
to the original Python values. A JSON `Text` feature is encoded and decoded with numpy alone, keeps
the exact record, and leaves validation to the same strict schema code as JSONL (every read goes
through ``from_dict`` again, so a tampered file fails loudly too).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import tempfile
import types
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import tensorflow_datasets as tfds

from jaxalign.data.checks import DataError, field_error
from jaxalign.data.jsonl import Record, read_jsonl, record_class, record_json

SCHEMA_VERSION = 1
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class _RecordsBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Writes given records of one kind; each concrete dataset name gets its own subclass.

    The records are handed to the constructor instead of being downloaded: the builder is only a way
    to produce (and later open) tfds-format files. Registration is skipped so that building datasets
    never touches tfds's global name registry.
    """

    name = "jaxalign_records"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "One JSON record per example (jaxalign.data schema version 1)."}

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> None:
        # tfds looks for a checksums file of downloads next to the builder's source file, found by
        # module path (which needs `importlib_resources`, not installed). Nothing is downloaded here.
        return None

    def __init__(self, *, kind: str, splits: Mapping[str, list[tuple[str, str]]] | None = None, **kwargs: Any):
        self._kind = kind
        self._splits = splits
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        # DatasetInfo is built directly: `dataset_info_from_configs` looks for a package directory of
        # metadata files next to the builder's module, which a programmatic builder does not have.
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"jaxalign {self._kind} records, one JSON object per example "
                        "(schema: print(jaxalign.data.jsonl.docs)).",
            features=tfds.features.FeaturesDict({"id": tfds.features.Text(), "record": tfds.features.Text()}),
            # Keep the caller's order: examples are written sorted by their integer key (the index).
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(kind=self._kind, schema_version=SCHEMA_VERSION),
        )

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator[tuple[int, dict[str, str]]]]:
        if self._splits is None:
            raise RuntimeError("this builder was opened for reading; build datasets with build_dataset()")
        return {split: self._generate_examples(rows) for split, rows in self._splits.items()}

    def _generate_examples(self, rows: list[tuple[str, str]]) -> Iterator[tuple[int, dict[str, str]]]:
        for index, (record_id, text) in enumerate(rows):
            yield index, {"id": record_id, "record": text}


@functools.cache
def _builder_class(name: str) -> type[_RecordsBuilder]:
    # tfds takes a dataset's directory and file names from the *class* attribute `name`, so each
    # dataset name gets a (cached, unregistered) subclass.
    def body(namespace: dict[str, Any]) -> None:
        namespace["name"] = name
        namespace["__module__"] = __name__

    return types.new_class(f"RecordsBuilder_{name}", (_RecordsBuilder,), {"skip_registration": True}, body)


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise ValueError(f"dataset name must match {_NAME.pattern} (a tfds dataset name), got {name!r}")


def _builder(kind: str, data_dir: str | os.PathLike, name: str,
             splits: Mapping[str, list[tuple[str, str]]] | None = None) -> _RecordsBuilder:
    _check_name(name)
    return _builder_class(name)(kind=kind, splits=splits, data_dir=os.fspath(data_dir), file_format="array_record")


def _encode_split(kind: str, split: str, items: Sequence[Any]) -> list[tuple[str, str]]:
    """Validate one split's records (record objects or row dicts) and encode them as JSON lines."""
    cls = record_class(kind)
    if not _NAME.match(split):
        raise ValueError(f"split name must match {_NAME.pattern}, got {split!r}")
    if not items:
        raise ValueError(f"split {split!r} has no records (tfds cannot write an empty split)")
    rows: list[tuple[str, str]] = []
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        where = f"split {split!r}: records[{i}]"
        if isinstance(item, Mapping):
            item = cls.from_dict(item, where)
        elif not isinstance(item, cls):
            raise TypeError(f"{where}: kind {kind!r} takes {cls.__name__} records (or row dicts), "
                            f"got {type(item).__name__}")
        if item.id in first:
            raise field_error(where, "id", f"duplicate id {item.id!r} (first at records[{first[item.id]}])")
        first[item.id] = i
        rows.append((item.id, record_json(item)))
    return rows


def build_dataset(kind: str, records: Sequence[Record | Mapping[str, Any]], data_dir: str | os.PathLike, name: str,
                  splits: Mapping[str, Sequence[Record | Mapping[str, Any]]] | None = None, *,
                  overwrite: bool = False) -> str:
    """Write records of `kind` ("problems", "trajectories", "preferences") as tfds dataset `name`.

    `records` become the ``"train"`` split; `splits` adds named splits (``{"test": [...]}``); a
    ``"train"`` entry in `splits` is allowed only when `records` is empty. Items are record objects
    or row dicts (validated like JSONL rows). Ids must be unique within a split. An existing dataset
    of that name is an error unless `overwrite`. Returns the dataset's directory
    ``<data_dir>/<name>/1.0.0``.
    """
    split_items: dict[str, Sequence[Any]] = dict(splits or {})
    if records:
        if "train" in split_items:
            raise ValueError("records fill the 'train' split: pass train records either as `records` or in `splits`")
        split_items = {"train": records, **split_items}
    if not split_items:
        raise ValueError(f"no records to write for dataset {name!r}")
    encoded = {split: _encode_split(kind, split, items) for split, items in split_items.items()}
    builder = _builder(kind, data_dir, name, encoded)
    if os.path.exists(builder.data_dir):
        if not overwrite:
            raise FileExistsError(f"{builder.data_dir}: dataset {name!r} already exists (pass overwrite=True)")
        shutil.rmtree(builder.data_dir)
    with tempfile.TemporaryDirectory() as download_dir:
        # Nothing is downloaded; a throwaway download_dir keeps tfds from leaving an empty
        # `downloads/` folder in data_dir, and try_download_gcs=False keeps it off the network.
        builder.download_and_prepare(download_dir=download_dir,
                                     download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return os.fspath(builder.data_dir)


class RecordSource(Sequence):
    """Random-access, read-only view of one split: ``len(src)``, ``src[i]``, ``src[a:b]``, iteration.

    Items are decoded (and validated) on access, so opening a large split costs nothing up front.
    """

    def __init__(self, source: Any, cls: type, where: str):
        self._source = source
        self._cls = cls
        self.where = where

    def __len__(self) -> int:
        return len(self._source)

    def _decode(self, index: int, item: Mapping[str, Any]) -> Record:
        where = f"{self.where}: index {index}"
        try:
            row = json.loads(item["record"])
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: invalid JSON: {e.msg} (column {e.colno})") from None
        return self._cls.from_dict(row, where)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            indices = list(range(*index.indices(len(self))))
            # One batched read instead of one file access per item.
            items = self._source.__getitems__(indices) if indices else []
            return [self._decode(i, item) for i, item in zip(indices, items)]
        n = len(self)
        position = index + n if index < 0 else index
        if not 0 <= position < n:
            raise IndexError(f"{self.where}: index {index} out of range for {n} records")
        return self._decode(position, self._source[position])

    def __iter__(self) -> Iterator[Any]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"RecordSource({self.where}, {len(self)} {self._cls.__name__} records)"


def load_dataset(kind: str, data_dir: str | os.PathLike, name: str, split: str = "train") -> RecordSource:
    """Open split `split` of dataset `name` (written by `build_dataset`) as a `RecordSource` of `kind`.

    Fails with FileNotFoundError when the dataset does not exist, and ValueError when it holds another
    kind or lacks the split.
    """
    cls = record_class(kind)
    builder = _builder(kind, data_dir, name)
    if not builder.is_prepared():
        raise FileNotFoundError(f"{builder.data_dir}: no dataset {name!r} under {os.fspath(data_dir)} "
                                "(write one with build_dataset or import_jsonl)")
    stored = builder.info.metadata.get("kind")
    if stored != kind:
        raise ValueError(f"{builder.data_dir}: dataset {name!r} holds {stored!r} records, not {kind!r}")
    if split not in builder.info.splits:
        raise ValueError(f"{builder.data_dir}: no split {split!r}; available: {sorted(builder.info.splits)}")
    return RecordSource(builder.as_data_source(split), cls, f"{builder.data_dir} [{split}]")


def import_jsonl(kind: str, jsonl_path: str | os.PathLike, data_dir: str | os.PathLike, name: str, *,
                 split: str = "train", overwrite: bool = False) -> str:
    """Validate a JSONL file of `kind` (errors name file, row and field) and write it as dataset `name`.

    The whole file is validated before anything is written. Returns the dataset's directory.
    """
    records = read_jsonl(jsonl_path, kind)
    return build_dataset(kind, [], data_dir, name, splits={split: records}, overwrite=overwrite)
