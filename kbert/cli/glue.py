"""`kbert glue`: the GLUE benchmark by name (kbert.glue)."""

from __future__ import annotations

import argparse
import dataclasses
import os

from kbert.cli.flags import add_field_flags, command
from kbert.glue.settings import GlueSettings


def add_parsers(commands) -> None:
    p = command(commands, "glue", _glue,
                help="fine-tune and score a model on GLUE tasks; leaderboard files")
    add_field_flags(p, GlueSettings)


def _glue(args: argparse.Namespace) -> None:
    """Fine-tunes MODEL on each GLUE task of GLUE_DIR (the official download script's
    layout), with one configuration or the BERT paper's search, scores dev with each
    task's GLUE metric(s) and writes DIR/results.md (the paper's Table 1 layout),
    DIR/results.json and DIR/glue_submission.zip (the test predictions as the GLUE
    leaderboard takes them). Run the same command again to resume: finished runs are
    kept."""
    # lazy: the runs import TensorFlow; `kbert --help` must not
    from kbert.glue.report import paper_scores
    from kbert.glue.run import RESULTS_MD, SUBMISSION_ZIP, run_glue

    settings = GlueSettings(**{f.name: getattr(args, f.name)
                               for f in dataclasses.fields(GlueSettings)})
    results = run_glue(settings)
    scores = paper_scores(results)
    if scores:
        print("dev: " + ", ".join(f"{column} {value:.1f}" for column, value in scores.items()))
    if results["stopped"]:
        print(f"stopped early ({results['stopped']}): run the same command again to go on")
    print(f"results: {os.path.join(os.path.abspath(settings.out), RESULTS_MD)}")
    if results["submission"]:
        print(f"leaderboard files ({len(results['submission'])}): "
              f"{os.path.join(os.path.abspath(settings.out), SUBMISSION_ZIP)}")
