#!/bin/bash
# encode speed, the encoder before (3d833a8: two codings per P-frame) and now (8ea8c43: one, predicted field),
# alternated twice in one run on the same clip; `nvc bench --encode` JSON each.
cd /work/main
S=/work/shared/data/heldout/08_driving.mp4
for r in 1 2; do
  (cd /tmp/wt-old && PYTHONPATH=/tmp/wt-old python -m tools.bench $S --encode --frames 32 --model lean-mc-yuv420-v2 --json /work/main/runs/ev11/enc-old-$r.json > /dev/null 2>&1)
  (cd /tmp/wt-new && PYTHONPATH=/tmp/wt-new python -m tools.bench $S --encode --frames 32 --model lean-mc-yuv420-v2 --json /work/main/runs/ev11/enc-new-$r.json > /dev/null 2>&1)
done
python - <<'PY'
import json
for k in ("old", "new"):
    e = [json.load(open(f"runs/ev11/enc-{k}-{r}.json"))["encode"] for r in (1, 2)]
    print(k, [x["encode_fps"] for x in e], [x["bpp"] for x in e], [x["psnr_yuv"] for x in e], [x.get("quality") for x in e])
PY
