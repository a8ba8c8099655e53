"""Batch inference on Apache Beam: files of texts -> a kbert export -> sharded results.

    ReadTexts(patterns, columns, id_column)        files -> {"rows", "dead_letters"}
    PredictTexts(saved_model, signature, ...)      (key, {input: text}) -> {"results",
                                                   "dead_letters"} through RunInference
    run_batch_inference(BatchInferenceSettings)    the whole job (`kbert predict --input`,
                                                   `kbert embed --runner`)

Rows are `(key, inputs)` with key = (id, "FILE:LINE"); results `(key, {output: value})`;
dead letters dicts {"source", "reason", "raw"}. Runner options (`--project`,
`--temp_location`, `--direct_num_workers`, ...) pass through to Beam unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Mapping, Sequence

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from kbert.beam import RUNNERS, records
from kbert.beam.inference import (DEFAULT_BATCH_SIZE, SavedModelHandler, resolve_saved_model,
                                  signature_io)
from kbert.beam.sources import DeadLetter, InputRow, file_problem, parse_rows

logger = logging.getLogger(__name__)

NAMESPACE = "kbert"
DEAD_LETTERS_SUFFIX = "-dead-letters"


class _ParseFile(beam.DoFn):
    """A matched file -> ("rows", (key, inputs)) and ("dead_letters", dict)."""

    def __init__(self, columns: Mapping[str, str], id_column: str | None):
        self._columns = dict(columns)
        self._id_column = id_column
        self._rows = Metrics.counter(NAMESPACE, "rows")

    def process(self, readable_file):
        path = readable_file.metadata.path
        problem = file_problem(path, self._columns, self._id_column)
        if problem:  # e.g. a file of another kind matched a glob
            yield beam.pvalue.TaggedOutput(
                "dead_letters", DeadLetter(path, f"{problem}; the file was skipped").as_json())
            return
        # Compressed files (.gz, read as AUTO) come as objects with readline but no
        # line iterator.
        with readable_file.open() as handle:
            lines = iter(handle.readline, b"")
            for item in parse_rows(path, lines, self._columns, self._id_column):
                if isinstance(item, InputRow):
                    self._rows.inc()
                    yield ((item.id, item.source), item.inputs)
                else:
                    yield beam.pvalue.TaggedOutput("dead_letters", item.as_json())


class ReadTexts(beam.PTransform):
    """Files (globs, local or any Beam file system) -> rows for the model.

    Args:
        patterns: file patterns; every one must match at least one file.
        columns: {signature input name: column or JSON key}; a .txt file feeds its lines
            to the one input.
        id_column: where each row's id is; None: "FILE:LINE".
    Returns (from `expand`): {"rows": (key, inputs), "dead_letters": dict}.
    """

    def __init__(self, patterns: Sequence[str], columns: Mapping[str, str],
                 id_column: str | None = None):
        super().__init__()
        if isinstance(patterns, str):
            patterns = [patterns]
        self._patterns = list(patterns)
        self._columns = dict(columns)
        self._id_column = id_column

    def expand(self, pipeline):
        parsed = (pipeline
                  | "Patterns" >> beam.Create(self._patterns)
                  | "Match" >> fileio.MatchAll(
                      empty_match_treatment=fileio.EmptyMatchTreatment.DISALLOW)
                  | "Open" >> fileio.ReadMatches()
                  | "Parse" >> beam.ParDo(_ParseFile(self._columns, self._id_column))
                  .with_outputs("dead_letters", main="rows"))
        return {"rows": parsed.rows, "dead_letters": parsed.dead_letters}


def _failed(item) -> list[dict]:
    """RunInference's failed batch (elements, exception) -> one dead letter per row."""
    elements, error = item
    reason = f"inference failed: {_error_text(error)}".splitlines()[0]
    return [DeadLetter(key[1], reason, json.dumps(inputs, ensure_ascii=False)[:1000])
            .as_json() for key, inputs in elements]


def _error_text(error) -> str:
    """"Type: message" of an exception, or of what Beam passes on for one: (type, repr,
    formatted traceback lines), whose last line is "Type: message"."""
    if isinstance(error, BaseException):
        return f"{type(error).__name__}: {error}"
    if isinstance(error, tuple) and len(error) == 3 and error[2]:
        return str(error[2][-1]).strip()
    return str(error)


class PredictTexts(beam.PTransform):
    """(key, {input name: text}) -> (key, {output name: value}) through Beam's RunInference
    and `SavedModelHandler`; a batch the model rejects becomes dead letters.

    Returns (from `expand`): {"results": (key, outputs), "dead_letters": dict}.
    """

    def __init__(self, saved_model: str, signature: str = "serving_default",
                 call_batch_size: int = DEFAULT_BATCH_SIZE, **handler_options):
        super().__init__()
        self._handler = KeyedModelHandler(SavedModelHandler(
            saved_model, signature=signature, call_batch_size=call_batch_size,
            **handler_options))

    def expand(self, rows):
        main, other = (rows | "RunInference" >> RunInference(self._handler)
                       .with_exception_handling())
        results = main | "Outputs" >> beam.MapTuple(lambda key, result: (key, result.inference))
        failed = other.failed_inferences | "Failed" >> beam.FlatMap(_failed)
        return {"results": results, "dead_letters": failed}


@dataclasses.dataclass(frozen=True)
class BatchInferenceSettings:
    """One batch-inference job.

    Attributes:
        saved_model: a kbert export (version or NAME directory; any TF path).
        inputs: file patterns of texts (.txt, .tsv, .csv, .jsonl).
        output: the prefix of the result shards (PREFIX-00000-of-0000N.jsonl, ...); dead
            letters go to PREFIX-dead-letters-*.jsonl.
        output_format: "jsonl", "tfrecord" or "parquet".
        columns: {signature input name: column}; None: each input's own name.
        id_column: the column of each row's id; None: ids are "FILE:LINE".
        signature: the export's signature to run.
        batch_size: texts per model call; num_shards: 0 lets the runner choose.
        runner: "direct", "dataflow", "flink" or "spark".
        pipeline_args: Beam options, passed through unchanged.
    """

    saved_model: str
    inputs: tuple[str, ...]
    output: str
    output_format: str = "jsonl"
    columns: Mapping[str, str] | None = None
    id_column: str | None = None
    signature: str = "serving_default"
    batch_size: int = DEFAULT_BATCH_SIZE
    num_shards: int = 0
    runner: str = "direct"
    pipeline_args: tuple[str, ...] = ()


def pipeline_options(runner: str, pipeline_args: Sequence[str] = ()) -> PipelineOptions:
    if runner not in RUNNERS:
        raise ValueError(f"unknown runner {runner!r}; choose one of {sorted(RUNNERS)}")
    for arg in pipeline_args:
        if arg.split("=")[0] == "--runner":
            raise ValueError("give the runner with kbert's --runner, not among the Beam "
                             "options")
    return PipelineOptions(list(pipeline_args), runner=RUNNERS[runner])


def _write(results, settings: BatchInferenceSettings, output_specs):
    fmt = records.check_output_format(settings.output_format)
    shards = {"num_shards": settings.num_shards,
              "file_name_suffix": records.SUFFIXES[fmt]}
    ids = results | "Ids" >> beam.MapTuple(lambda key, outputs: (key[0], outputs))
    if fmt == "jsonl":
        return (ids | "ToJson" >> beam.MapTuple(records.json_line)
                | "WriteJsonl" >> beam.io.WriteToText(settings.output, **shards))
    if fmt == "tfrecord":
        return (ids | "ToExample" >> beam.MapTuple(records.example_bytes)
                | "WriteTfrecord" >> beam.io.WriteToTFRecord(settings.output, **shards))
    return (ids | "ToRecord" >> beam.MapTuple(records.json_record)
            | "WriteParquet" >> beam.io.WriteToParquet(
                settings.output, records.parquet_schema(output_specs), **shards))


def run_batch_inference(settings: BatchInferenceSettings) -> dict[str, int]:
    """Runs the job to the end; returns its counts {"rows", "results", "dead_letters"}.

    The export is opened once here (its signature's inputs and outputs shape the reading
    and, for parquet, the schema); workers load it themselves.
    """
    options = pipeline_options(settings.runner, settings.pipeline_args)
    saved_model = resolve_saved_model(settings.saved_model)
    input_names, output_specs = signature_io(saved_model, settings.signature)
    columns = dict(settings.columns or {name: name for name in input_names})
    unknown = sorted(set(columns) - set(input_names))
    if unknown or len(columns) != len(input_names):
        raise ValueError(f"{saved_model} ({settings.signature}) takes {list(input_names)}; "
                         f"columns were given for {sorted(columns)}")
    if settings.batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {settings.batch_size}")
    pipeline = beam.Pipeline(options=options)
    read = pipeline | "Read" >> ReadTexts(list(settings.inputs), columns, settings.id_column)
    predicted = read["rows"] | "Predict" >> PredictTexts(
        saved_model, settings.signature, call_batch_size=settings.batch_size)
    counted = predicted["results"] | "Count" >> beam.Map(_count_result)
    _write(counted, settings, output_specs)
    dead = ((read["dead_letters"], predicted["dead_letters"])
            | "DeadLetters" >> beam.Flatten())
    (dead | "DeadJson" >> beam.Map(_dead_letter_line)
     | "WriteDead" >> beam.io.WriteToText(settings.output + DEAD_LETTERS_SUFFIX,
                                          file_name_suffix=".jsonl", num_shards=1))
    result = pipeline.run()
    result.wait_until_finish()
    return counts(result)


_RESULTS = Metrics.counter(NAMESPACE, "results")
_DEAD = Metrics.counter(NAMESPACE, "dead_letters")


def _count_result(item):
    _RESULTS.inc()
    return item


def _dead_letter_line(letter: dict) -> str:
    _DEAD.inc()
    return json.dumps(letter, ensure_ascii=False)


def counts(result) -> dict[str, int]:
    """The batch-inference job's counts: rows read, results written, dead letters."""
    return counts_by_name(result, ("rows", "results", "dead_letters"))


def counts_by_name(result, names: Sequence[str]) -> dict[str, int]:
    """The job's "kbert" counters named `names` (committed values where the runner
    reports them, else attempted; 0 for a counter never incremented)."""
    totals = {name: 0 for name in names}
    try:
        queried = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    except (NotImplementedError, AttributeError):
        return totals
    for counter in queried["counters"]:
        name = counter.key.metric.name
        if name in totals:
            value = counter.committed if counter.committed is not None else counter.attempted
            totals[name] += int(value or 0)
    return totals
