"""Model and protocol logic behind the Snakemake workflow reproducing Zhang et al. (NeurIPS 2024),
"Why are Visually-Grounded Language Models Bad at Image Classification?".

Scripts under ``scripts/`` are thin wrappers; everything that decides a result lives here.
"""

__version__ = "0.1.0"
