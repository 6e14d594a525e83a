"""`semidisent prepare`: dataset + supervision mask -> the prepared artifact."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ..artifacts.prepared import Prepared, load_prepared, write_prepared
from ..config.schema import Params
from ..data.catalog import dataset_info
from ..data.registry import build_dataset
from ..supervision.mask import build_mask

log = logging.getLogger(__name__)


def run_prepare(params: Params, out: str | Path, progress: bool = True) -> Prepared:
    """Build the dataset, draw the supervision mask and write the artifact to ``out``.

    Every check runs before anything is written; the artifact appears atomically.
    """
    t0 = time.perf_counter()
    dp = params.data
    dataset = build_dataset(dp.dataset, dp.path, progress=progress)
    mask = build_mask(dataset, params.supervision)
    source = {
        "kind": "file" if dp.path else "embedded",
        "path": Path(dp.path).name if dp.path else None,
        "summary": dataset_info(dp.dataset).summary,
    }
    if dp.path is None and dataset.store.binary:
        source["renderer"] = "semidisent.data.dsprites_render"
    # Render / read everything first (the slow part), then write.
    _ = dataset.store.raw if dp.path is None else None
    write_prepared(out, dataset, mask, params, source)
    prepared = load_prepared(out, verify=False)
    log.info(
        "prepared %s: %d images, %d labels (%d validation) in %.1f s -> %s",
        dp.dataset,
        dataset.num_rows,
        mask.n,
        int(mask.is_validation.sum()),
        time.perf_counter() - t0,
        out,
    )
    return prepared
