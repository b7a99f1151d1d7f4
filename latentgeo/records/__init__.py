"""The run-dir contract (ARCHITECTURE.md, "One owner per contract"): the only code that knows
a run dir's file names and formats. ``from latentgeo.records import RunDir, ...``: each name is
defined in one module of this package and only re-exported here.

- ``io``: atomic writes, the disk-full wording, the JSON / JSONL readers and ``PARSED``
- ``lock``: the owner lock and its probe
- ``layout``: ``ARTIFACTS`` (the one list of file names), status keys, config.json's twin
- ``run_dir``: ``RunDir`` (reading and writing one run), ``RunFailed``, ``RunDamaged``
- ``sweeps``: ``SweepDir``, ``find_runs``, ``find_all_runs``

What a run's events come to (``summarize``, ``never_learned``) is ``latentgeo.summaries``'s;
what it was made with (``git_sha``, ``versions``, ``scrub_secrets``) is
``latentgeo.provenance``'s.

Foundation layer: the standard library only (omegaconf, imported where config.yaml is read).
"""

from latentgeo.records.io import (
    DISK_FULL,
    PARSED,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    file_mode,
    flatten,
    jsonable,
    now,
    read_json,
    read_json_or_none,
    read_metrics,
    rewrite_in_place,
    write_problem,
    writing,
)
from latentgeo.records.layout import (
    ARTIFACTS,
    BEST_KEY,
    HYDRA_CONFIG,
    STATES,
    WANDB_IDENTITY,
    checkpoint_name,
    is_run_dir,
    read_config_twin,
    write_config_twin,
)
from latentgeo.records.lock import FLOCK, LockHeld, exclusive_lock, lock_holder
from latentgeo.records.run_dir import RunDamaged, RunDir, RunFailed
from latentgeo.records.sweeps import (
    NOT_RUNS,
    SweepDir,
    find_all_runs,
    find_runs,
    job_key,
    job_order,
)

__all__ = [
    "ARTIFACTS", "BEST_KEY", "DISK_FULL", "FLOCK", "HYDRA_CONFIG", "NOT_RUNS", "PARSED", "STATES",
    "WANDB_IDENTITY", "LockHeld", "RunDamaged", "RunDir", "RunFailed", "SweepDir",
    "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "checkpoint_name",
    "exclusive_lock", "file_mode", "find_all_runs", "find_runs", "flatten", "is_run_dir",
    "job_key", "job_order", "jsonable", "lock_holder", "now", "read_config_twin", "read_json",
    "read_json_or_none", "read_metrics", "rewrite_in_place", "write_config_twin",
    "write_problem", "writing",
]
