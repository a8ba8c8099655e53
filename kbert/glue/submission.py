"""Test-set predictions as the GLUE leaderboard (gluebenchmark.com) takes them: one TSV per
split named as the server expects (CoLA.tsv, SST-2.tsv, MRPC.tsv, STS-B.tsv, QQP.tsv,
MNLI-m.tsv, MNLI-mm.tsv, QNLI.tsv, RTE.tsv, WNLI.tsv, AX.tsv), a header `index<TAB>
prediction`, one row per test row in file order, labels written as the task's strings
(MNLI: entailment / neutral / contradiction; QNLI, RTE: entailment / not_entailment;
the rest 0 / 1) and STS-B scores clipped to [0, 5]; all of them in one zip, at its top
level.

No TensorFlow here.
"""

from __future__ import annotations

import io
import zipfile
from typing import Mapping, Sequence

from kbert.io.atomic import atomic_file


def prediction_tsv(indexes: Sequence[str], predictions: Sequence[str]) -> bytes:
    """The leaderboard file of one split: `index<TAB>prediction` then one row per index."""
    if len(indexes) != len(predictions):
        raise ValueError(f"{len(indexes)} test rows but {len(predictions)} predictions")
    rows = ["index\tprediction"] + [f"{i}\t{p}" for i, p in zip(indexes, predictions)]
    return ("\n".join(rows) + "\n").encode("utf-8")


def format_score(score: float, score_range: tuple[float, float]) -> str:
    """A regression prediction as written: clipped to the task's range, 3 decimals."""
    low, high = score_range
    return f"{min(max(float(score), low), high):.3f}"


def write_zip(path: str, files: Mapping[str, bytes]) -> None:
    """A zip of {"CoLA.tsv": content, ...} at `path`, written atomically (deflated, the
    files at the top level, in name order)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            archive.writestr(name, files[name])
    atomic_file(path, buffer.getvalue())
