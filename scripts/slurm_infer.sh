#!/usr/bin/env bash
# Sharded inference under SLURM, one task per GPU (engine/shard.py): each task takes every N-th video (sample),
# writes its part beside the output, and rank 0 merges them into the one results.json (metrics) a single process
# writes.
#
#   sbatch scripts/slurm_infer.sh inference_rvos.py --masks --model_path CKPT --save_path results.json
#   sbatch --nodes=2 scripts/slurm_infer.sh inference_a2d.py --masks --num_frames 8 --num_queries 8 \
#       --model_path CKPT --metrics_path a2d.json
#
# The first argument is the inference script, the others go to it. Each task reads its rank from SLURM_PROCID,
# the world size from SLURM_NTASKS and its GPU from SLURM_LOCALID (util/misc.py: init_distributed_mode); the
# rendezvous is the first node of the allocation (MASTER_ADDR, MASTER_PORT), which this script exports. Across
# nodes the output's folder must be shared (rank 0 reads the other ranks' parts). A task that fails ends the job
# (--kill-on-bad-exit) naming its rank, and no merged output is written; rerun with --resume_results and the same
# number of tasks to continue. Adapt the #SBATCH lines (partition, account, time) to your cluster.
#SBATCH --job-name=wnet-infer
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=8
#SBATCH --time=12:00:00
#SBATCH --output=slurm-%j.out
set -euo pipefail

if [ "$#" -lt 1 ]; then
    echo "usage: sbatch scripts/slurm_infer.sh inference_rvos.py|inference_a2d.py|inference_jhmdb.py [OPTIONS]" >&2
    exit 2
fi
SCRIPT="$1"
shift

MASTER_ADDR="$(scontrol show hostnames "${SLURM_JOB_NODELIST}" | head -n 1)"
export MASTER_ADDR
# A port derived from the job id, so that two jobs on one node do not collide.
export MASTER_PORT="${MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}"
export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"

srun --kill-on-bad-exit=1 python "${SCRIPT}" "$@"
