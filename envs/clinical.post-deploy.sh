#!/usr/bin/env bash
# Snakemake runs this inside the new env right after creating it (--sdm conda). It installs
# bolus from the checkout running the workflow (rules/common.smk exports BOLUS_SOURCE), without
# its dependencies: the env file's pins are what the rules get (tests/test_envs.py).
set -euo pipefail
python -m pip install --quiet --no-deps --editable "${BOLUS_SOURCE:?BOLUS_SOURCE is set by rules/common.smk}"
