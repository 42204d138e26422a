"""Cached backbone features: train a reward model's heads on a frozen backbone, running it once per pair.

With `RMConfig.freeze_backbone` the heads are all that learns, and they read nothing but the
backbone's final hidden states at a few positions: the END tokens (sentence model: values, keys,
the query at the last END) or the last real token (response model). With
`RMConfig.cache_features` the trainer runs the frozen backbone once over every encoded train and
test response, keeps only those hidden states (float32), and trains the heads for as many epochs
as wanted on the cached arrays: each step costs the heads only. The loss, the aggregation and
the scores are the same functions as without the cache (`step.pair_loss`, `sentence_pair_scores`
/ `response_pair_scores`, which take `end_hidden` / `last_hidden` batches), so a cached run
follows the uncached frozen run step for step, up to float rounding.

The cache (`RMConfig.features_dir`, default `run_dir/features`) is one .npz file per model kind
and backbone settings, with the features of each encoded row keyed by a hash of its token ids and
END positions. A run extracts only the rows the file lacks and rewrites it atomically (temp file,
then `os.replace`), so a rerun or a resumed run computes nothing again, and runs that share the
directory (e.g. on subsets of the same pairs) share the rows.

Checkpoints of a cached run hold the heads and their optimizer state only (the frozen backbone
is rebuilt from `RMConfig.model`, deterministically: `load_trained` merges the two).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx

from jaxalign.rewards.endo_scorer import round_up
from jaxalign.rewards.sentence.encode import pad_ends, pad_rows
from jaxalign.rm.batching import EncodedPairs

log = logging.getLogger(__name__)

FORMAT = 1
"""Version of the cache layout; a cache of another version is recomputed."""


@dataclasses.dataclass
class PairFeatures:
    """The frozen backbone's hidden states that the heads read, for every side of every encoded pair.

    Row r = 2 i + s is side s (0 chosen, 1 rejected) of pair i; its states are
    `hidden[offsets[r]:offsets[r + 1]]`: the END states (sentence model) or the last real token's
    state (response model, one per row).
    """

    kind: str
    hidden: np.ndarray
    offsets: np.ndarray
    stats: dict = dataclasses.field(default_factory=dict)
    """Extraction statistics: rows computed (and reused from the cache), tokens, seconds."""

    def __len__(self) -> int:
        return (len(self.offsets) - 1) // 2


def _rows(encoded: EncodedPairs) -> list:
    return [side for pair in encoded.rows for side in pair]


def _pack(arrays: Sequence[np.ndarray], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Row arrays [n_i, D] as one [sum n_i, D] array and offsets [len + 1] (row i: offsets[i]:offsets[i + 1])."""
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in arrays])]).astype(np.int64)
    hidden = np.concatenate(arrays, axis=0) if arrays else np.zeros((0, width), np.float32)
    return hidden, offsets


def row_key(kind: str, row) -> str:
    """A hash of one encoded row (token ids and END positions): what its features are a function of."""
    h = hashlib.sha256(kind.encode())
    for a in (row.ids, row.end_positions):
        a = np.asarray(a, np.int32)
        h.update(np.asarray(len(a), np.int64).tobytes())
        h.update(a.tobytes())
    return h.hexdigest()[:32]


def extract_features(rm, kind: str, rows: Sequence, *, batch_rows: int = 8, length_multiple: int = 32,
                     ends_multiple: int = 8, pad_id: int = 0, log_every: int = 10) -> tuple[list[np.ndarray], dict]:
    """Runs the reward model's backbone over `rows` (EncodedResponse; sorted by length, batches of
    `batch_rows`) and keeps what the heads read: `rm.end_hidden` [num_ends, D] (sentence) or
    `rm.last_hidden` [1, D] (response) per row. Returns (per-row arrays, statistics)."""
    graphdef, state = nnx.split(rm)
    sentence = kind == "sentence"

    @jax.jit
    def run(state, ids, mask, positions):
        model = nnx.merge(graphdef, state)
        return model.end_hidden(ids, mask, positions) if sentence else model.last_hidden(ids, mask)

    order = sorted(range(len(rows)), key=lambda r: len(rows[r].ids))
    per_row: list = [None] * len(rows)
    tokens, t0 = 0, time.perf_counter()
    for b, s in enumerate(range(0, len(order), batch_rows)):
        idx = order[s:s + batch_rows]
        batch = [rows[r] for r in idx]
        ids, mask = pad_rows([r.ids for r in batch], round_up(max(len(r.ids) for r in batch), length_multiple), pad_id)
        positions = pad_ends(batch, round_up(max(r.num_ends for r in batch), ends_multiple))[0] if sentence else None
        out = np.asarray(jax.device_get(run(state, ids, mask, positions)), np.float32)
        for j, r in enumerate(idx):
            per_row[r] = out[j, :rows[r].num_ends] if sentence else out[j][None]
        tokens += int(mask.sum())
        if log_every and (b + 1) % log_every == 0:
            dt = time.perf_counter() - t0
            log.info("features: %d/%d rows, %d tokens, %.0f s, %.1f tokens/s", s + len(idx), len(rows), tokens, dt,
                     tokens / max(dt, 1e-9))
    seconds = time.perf_counter() - t0
    return per_row, {"rows": len(rows), "tokens": tokens, "seconds": seconds,
                     "tokens_per_second": tokens / max(seconds, 1e-9)}


class FeatureCache:
    """Per-row features of one backbone and model kind in one .npz file, keyed by `row_key`.

    `features(rm, encoded)` extracts the rows the file lacks, rewrites the file atomically (temp
    file, then os.replace) and returns the features of `encoded`: a rerun, a resumed run, or another
    run sharing the directory (e.g. a subset of the same pairs) computes nothing twice.
    """

    def __init__(self, directory: str, kind: str, settings: dict):
        self.kind = kind
        self.settings = {"format": FORMAT, "kind": kind, **settings}
        tag = hashlib.sha256(json.dumps(self.settings, sort_keys=True).encode()).hexdigest()[:12]
        self.path = os.path.join(directory, f"{kind}-{tag}.npz")

    def _load(self) -> dict[str, np.ndarray]:
        if not os.path.exists(self.path):
            return {}
        with np.load(self.path) as z:
            if json.loads(str(z["settings"])) != self.settings:
                log.warning("features: %s holds other settings; recomputing it", self.path)
                return {}
            hidden, offsets = z["hidden"], z["offsets"]
            return {str(k): hidden[offsets[i]:offsets[i + 1]] for i, k in enumerate(z["keys"])}

    def _save(self, table: dict[str, np.ndarray]) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        keys = list(table)
        hidden, offsets = _pack([table[k] for k in keys], 0)
        tmp = f"{self.path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            np.savez(f, keys=np.asarray(keys), offsets=offsets, hidden=hidden,
                     settings=np.asarray(json.dumps(self.settings, sort_keys=True)))
        os.replace(tmp, self.path)

    def features(self, rm, encoded: EncodedPairs, **extract_kw) -> PairFeatures:
        """The features of every row of `encoded`, from the file or extracted (and then saved)."""
        if encoded.kind != self.kind:
            raise ValueError(f"a {self.kind} feature cache cannot serve {encoded.kind} pairs")
        rows = _rows(encoded)
        keys = [row_key(self.kind, r) for r in rows]
        table = self._load()
        missing = [i for i, k in enumerate(keys) if k not in table]
        missing = list({keys[i]: i for i in missing}.values())  # identical rows computed once
        stats = {"rows": 0, "tokens": 0, "seconds": 0.0}
        if missing:
            computed, stats = extract_features(rm, self.kind, [rows[i] for i in missing], **extract_kw)
            table.update({keys[i]: a for i, a in zip(missing, computed)})
            self._save(table)
            log.info("features: %d rows, %d tokens in %.0f s (%.1f tokens/s) -> %s", stats["rows"], stats["tokens"],
                     stats["seconds"], stats["tokens_per_second"], self.path)
        stats["reused_rows"] = len(rows) - stats["rows"]
        hidden, offsets = _pack([table[k] for k in keys], rm.backbone.config.hidden_size)
        return PairFeatures(self.kind, hidden, offsets, stats)


def feature_batch(features: PairFeatures, indices: Sequence[int], *, pairs_per_batch: int,
                  ends_multiple: int = 8) -> dict[str, np.ndarray]:
    """A pair batch of cached features (`end_hidden`, `end_valid` or `last_hidden`; `pair_weight`),
    laid out like `batching.make_batch` (padding pairs weigh 0; END slots round up to `ends_multiple`)."""
    if len(indices) > pairs_per_batch:
        raise ValueError(f"{len(indices)} pairs do not fit a batch of {pairs_per_batch}")
    rows = np.asarray([2 * int(i) + s for i in indices for s in (0, 1)], np.int64)
    p, d = pairs_per_batch, features.hidden.shape[-1]
    starts, stops = features.offsets[rows], features.offsets[rows + 1]
    if features.kind == "sentence":
        n = round_up(int(max(stops - starts)), ends_multiple)
        hidden = np.zeros((p * 2, n, d), np.float32)
        valid = np.zeros((p * 2, n), bool)
        for j, (a, b) in enumerate(zip(starts, stops)):
            hidden[j, :b - a] = features.hidden[a:b]
            valid[j, :b - a] = True
        out = {"end_hidden": hidden.reshape(p, 2, n, d), "end_valid": valid.reshape(p, 2, n)}
    else:
        hidden = np.zeros((p * 2, d), np.float32)
        hidden[:len(rows)] = features.hidden[starts]
        out = {"last_hidden": hidden.reshape(p, 2, d)}
    out["pair_weight"] = (np.arange(p) < len(indices)).astype(np.float32)
    return out


class _CachedBackbone(nnx.Module):
    """Stands in for the frozen backbone in the heads-only model: its features are cached, it is never run."""


def heads_only(rm) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """(graphdef, head parameters, empty state) of `rm` without its backbone: what a cached run trains
    and checkpoints. The head parameters have the same paths as `split_trainable(rm, True)[1]`."""
    graphdef, heads, backbone = nnx.split(rm, nnx.Not(nnx.PathContains("backbone")), ...)
    clone = nnx.merge(graphdef, heads, backbone)
    clone.backbone = _CachedBackbone()
    return nnx.split(clone, nnx.Param, ...)


def backbone_settings(config) -> dict:
    """What the cached features depend on besides the encoded rows: the frozen backbone (by name or
    path: a checkpoint replaced in place under the same path is not detected; clear the cache)."""
    return {"model": config.model, "init": dataclasses.asdict(config.init) if config.init else None,
            "seed": None if config.model else config.seed, "compute_dtype": config.compute_dtype}


def cached_pair_features(config, rm, train_enc: EncodedPairs, test_enc: EncodedPairs, *,
                         pad_id: int = 0) -> tuple[PairFeatures, PairFeatures]:
    """(train, test) features of a run, from the cache in `config.features_dir` (default run_dir/features)."""
    cache = FeatureCache(config.features_dir or os.path.join(config.run_dir, "features"), config.kind,
                         backbone_settings(config))
    kw = {"batch_rows": config.feature_batch_rows, "length_multiple": 32, "ends_multiple": config.data.ends_multiple,
          "pad_id": pad_id}
    return cache.features(rm, train_enc, **kw), cache.features(rm, test_enc, **kw)
