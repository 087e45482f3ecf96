#!/bin/bash
# Decode speed of weights 70657200 vs 23bf4feb, alternately in one run: each weights file is swapped
# into place for its own stream (a stream names its weights' hash), then the shipped file restored.
set -e
cd "$(dirname "$0")/../.."
W=models/weights/lean-mc-yuv420-v2.pt
OLD=/tmp/w-7065.pt NEW=/tmp/w-23bf.pt
git show 0ab2f83~1:$W > $OLD && git show 0ab2f83:$W > $NEW
trap 'cp $NEW $W' EXIT
mkdir -p runs/rt
for w in 7065:$OLD 23bf:$NEW; do
  cp ${w#*:} $W
  [ -f runs/rt/bf96-${w%%:*}.nvc ] || nvc encode ../shared/data/heldout/13_butterfly.mp4 -o runs/rt/bf96-${w%%:*}.nvc --frames 96 --engine int8 -y
done
for i in 1 2; do
  cp $OLD $W; nvc bench runs/rt/bf96-7065.nvc --json runs/rt/ab-7065-$i.json 2>&1 | grep -E "^\| pipelined" | sed "s/^/70657200 /"
  cp $NEW $W; nvc bench runs/rt/bf96-23bf.nvc --json runs/rt/ab-23bf-$i.json 2>&1 | grep -E "^\| pipelined" | sed "s/^/23bf4feb /"
done
python -m tools.bench_rans 2>&1 | grep "native decode, M symbols/s"
