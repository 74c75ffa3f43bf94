"""The one pipeline: train, evaluate, export, predict and sweep every app through Hydra and Lightning.

Entry points (each also a Makefile target):
    python -m common.pipeline.train app=NAME [overrides]      # -m with sweep=NAME for Optuna sweeps
    python -m common.pipeline.evaluate app=NAME [ckpt=PATH]
    python -m common.pipeline.export app=NAME [ckpt=PATH] [out=DIR]
    python -m common.pipeline.predict app=NAME input=PATH [export=DIR]
"""
