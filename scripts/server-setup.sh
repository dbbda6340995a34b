#!/usr/bin/env bash
# Set up a CUDA GPU server and start a training run, from a checkout of this repository.
#
#   bash scripts/server-setup.sh
#
# Edit the variables below (or set them in the environment) first. Each step is skipped when its result
# is already there, so the script can be run again after an interruption.
#
# The data (https://grail.cs.washington.edu/projects/background-matting-v2/#/datasets):
#   VideoMatte240K as distributed: $VIDEO_DIR/{train,test}/{fgr,pha}/<clip>.mp4
#   BackgroundMattingV2's background images, split by hand into $BACKGROUNDS_PATH/train/*.jpg and
#   $BACKGROUNDS_PATH/valid/*.jpg (data_path.py documents every layout).
set -euo pipefail

REPO_DIR="${REPO_DIR:-$(cd "$(dirname "$0")/.." && pwd)}"
VENV="${VENV:-$REPO_DIR/.venv}"                              # Python virtual environment to create
DATA_DIR="${DATA_DIR:-$HOME/data}"                           # where the datasets live
VIDEO_DIR="${VIDEO_DIR:-$DATA_DIR/VideoMatte240K}"           # VideoMatte240K videos, as downloaded
VIDEOMATTE240K_PATH="${VIDEOMATTE240K_PATH:-$DATA_DIR/VideoMatte240KFrames}"  # frames extracted from them
BACKGROUNDS_PATH="${BACKGROUNDS_PATH:-$DATA_DIR/Backgrounds}"
EXTRACT_WORKERS="${EXTRACT_WORKERS:-$(nproc)}"
MODEL_NAME="${MODEL_NAME:-videomatte240k-resnet50}"
TENSORBOARD_PORT="${TENSORBOARD_PORT:-6006}"
export VIDEOMATTE240K_PATH BACKGROUNDS_PATH                  # read by data_path.py

cd "$REPO_DIR"

# 1. The GPU and its driver must be visible before anything is installed.
nvidia-smi

# 2. A virtual environment with the requirements (pip picks the CUDA build of torch on Linux).
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
python -m pip install --upgrade pip
python -m pip install -r requirements.txt
python -c 'import torch; assert torch.cuda.is_available(), "torch cannot see the GPU"; print(torch.cuda.get_device_name())'

# 3. Frames from the videos (resumable: complete clips are skipped).
if [ ! -d "$VIDEO_DIR" ]; then
    echo "error: $VIDEO_DIR not found: download VideoMatte240K there, or set VIDEO_DIR" >&2
    exit 1
fi
python scripts/extract_frames.py "$VIDEO_DIR" "$VIDEOMATTE240K_PATH" --workers "$EXTRACT_WORKERS"
if [ ! -d "$BACKGROUNDS_PATH/train" ] || [ ! -d "$BACKGROUNDS_PATH/valid" ]; then
    echo "error: put the background images in $BACKGROUNDS_PATH/train and $BACKGROUNDS_PATH/valid" >&2
    exit 1
fi

# 4. TensorBoard in the background; reach it through an SSH tunnel:
#    ssh -L $TENSORBOARD_PORT:localhost:$TENSORBOARD_PORT <user>@<server>, then open http://localhost:$TENSORBOARD_PORT
mkdir -p log
tensorboard --logdir log --port "$TENSORBOARD_PORT" > log/tensorboard.txt 2>&1 &
echo "TensorBoard on port $TENSORBOARD_PORT (pid $!)"

# 5. Training, as in README.md; checkpoints go to checkpoint/$MODEL_NAME, logs to log/$MODEL_NAME.
python train.py \
    --dataset-name videomatte240k \
    --model-backbone resnet50 \
    --model-name "$MODEL_NAME" \
    --batch-size 4 \
    --seq-length 8 \
    --num-workers 8 \
    --epoch-start 0 \
    --epoch-end 10 \
    --log-train-loss-interval 10 \
    --log-train-images-interval 500 \
    --log-valid-interval 1000 \
    --checkpoint-interval 1000
