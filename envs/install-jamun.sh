#!/bin/sh
# Snakemake post-deploy script (linked as envs/<env>.post-deploy.sh): runs inside the new conda
# env with the workflow's working directory, the repository root, as current directory. Installs
# the jamun package without dependencies (the env file pins them) so that rules find `jamun`.
set -eu
python -m pip install --no-deps -e .
