"""Helpers every layer may use (domains, apps, the pipeline, benchmarks): `figures` (the headless backend and
`save_figure`), `files` (atomic writes), `schedulers` (`with_scheduler` for `configure_optimizers`), `modes`
(`eval_mode`, `train_mode`). Nothing here imports the rest of `common`."""
