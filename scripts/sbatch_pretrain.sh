#!/usr/bin/env bash
# A Slurm batch job: data-parallel pretraining on 2 nodes x 8 GPUs, one rank per GPU.
#   sbatch scripts/sbatch_pretrain.sh configs/64px/simclr.toml [--set key=value ...]
# Edit the #SBATCH lines for your cluster (partition, account, time). run.batch_size in the
# config is the global batch: it must be a multiple of the 16 ranks.
#SBATCH --job-name=siam-pretrain
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-task=1
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --output=siam-%j.out
set -euo pipefail
config=${1:?usage: sbatch scripts/sbatch_pretrain.sh CONFIG [--set key=value ...]}
shift
# Each rank's share of the node's cores: siam picks it itself when run.threads = 0.
export OMP_PROC_BIND=close
# --mpi=pmix: Slurm starts the ranks and OpenMPI finds them through PMIx. A failed rank ends
# the step (--kill-on-bad-exit), and `siam pretrain ... --resume` continues from the last
# checkpoint in a new job.
srun --mpi=pmix --kill-on-bad-exit=1 build/siam pretrain "$config" "$@"
