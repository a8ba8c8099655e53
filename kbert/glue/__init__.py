"""GLUE by name: `kbert glue` reads a GLUE directory as the official download script lays
it out, fine-tunes one model per task (optionally the paper's hyper-parameter search),
scores each task with its GLUE metric(s), writes a results table laid out as the BERT
paper's Table 1 and the test-set predictions as the GLUE leaderboard takes them.

Modules, lowest first: `tasks` (the nine tasks: folders, files, columns, labels, metrics;
no TensorFlow), `files` (reading a task's split, broken rows counted), `search` (the run
grid), `report` (the results table), `submission` (the leaderboard zip), `run` (the
whole job, resumable).
"""
