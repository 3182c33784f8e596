"""The study kit: what every small study under ``experiments/`` shares.

A study module (``experiments/<name>.py``) declares only its own parts — a frozen config dataclass
registered with gin under the study's selector, its arms (one ``configs/<name>/<arm>.gin`` each),
its smoke bindings, how one arm trains, and its report template — and hands them to the kit:

* :mod:`experiments.kit.cli` — one command line for every study (``--config``, ``--gin_binding``,
  ``--config.<selector>.<param>=<value>``, ``--data_dir``, ``--workdir``, ``--smoke``,
  ``--write_report``, ``--out``, ``--no_progress``, ``--tune``) and one gin parser with clean errors.
* :mod:`experiments.kit.runs` — the finished-run contract (``results.json`` records the config; a
  rerun skips a finished run and refuses a different config, or an older layout, in the same directory).
* :mod:`experiments.kit.stats` — the paired t-test and its verdict words; Spearman's ρ.
* :mod:`experiments.kit.report` — provenance (commit, command, date) and writing a report's
  Markdown (title dropped below a kept hand-written preamble), JSON (``rounded`` floats) and figure.
* :mod:`experiments.kit.tune` — hyper-parameter search on validation data: a study's ``Search``
  declarations (grid, lexicographic criteria, preferred values), the runner (cached per arm), the
  gin-file check and the Markdown of the search; ``--tune`` runs it alone.
* :mod:`experiments.kit.mlp` — the one ReLU MLP of the studies.

The split follows big_vision (trainer, configs and models kept apart, configs are documentation
with the command that runs them) and levanter (configs registered under a name, not one flat config
with a string ``kind``). The image-classification trainer itself lives in
:mod:`experiments.common.train`; the digits data in :func:`experiments.common.data.load_digits_dataset`.
"""
