"""Jobs on Apache Beam (the `beam` extra: `pip install kbert[beam]`).

    ReadTexts, PredictTexts              kbert.beam.pipeline   PTransforms: files -> rows,
                                                               rows -> a kbert export's outputs
    BatchInferenceSettings,
    run_batch_inference                  kbert.beam.pipeline   the whole batch-inference job
    SavedModelHandler                    kbert.beam.inference  the RunInference model handler
    PretrainingDataSettings,
    make_pretraining_shards              kbert.beam.pretraining_data  corpus -> TFRecord shards

Modules: sources (input files -> rows or dead letters; no Beam), records (result rows ->
JSONL / tf.Example / parquet records), inference, models (the SavedModel a job runs),
pipeline, pretraining_data. Names are imported on first use (PEP 562): Beam is not loaded
by `import kbert.beam`.
"""

from kbert._lazy import lazy_attributes

# The runners kbert's commands take, and Beam's names for them.
RUNNERS = {"direct": "DirectRunner", "dataflow": "DataflowRunner", "flink": "FlinkRunner",
           "spark": "SparkRunner"}

_LAZY = {
    "BatchInferenceSettings": "kbert.beam.pipeline",
    "PredictTexts": "kbert.beam.pipeline",
    "ReadTexts": "kbert.beam.pipeline",
    "run_batch_inference": "kbert.beam.pipeline",
    "SavedModelHandler": "kbert.beam.inference",
    "PretrainingDataSettings": "kbert.beam.pretraining_data",
    "make_pretraining_shards": "kbert.beam.pretraining_data",
}
__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_attributes("kbert.beam", _LAZY, globals())
