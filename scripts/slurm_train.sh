#!/usr/bin/env bash
# Train Wnet under SLURM, one task per GPU (the official 4-GPU set-up by default):
#
#   sbatch scripts/slurm_train.sh --config configs/avos_r50.yaml        # from the repository root
#   sbatch --nodes=2 scripts/slurm_train.sh --config configs/avos_r50.yaml --output_dir output/avos_r50_8gpu
#
# Every argument goes to main.py. Each task reads its rank from SLURM_PROCID, the world size from
# SLURM_NTASKS and its GPU from SLURM_LOCALID (util/misc.py: init_distributed_mode); the rendezvous is the
# first node of the allocation (MASTER_ADDR, MASTER_PORT), which this script exports. Adapt the #SBATCH
# lines (partition, account, time) to your cluster.
#SBATCH --job-name=wnet
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=8
#SBATCH --time=72:00:00
#SBATCH --output=slurm-%j.out
set -euo pipefail

MASTER_ADDR="$(scontrol show hostnames "${SLURM_JOB_NODELIST}" | head -n 1)"
export MASTER_ADDR
# A port derived from the job id, so that two jobs on one node do not collide.
export MASTER_PORT="${MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}"
export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"

srun --kill-on-bad-exit=1 python main.py "$@"
